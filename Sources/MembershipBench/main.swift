// wiremesh-membership-bench: the membership protocol in the deterministic simulator, wiremesh's
// defaults side by side with hashicorp/memberlist's LAN defaults. Run through ./scripts/bench membership.
import Membership
import MembershipSimulator

#if canImport(Glibc)
import Glibc
#endif

/// Writes one line to standard output unbuffered (traces are read while they run).
func say(_ text: String) {
    var bytes = Array((text + "\n").utf8)
    _ = bytes.withUnsafeMutableBytes { write(1, $0.baseAddress, $0.count) }
}

/// Writes to standard error (unbuffered, no shared FILE state).
func eprint(_ text: String) {
    var bytes = Array(text.utf8)
    _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
}

let allScenarios: Set<String> = ["quiet", "loss", "partition"]

struct Options {
    var nodes: [Int] = [100, 1000]
    var seeds = 2
    var json = false
    var lossDuration: Double = 120
    var updates = 3
    var crashes = 2
    var partitionSeconds: Double = 120
    var steady: Double = 0
    var only: String?
    var healTrace = false
    var firstSeed = 1
    var pushPull = true  // the agent's default (AgentConfig.pushPull)
    var pushPullBuckets = 0
    var pushPullFollowUp: Double = 0
    var pushPullFollowUpChanges = 0
    /// Which of the scenarios of a run to simulate (quiet, loss, partition).
    var scenarios: Set<String> = allScenarios
    var probeRetries: Int?
    var streamProbes = true
    var suspicionChecks = true
    var breakdown = false
}

func usage() -> Never {
    let text = """
    usage: wiremesh-membership-bench [--json] [--nodes N[,N...]] [--seeds S] [--loss-duration SECONDS]
                                     [--updates K] [--crashes K] [--partition SECONDS]
      --nodes           cluster sizes to simulate (default 100,1000)
      --seeds           independent runs per size and configuration (default 2)
      --loss-duration   simulated seconds of the 10%-loss run that counts healthy nodes declared dead (default 120)
      --updates         record updates measured per run (default 3)
      --crashes         crashes measured per run (default 2)
      --partition       seconds of the 50/50 partition before the heal (default 120)
      --only NAME       run only one configuration (wiremesh or memberlist); its table column and
                        JSON object are then reported for both
      --first-seed S    number the seeds from S (to add seeds to an earlier run)
      --push-pull       wiremesh with push/pull over a stream (MembershipConfig.wiremeshPushPull), the
                    agent's default and so the bench's since 2026-12-03 (before: off unless given)
      --no-push-pull    wiremesh without it (MembershipConfig.wiremeshDefaults)
      --push-pull-buckets K      … started at K differing digest buckets (implies --push-pull)
      --push-pull-follow-up S    … next anti-entropy round within S seconds after an exchange that taught enough
      --push-pull-follow-up-changes K   … enough: K members changed or asked for
      --probe-retries K direct probe retries (default: MembershipConfig's, 3; 0 as before issue 16's loss work)
      --no-stream-probes  no stream probe with the last retry
      --no-suspicion-checks  no direct check with the suspect before a suspicion's deadline
                        (with --probe-retries 0 --no-stream-probes: the protocol before issue 16's loss work)
      --loss-only       only run the 10%-loss scenario (as --scenarios loss)
      --scenarios LIST  run only these of quiet,loss,partition (default all three; a large N may not
                        afford the partition); metrics of scenarios left out read 0
      --breakdown       print where the bytes of the 10%-loss run go (by message kind) and how many
                        probes fail (suspicions started) per second
      --heal-trace      only run the partition scenario and print what is unconverged after the heal
      --steady SECONDS  only simulate a quiet cluster for SECONDS and print simulator throughput

    """
    eprint(text)
    exit(2)
}

func parseOptions() -> Options {
    var o = Options()
    var args = CommandLine.arguments.dropFirst().makeIterator()
    func value(_ flag: String) -> String {
        guard let v = args.next() else {
            eprint("wiremesh-membership-bench: \(flag) needs a value\n")
            usage()
        }
        return v
    }
    func number(_ flag: String) -> Double {
        let v = value(flag)
        guard let d = Double(v), d > 0 else {
            eprint("wiremesh-membership-bench: \(flag) expects a positive number, got '\(v)'\n")
            usage()
        }
        return d
    }
    while let a = args.next() {
        switch a {
        case "--json": o.json = true
        case "--nodes":
            let v = value(a)
            let parts = v.split(separator: ",").map { Int($0) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 4 }) else {
                eprint("wiremesh-membership-bench: --nodes expects sizes of at least 4 like 100,1000, got '\(v)'\n")
                usage()
            }
            o.nodes = parts.map { $0! }
        case "--seeds": o.seeds = Int(number(a))
        case "--loss-duration": o.lossDuration = number(a)
        case "--updates": o.updates = Int(number(a))
        case "--crashes": o.crashes = Int(number(a))
        case "--partition": o.partitionSeconds = number(a)
        case "--steady": o.steady = number(a)
        case "--heal-trace": o.healTrace = true
        case "--loss-only": o.scenarios = ["loss"]
        case "--scenarios":
            let v = value(a)
            let names = Set(v.split(separator: ",").map(String.init))
            guard !names.isEmpty, names.isSubset(of: allScenarios) else {
                eprint("wiremesh-membership-bench: --scenarios expects some of quiet,loss,partition, got '\(v)'\n")
                usage()
            }
            o.scenarios = names
        case "--probe-retries":
            let v = value(a)
            guard let k = Int(v), k >= 0, k <= 8 else {
                eprint("wiremesh-membership-bench: --probe-retries expects 0 to 8, got '\(v)'\n")
                usage()
            }
            o.probeRetries = k
        case "--no-stream-probes": o.streamProbes = false
        case "--no-suspicion-checks": o.suspicionChecks = false
        case "--breakdown": o.breakdown = true
        case "--push-pull": o.pushPull = true
        case "--no-push-pull": o.pushPull = false
        case "--push-pull-buckets": o.pushPull = true; o.pushPullBuckets = Int(number(a))
        case "--push-pull-follow-up": o.pushPull = true; o.pushPullFollowUp = number(a)
        case "--push-pull-follow-up-changes": o.pushPull = true; o.pushPullFollowUpChanges = Int(number(a))
        case "--first-seed": o.firstSeed = Int(number(a))
        case "--only":
            let v = value(a)
            guard v == "wiremesh" || v == "memberlist" else {
                eprint("wiremesh-membership-bench: --only expects wiremesh or memberlist, got '\(v)'\n")
                usage()
            }
            o.only = v
        case "-h", "--help": usage()
        default:
            eprint("wiremesh-membership-bench: unknown option '\(a)'\n")
            usage()
        }
    }
    return o
}

/// Samples of one configuration at one cluster size, over all seeds.
struct Samples {
    var dissemination: [Double] = []
    var disseminationLoss10: [Double] = []
    var deadDetection: [Double] = []
    var falseDeadLoss10: [Int] = []
    var heal: [Double] = []
    var bytesOut: [Double] = []      // per node per second, steady state, 0% loss
    var bytesIn: [Double] = []
    var bytesOutLoss10: [Double] = []
    var timeouts = 0
    var cpuSeconds: Double = 0
    var lossDuration: Double = 0
}

/// The process's peak resident set so far (the largest simulation run yet), in MB.
func peakRSSMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
}

func cpuTime() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

/// The wiremesh configuration the options ask for.
func ours(_ o: Options) -> MembershipConfig {
    var c = o.pushPull ? MembershipConfig.wiremeshPushPull : .wiremeshDefaults
    if let k = o.probeRetries { c.probeRetries = k }
    if !o.streamProbes { c.streamProbes = false }
    if !o.suspicionChecks { c.suspicionCheckLead = .zero }
    guard o.pushPull else { return c }
    if o.pushPullBuckets > 0 { c.pushPullDifferingBuckets = o.pushPullBuckets }
    if o.pushPullFollowUp > 0 { c.pushPullFollowUp = .nanoseconds(Int64(o.pushPullFollowUp * 1e9)) }
    if o.pushPullFollowUpChanges > 0 { c.pushPullFollowUpChanges = o.pushPullFollowUpChanges }
    return c
}

/// `config` for a cluster of `nodes`: a view holds at most `maxMembers` (4096 by default, a bound
/// against made-up names), so a larger cluster is configured to hold everyone, or its views never
/// agree and anti-entropy never rests.
func sized(_ config: MembershipConfig, nodes: Int) -> MembershipConfig {
    var c = config
    c.maxMembers = max(c.maxMembers, nodes)
    return c
}

let disseminationTimeout: Duration = .seconds(60)
let deathTimeout: Duration = .seconds(120)
let healTimeout: Duration = .seconds(600)

func randomLive(_ sim: Simulation, _ rng: inout SimRandom) -> Int {
    let live = sim.liveNodes
    return live[Int(rng.next() % UInt64(live.count))]
}

/// Measures `count` record updates one after the other; each waits until every live node has it.
func measureUpdates(_ sim: Simulation, count: Int, rng: inout SimRandom, into out: inout [Double], timeouts: inout Int) throws {
    for k in 0..<count {
        let node = randomLive(sim, &rng)
        let version = try sim.updateRecord(node) { $0.labels["bench"] = "u\(k)" }
        let watch = sim.watchRecord(node, version: version)
        if sim.run(for: disseminationTimeout, checkEvery: .milliseconds(50), until: { $0.disseminationTime(watch) != nil }) != nil,
           let t = sim.disseminationTime(watch) {
            out.append(Double(t.components.seconds) + Double(t.components.attoseconds) / 1e18)
        } else {
            timeouts += 1
            out.append(disseminationTimeout.seconds)
        }
        sim.run(for: .seconds(3))
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

func perNodeRates(_ before: [NodeTraffic], _ after: [NodeTraffic], seconds: Double, live: [Int]) -> (out: [Double], in: [Double]) {
    var o: [Double] = [], i: [Double] = []
    for n in live {
        o.append(Double(after[n].bytesSent - before[n].bytesSent) / seconds)
        i.append(Double(after[n].bytesReceived - before[n].bytesReceived) / seconds)
    }
    return (o, i)
}

nonisolated(unsafe) var lastProgress = cpuTime()
nonisolated(unsafe) var verbose = false
func progress(_ what: String) {
    let t = cpuTime()
    if verbose { eprint("    \(what): \(format(t - lastProgress, 1)) s CPU\n") }
    lastProgress = t
}

func runScenarios(nodes: Int, config: MembershipConfig, seed: UInt64, options: Options, into s: inout Samples) throws {
    let config = sized(config, nodes: nodes)
    var rng = SimRandom(seed: seed &* 0x9E37_79B9 &+ UInt64(nodes))

    // 1. Quiet LAN: steady-state bandwidth, dissemination, crash detection.
    if options.scenarios.contains("quiet") {
        let sim = try Simulation(SimulationOptions(nodes: nodes, membership: config, network: .lan, seed: seed))
        sim.run(for: .seconds(10))
        let before = sim.traffic
        sim.run(for: .seconds(30))
        let rates = perNodeRates(before, sim.traffic, seconds: 30, live: sim.liveNodes)
        s.bytesOut += rates.out
        s.bytesIn += rates.in
        try measureUpdates(sim, count: options.updates, rng: &rng, into: &s.dissemination, timeouts: &s.timeouts)
        for _ in 0..<options.crashes {
            let victim = randomLive(sim, &rng)
            sim.crash(victim)
            let watch = sim.watchDeath(victim)
            if sim.run(for: deathTimeout, checkEvery: .milliseconds(50), until: { $0.deathDetectionTime(watch) != nil }) != nil,
               let t = sim.deathDetectionTime(watch) {
                s.deadDetection.append(t.seconds)
            } else {
                s.timeouts += 1
                s.deadDetection.append(deathTimeout.seconds)
            }
            sim.run(for: .seconds(5))
        }
    }

    if options.scenarios.contains("quiet") { progress("quiet LAN: dissemination \(s.dissemination.map { format($0) }) s, dead \(s.deadDetection.map { format($0) }) s, "
             + "out \(format(mean(s.bytesOut))) B/s") }
    // 2. 10% independent loss for `lossDuration`: dissemination under loss, healthy nodes declared dead.
    if options.scenarios.contains("loss") {
        let network = NetworkModel(loss: 0.10)
        let sim = try Simulation(SimulationOptions(nodes: nodes, membership: config, network: network, seed: seed &+ 1))
        sim.run(for: .seconds(5))
        let start = sim.now
        let before = sim.traffic
        let countersBefore = (0..<nodes).map { sim.node($0)?.counters ?? MembershipCounters() }
        sim.countByKind = options.breakdown
        sim.recordEvents = options.breakdown && nodes <= 200
        try measureUpdates(sim, count: options.updates, rng: &rng, into: &s.disseminationLoss10, timeouts: &s.timeouts)
        let end = start + .nanoseconds(Int64(options.lossDuration * 1e9))
        if sim.now < end { sim.run(until: end) }
        let elapsed = (sim.now - start).seconds
        if options.breakdown { printBreakdown(sim, countersBefore: countersBefore, seconds: elapsed) }
        for victim in sim.healthyDeclaredDead.sorted() where sim.recordEvents {
            // Why a healthy node was declared dead: every event about it, and its own incarnation.
            say("  healthy \(sim.names[victim]) declared dead; incarnation now \(sim.node(victim)?.localIncarnation ?? 0); its events:")
            var shown = 0
            for e in sim.eventLog where e.event.member.name == sim.names[victim] && e.event.kind != .joined {
                if shown < 400 { say("    \(e.at) at \(sim.names[e.observer]): \(e.event.kind) \(e.event.member.status)") }
                shown += 1
            }
        }
        s.bytesOutLoss10 += perNodeRates(before, sim.traffic, seconds: elapsed, live: sim.liveNodes).out
        s.falseDeadLoss10.append(sim.healthyDeclaredDead.count)
        s.lossDuration = elapsed
    }

    if options.scenarios.contains("loss") { progress("10% loss: dissemination \(s.disseminationLoss10.map { format($0) }) s, false dead \(s.falseDeadLoss10)") }
    // 3. 50/50 partition, then heal: time until every node sees every node alive at its current version.
    if options.scenarios.contains("partition") {
        let sim = try Simulation(SimulationOptions(nodes: nodes, membership: config, network: .lan, seed: seed &+ 2))
        sim.run(for: .seconds(5))
        var side = [Int](repeating: 0, count: nodes)
        var order = Array(0..<nodes)
        order.shuffle(using: &rng)
        for i in order.prefix(nodes / 2) { side[i] = 1 }
        sim.partition { side[$0] }
        sim.run(for: .nanoseconds(Int64(options.partitionSeconds * 1e9)))
        sim.heal()
        let healedAt = sim.now
        if let t = sim.run(for: healTimeout, checkEvery: .milliseconds(100), until: { $0.isConverged() }) {
            s.heal.append((t - healedAt).seconds)
        } else {
            s.timeouts += 1
            s.heal.append(healTimeout.seconds)
        }
    }
    if options.scenarios.contains("partition") { progress("partition: heal \(s.heal.map { format($0) }) s") }
}

/// Where the bytes of a run went, per node per second, and what its probes did.
func printBreakdown(_ sim: Simulation, countersBefore: [MembershipCounters], seconds: Double) {
    let n = Double(sim.names.count)
    let b = sim.breakdown
    let total = b.bytes.reduce(0, +)
    say("  bytes sent by kind, per node per second (\(format(seconds, 0)) s):")
    for k in TrafficBreakdown.Kind.allCases where b[k] > 0 {
        say("    \(k.label): \(format(Double(b[k]) / n / seconds, 1)) B/s (\(format(100 * Double(b[k]) / Double(max(1, total)), 1)) %)")
    }
    say("    total: \(format(Double(total) / n / seconds, 1)) B/s; datagrams per node per s: probe \(format(Double(b.datagrams[0]) / n / seconds)), "
        + "gossip \(format(Double(b.datagrams[1]) / n / seconds)), anti-entropy \(format(Double(b.datagrams[2]) / n / seconds))")
    var delta = MembershipCounters()
    for i in 0..<sim.names.count {
        guard let c = sim.node(i)?.counters else { continue }
        let c0 = countersBefore[i]
        delta.probesFailed += c.probesFailed - c0.probesFailed
        delta.suspicionsRefuted += c.suspicionsRefuted - c0.suspicionsRefuted
        delta.suspicionsConfirmed += c.suspicionsConfirmed - c0.suspicionsConfirmed
        delta.probeRetriesSent += c.probeRetriesSent - c0.probeRetriesSent
        delta.streamProbesSent += c.streamProbesSent - c0.streamProbesSent
        delta.streamProbeAcks += c.streamProbeAcks - c0.streamProbeAcks
        delta.streamProbesAnswered += c.streamProbesAnswered - c0.streamProbesAnswered
        delta.streamProbesRefused += c.streamProbesRefused - c0.streamProbesRefused
    }
    say("  cluster-wide per second: probes failed (suspicions started) \(format(Double(delta.probesFailed) / seconds)), "
        + "suspicions refuted (per observer) \(format(Double(delta.suspicionsRefuted) / seconds)), confirmed dead \(format(Double(delta.suspicionsConfirmed) / seconds)); "
        + "probe retries \(format(Double(delta.probeRetriesSent) / seconds)), stream probes \(format(Double(delta.streamProbesSent) / seconds)) "
        + "(answered \(format(Double(delta.streamProbesAnswered) / seconds)), "
        + "acked only by the stream \(format(Double(delta.streamProbeAcks) / seconds)), refused \(format(Double(delta.streamProbesRefused) / seconds)))")
}

struct Result {
    var nodes: Int
    var seeds: Int
    var samples: Samples

    var fields: [(String, Double)] {
        let s = samples
        return [
            ("dissemination_p50_s", percentile(s.dissemination, 50)),
            ("dissemination_p99_s", percentile(s.dissemination, 99)),
            ("dissemination_p50_s_loss10", percentile(s.disseminationLoss10, 50)),
            ("dissemination_p99_s_loss10", percentile(s.disseminationLoss10, 99)),
            ("dead_detection_p50_s", percentile(s.deadDetection, 50)),
            ("dead_detection_p99_s", percentile(s.deadDetection, 99)),
            ("false_dead_loss10", Double(s.falseDeadLoss10.reduce(0, +))),
            ("heal_s", s.heal.max() ?? 0),
            ("heal_p50_s", percentile(s.heal, 50)),
            ("bytes_per_node_s_mean", mean(s.bytesOut)),
            ("bytes_per_node_s_p99", percentile(s.bytesOut, 99)),
            ("bytes_per_node_s_max", s.bytesOut.max() ?? 0),
            ("bytes_in_per_node_s_mean", mean(s.bytesIn)),
            ("bytes_in_per_node_s_p99", percentile(s.bytesIn, 99)),
            ("bytes_in_per_node_s_max", s.bytesIn.max() ?? 0),
            ("bytes_per_node_s_mean_loss10", mean(s.bytesOutLoss10)),
            ("loss10_simulated_s", s.lossDuration),
            ("timeouts", Double(s.timeouts)),
            ("cpu_s", s.cpuSeconds),
            ("peak_rss_mb", peakRSSMegabytes()),
        ]
    }
}

func mean(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }

func format(_ v: Double, _ digits: Int = 2) -> String {
    let scale = Double([1, 10, 100, 1000, 10000][min(digits, 4)])
    let r = (v * scale).rounded() / scale
    var text = "\(r)"
    if text.hasSuffix(".0"), digits == 0 { text.removeLast(2) }
    return text
}

func jsonObject(_ r: Result) -> String {
    let items = [("nodes", Double(r.nodes)), ("seeds", Double(r.seeds))] + r.fields
    let integral: Set<String> = ["nodes", "seeds", "false_dead_loss10", "timeouts"]
    return "{" + items.map { integral.contains($0.0) ? "\"\($0.0)\": \(Int($0.1))" : "\"\($0.0)\": \(format($0.1, 4))" }
        .joined(separator: ", ")
}

let options = parseOptions()
verbose = !options.json
if options.healTrace {
    for nodes in options.nodes {
        var configs = [("wiremesh", ours(options)),
                       ("memberlist", MembershipConfig.memberlistLAN)]
        if let only = options.only { configs = configs.filter { $0.0 == only } }
        for (label, config) in configs {
            let sim = try Simulation(SimulationOptions(nodes: nodes, membership: sized(config, nodes: nodes), seed: 3))
            sim.run(for: .seconds(5))
            sim.partition { $0 % 2 }
            sim.run(for: .nanoseconds(Int64(options.partitionSeconds * 1e9)))
            sim.heal()
            let healedAt = sim.now
            say("N=\(nodes) \(label): healed at \(healedAt)")
            let before = sim.traffic
            let incarnationAtHeal = (0..<nodes).map { sim.node($0)?.localIncarnation ?? 0 }
            while !sim.isConverged(), (sim.now - healedAt) < .seconds(120) {
                sim.run(for: .milliseconds(500))
                var ranks = [UInt8: Int]()
                var observersWithWork = Set<Int>(), subjectsWithWork = Set<Int>()
                // Why each pair is open: the subject has not refuted yet (nobody told it), or it has
                // and the observer has not heard the refutation; and which side the observer is on.
                var notRefuted = 0, refutationInFlight = 0, crossSide = 0
                for p in sim.unconvergedPairs(limit: Int.max) {
                    ranks[p.rank, default: 0] += 1
                    observersWithWork.insert(p.observer)
                    subjectsWithWork.insert(p.subject)
                    if p.observer % 2 != p.subject % 2 { crossSide += 1 }
                    let held = sim.view(of: p.subject, at: p.observer)?.status.incarnation ?? 0
                    if (sim.node(p.subject)?.localIncarnation ?? 0) > held { refutationInFlight += 1 } else { notRefuted += 1 }
                }
                let refuted = (0..<nodes).filter { (sim.node($0)?.localIncarnation ?? 0) > incarnationAtHeal[$0] }.count
                let sent = (0..<nodes).reduce(0) { $0 + sim.traffic[$1].bytesSent - before[$1].bytesSent }
                let streams = (0..<nodes).reduce(0) { $0 + sim.traffic[$1].streamsOpened - before[$1].streamsOpened }
                say("  +\(format((sim.now - healedAt).seconds, 1)) s: unconverged pairs by rank \(ranks.sorted { $0.key < $1.key }), "
                      + "observers \(observersWithWork.count), subjects \(subjectsWithWork.count); cross-side \(crossSide), "
                      + "subject not refuted \(notRefuted), refutation not heard \(refutationInFlight); nodes refuted \(refuted); "
                      + "sent \(format(Double(sent) / Double(nodes) / (sim.now - healedAt).seconds, 0)) B/node/s, push/pulls \(streams)")
            }
        }
    }
    exit(0)
}
if options.steady > 0 {
    for nodes in options.nodes {
        var configs = [("wiremesh", ours(options)), ("memberlist", MembershipConfig.memberlistLAN)]
        if let only = options.only { configs = configs.filter { $0.0 == only } }
        for (label, config) in configs {
            let c0 = cpuTime()
            let sim = try Simulation(SimulationOptions(nodes: nodes, membership: sized(config, nodes: nodes), seed: 1))
            let c1 = cpuTime()
            sim.run(for: .nanoseconds(Int64(options.steady * 1e9)))
            let c2 = cpuTime()
            let datagrams = sim.traffic.reduce(0) { $0 + $1.datagramsSent }
            let bytes = sim.traffic.reduce(0) { $0 + $1.bytesSent }
            print("N=\(nodes) \(label): setup \(format(c1 - c0)) s CPU, \(format(options.steady, 0)) simulated s in \(format(c2 - c1)) s CPU, "
                + "\(sim.eventsProcessed) events, \(datagrams) datagrams (\(format(Double(datagrams) / Double(nodes) / options.steady)) per node per s, "
                + "\(format(Double(bytes) / Double(nodes) / options.steady)) B/s per node)")
        }
    }
    exit(0)
}
var results: [(ours: Result, baseline: Result)] = []
for nodes in options.nodes {
    var pair: [Result] = []
    var configs = [("wiremesh", ours(options)),
                       ("memberlist", MembershipConfig.memberlistLAN)]
    if let only = options.only { configs = configs.filter { $0.0 == only } }
    for (label, config) in configs {
        var samples = Samples()
        let cpuStart = cpuTime()
        for seed in options.firstSeed..<(options.firstSeed + options.seeds) {
            if !options.json { eprint("  N=\(nodes) \(label) seed \(seed) (\(seed - options.firstSeed + 1) of \(options.seeds))…\n") }
            do {
                try runScenarios(nodes: nodes, config: config, seed: UInt64(seed), options: options, into: &samples)
            } catch {
                eprint("wiremesh-membership-bench: simulation of N=\(nodes) (\(label)) failed: \(error)\n")
                exit(1)
            }
        }
        samples.cpuSeconds = cpuTime() - cpuStart
        pair.append(Result(nodes: nodes, seeds: options.seeds, samples: samples))
    }
    results.append((pair[0], pair.count > 1 ? pair[1] : pair[0]))
}

if options.json {
    let objects = results.map { r in
        jsonObject(r.ours) + ", \"baseline\": " + jsonObject(r.baseline) + "}}"
    }
    print("{\"benchmark\": \"membership\", \"results\": [" + objects.joined(separator: ", ") + "]}")
} else {
    func row(_ name: String, _ a: String, _ b: String, _ goal: String) -> String {
        func pad(_ s: String, _ w: Int) -> String { s + String(repeating: " ", count: max(0, w - s.count)) }
        return pad(name, 40) + pad(a, 14) + pad(b, 14) + goal
    }
    for r in results {
        let a = Dictionary(uniqueKeysWithValues: r.ours.fields), b = Dictionary(uniqueKeysWithValues: r.baseline.fields)
        let goals = r.ours.nodes == 1000
        print("N = \(r.ours.nodes), \(r.ours.seeds) seeds (\(options.updates) updates, \(options.crashes) crashes, 1 partition per seed)")
        let single = options.only != nil
        print(row("metric", options.only ?? "wiremesh", single ? "" : "memberlist", goals ? "goal (N=1000)" : ""))
        func line(_ title: String, _ key: String, _ unit: String, _ goal: String, digits: Int = 2) {
            print(row(title, format(a[key]!, digits) + unit, single ? "" : format(b[key]!, digits) + unit, goals ? goal : ""))
        }
        line("update → 100% of live nodes p50", "dissemination_p50_s", " s", "")
        line("update → 100% of live nodes p99", "dissemination_p99_s", " s", "≤ 2.0 s")
        line("same at 10% loss p50", "dissemination_p50_s_loss10", " s", "")
        line("same at 10% loss p99", "dissemination_p99_s_loss10", " s", "≤ 3.0 s")
        line("crash → all mark dead p50", "dead_detection_p50_s", " s", "")
        line("crash → all mark dead p99", "dead_detection_p99_s", " s", "≤ 8 s")
        line("healthy declared dead, 10% loss", "false_dead_loss10", "", "0", digits: 0)
        line("  (simulated seconds per seed)", "loss10_simulated_s", " s", "", digits: 0)
        line("50/50 partition 2 min → converged p50", "heal_p50_s", " s", "")
        line("  max over seeds", "heal_s", " s", "≤ 5 s")
        line("bytes/node/s sent, mean", "bytes_per_node_s_mean", " B/s", "≤ 300 B/s")
        line("bytes/node/s sent, p99", "bytes_per_node_s_p99", " B/s", "")
        line("bytes/node/s sent, max", "bytes_per_node_s_max", " B/s", "")
        line("bytes/node/s received, mean", "bytes_in_per_node_s_mean", " B/s", "≤ 300 B/s")
        line("bytes/node/s received, p99", "bytes_in_per_node_s_p99", " B/s", "")
        line("bytes/node/s received, max", "bytes_in_per_node_s_max", " B/s", "")
        line("bytes/node/s sent at 10% loss, mean", "bytes_per_node_s_mean_loss10", " B/s", "")
        line("runs that hit a timeout", "timeouts", "", "0", digits: 0)
        line("CPU time", "cpu_s", " s", "", digits: 1)
        line("peak RSS of the process so far", "peak_rss_mb", " MB", "", digits: 0)
        print("")
    }
    print("Bytes include the 28-byte UDP/IPv4 header and the 41-byte seal (version, nonce, tag) of every datagram.")
}
