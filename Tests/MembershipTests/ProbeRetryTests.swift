import IPNetwork
@testable import Membership
import Testing

/// Counts what a drop rule has dropped (closures of `Pump` capture it by reference).
final class DropCount: @unchecked Sendable {
    var pings = 0
    var windowStart: Instant?
    var seen: Set<String> = []
}

/// Direct probe retries and stream probes: a lost round does not become a cluster-wide suspicion,
/// a crash is still detected on time, and the stream path gives a hostile member nothing.
@Suite("Membership: probe retries and stream probes")
struct ProbeRetryTests {
    func cluster(_ n: Int, config: MembershipConfig = testConfig()) -> (Pump, [Endpoint]) {
        Pump.cluster(n, config: config)
    }

    func suspicionsSent(_ pump: Pump, about name: String, since start: Int) -> Int {
        pump.sent[start...].filter { s in
            messages(in: s.payload).contains { if case .status(name, _, .suspect, _) = $0 { true } else { false } }
        }.count
    }

    @Test("the first ping and the indirect probe of a round lost: the direct retry saves it, no suspicion reaches gossip",
          arguments: [true, false])
    func lostRoundNoSuspicion(retries: Bool) {
        var config = testConfig()
        if !retries { config.probeRetries = 0; config.streamProbes = false }
        var (pump, eps) = cluster(3, config: config)
        let start = pump.sent.count
        let count = DropCount()
        // For 700 ms from the next ping of n2, every ping of n2 is lost the first time it is sent
        // (the prober's and the one relayed for it); a retry (same sender, same sequence) is not.
        pump.dropPayload = { _, to, payload, now in
            guard to == eps[2] else { return false }
            for case .ping(let seq, "n2", let source) in messages(in: payload) {
                if count.windowStart == nil { count.windowStart = now }
                guard now < count.windowStart! + .milliseconds(700), count.seen.insert("\(source) \(seq)").inserted else { return false }
                count.pings += 1
                return true
            }
            return false
        }
        pump.dropStreams = { _, _ in true }
        pump.run(for: .seconds(6))
        #expect(count.pings >= 2)
        let suspected = pump.events.filter { $0.event.kind == .suspect && $0.event.member.name == "n2" }.count
        if retries {
            #expect(suspected == 0)
            #expect(suspicionsSent(pump, about: "n2", since: start) == 0)
            #expect(pump.nodes[eps[2]]!.localIncarnation == 0, "n2 had to refute")
            #expect(eps.reduce(0) { $0 + pump.nodes[$1]!.counters.probeRetriesSent } >= 1)
        } else {
            // Without retries the same losses make n2 suspect, in gossip, and n2 refutes.
            #expect(suspected >= 1)
            #expect(pump.nodes[eps[2]]!.localIncarnation >= 1)
        }
        #expect(!pump.events.contains { $0.event.kind == .dead })
    }

    @Test("every datagram to a member lost for 3 s: its probers reach it over a stream and never suspect it")
    func streamProbeSavesTheRound() {
        var (pump, eps) = cluster(3)
        pump.drop = { _, to in to == eps[2] }
        pump.dropStreams = { _, _ in false }
        pump.run(for: .seconds(3))
        pump.drop = { _, _ in false }
        pump.run(for: .seconds(5))
        let acks = pump.nodes[eps[0]]!.counters.streamProbeAcks + pump.nodes[eps[1]]!.counters.streamProbeAcks
        #expect(acks >= 1, "no probe of n2 was acked over a stream")
        #expect(pump.nodes[eps[2]]!.counters.streamProbesAnswered >= acks)
        for ep in eps.prefix(2) {
            #expect(pump.events(at: ep, kind: .suspect, name: "n2").isEmpty, "\(ep) suspected n2")
        }
        #expect(!pump.events.contains { $0.event.kind == .dead })
    }

    @Test("retries and stream probes do not delay a crash: suspicion at the end of the failed probe's period, dead within bounds")
    func crashStillDetected() {
        func run(_ config: MembershipConfig) -> (suspectAt: [Instant], deadAt: [Instant], streams: Int) {
            var (pump, eps) = cluster(5, config: config)
            let crashedAt = pump.now
            _ = pump.crash(eps[4])
            pump.run(for: .seconds(30))
            var suspectAt: [Instant] = [], deadAt: [Instant] = []
            for ep in eps.dropLast() {
                let s = pump.events(at: ep, kind: .suspect, name: "n4").first?.time
                let d = pump.events(at: ep, kind: .dead, name: "n4").first?.time
                #expect(s != nil && d != nil, "\(ep) did not go suspect → dead")
                if let s { suspectAt.append(s); #expect(s > crashedAt) }
                if let d { deadAt.append(d) }
            }
            #expect(!pump.events.contains { $0.event.kind == .dead && $0.event.member.name != "n4" })
            return (suspectAt, deadAt, pump.streams.count)
        }
        var plain = testConfig()
        plain.probeRetries = 0
        plain.streamProbes = false
        let with = run(testConfig())
        let without = run(plain)
        #expect(with.streams > 0, "no stream probe of the crashed node")
        #expect(without.streams == 0)
        // Same probe schedule, same instants: the retries only add datagrams inside the period.
        #expect(with.suspectAt.min() == without.suspectAt.min())
        #expect(with.deadAt.max()! <= without.deadAt.max()! + .milliseconds(200))
    }

    @Test("a stream probe request is answered only for one ping addressed to this node, at a bounded rate")
    func streamRequestBounded() {
        let (pump, eps) = cluster(3)
        var node = pump.nodes[eps[1]]!
        let now = pump.now
        func answered(_ d: [Directive]) -> [UInt8]? {
            for x in d { if case .streamProbeReply(let p, _) = x { return p } }
            return nil
        }
        let ping = forgedPayload([.ping(seq: 7, target: "n1", source: "mallory")])
        #expect(answered(node.receiveStreamProbe(request: ping, from: testEndpoint(99), now: now)) == forgedPayload([.ack(seq: 7)]))
        // Someone else's ping, a ping with a claim beside it, claims alone, garbage, oversized: refused,
        // and the claims are not applied (the stream carries no gossip).
        let refusedBefore = node.counters.streamProbesRefused
        let generation = node.viewGeneration
        for bad in [forgedPayload([.ping(seq: 8, target: "n2", source: "mallory")]),
                    forgedPayload([.ping(seq: 9, target: "n1", source: "mallory"),
                                   .status(name: "n2", version: 1, status: .alive(incarnation: 50), from: "mallory")]),
                    forgedPayload([.status(name: "n2", version: 1, status: .suspect(incarnation: 0), from: "mallory")]),
                    [0xFF, 0x00],
                    [UInt8](repeating: 1, count: MembershipNode.streamProbeMaxBytes + 1)] {
            #expect(answered(node.receiveStreamProbe(request: bad, from: testEndpoint(99), now: now)) == nil)
        }
        #expect(node.counters.streamProbesRefused == refusedBefore + 5)
        #expect(node.viewGeneration == generation)
        // A flood within one probe interval: at most streamProbeAnswersPerInterval answers (one spent above).
        var answers = 1
        for i in 0..<50 {
            if answered(node.receiveStreamProbe(request: forgedPayload([.ping(seq: UInt32(100 + i), target: "n1", source: "m")]),
                                                from: testEndpoint(99), now: now + .milliseconds(i))) != nil { answers += 1 }
        }
        #expect(answers == node.config.streamProbeAnswersPerInterval)
        #expect(answered(node.receiveStreamProbe(request: ping, from: testEndpoint(99), now: now + node.config.probeInterval)) != nil)
    }

    @Test("forged stream replies cannot keep a crashed member alive: only an ack of the pending probe, from its address, counts")
    func forgedStreamRepliesDoNotKeepTheDeadAlive() {
        var (pump, eps) = cluster(4)
        _ = pump.crash(eps[3])
        // Every 10 ms a hostile member answers "stream replies" for sequence numbers around the
        // prober's, from its own address, and with wrong sequence numbers from the dead member's.
        for _ in 0..<2000 {
            pump.run(for: .milliseconds(10))
            for ep in eps.prefix(3) {
                pump.with(ep) { node, now in
                    var out: [Directive] = []
                    for delta: UInt32 in 0..<3 {
                        let seq = node.nextSeq &+ delta
                        out += node.receiveStreamProbe(reply: forgedPayload([.ack(seq: seq)]), from: testEndpoint(99), now: now)
                        out += node.receiveStreamProbe(reply: forgedPayload([.ack(seq: seq &+ 1000)]), from: eps[3], now: now)
                    }
                    return out
                }
            }
        }
        for ep in eps.prefix(3) {
            #expect(pump.events(at: ep, kind: .dead, name: "n3").count == 1, "\(ep) did not declare n3 dead")
            #expect(pump.nodes[ep]!.counters.streamProbeAcks == 0)
            #expect(pump.nodes[ep]!.counters.streamProbesRefused > 0)
        }
    }
}

/// The check of a suspicion with the suspect before its deadline.
@Suite("Membership: suspicion checks")
struct SuspicionCheckTests {
    @Test("an observer that missed every copy of a refutation asks the suspect before its deadline and hears it: no false death",
          arguments: [true, false])
    func missedRefutationRecovered(checks: Bool) {
        var config = testConfig()
        if !checks { config.suspicionCheckLead = .zero }
        config.antiEntropyInterval = .seconds(600)   // only the check can repair it here
        var (pump, eps) = Pump.cluster(4, config: config)
        pump.run(for: .seconds(10))
        // n3 hears no alive claim about n1 until it has checked with n1 itself (a check is its
        // suspicion alone, sent straight to n1; a buddy ping carries a ping beside it).
        let checked = DropCount()
        let t0 = pump.now
        pump.dropPayload = { from, to, payload, now in
            let ms = messages(in: payload)
            // (The suspicion's own gossip, in its first few hundred milliseconds, looks the same.)
            if from == eps[3], to == eps[1], now > t0 + .milliseconds(450), ms.count == 1, case .status("n1", _, .suspect, _) = ms[0] {
                checked.pings += 1
            }
            return to == eps[3] && checked.pings == 0
                && ms.contains { if case .status("n1", _, .alive, _) = $0 { true } else { false } }
        }
        let claim = forgedPayload([.status(name: "n1", version: 1, status: .suspect(incarnation: 0), from: "mallory")])
        for ep in eps where ep != eps[1] { pump.inject(claim, from: testEndpoint(99), to: ep) }
        pump.run(for: .seconds(20))
        #expect(pump.nodes[eps[1]]!.localIncarnation == 1)
        guard checks else {
            // Without checks the same losses get a healthy n1 declared dead at n3.
            #expect(pump.events(at: eps[3], kind: .dead, name: "n1").count == 1)
            return
        }
        #expect(pump.nodes[eps[3]]!.counters.suspicionChecksSent >= 1)
        #expect(pump.events(at: eps[3], kind: .dead, name: "n1").isEmpty, "n3 declared n1 dead")
        #expect(pump.status(of: "n1", at: eps[3]) == .alive(incarnation: 1))
        // The others heard the refutation by gossip and never had to check.
        #expect(pump.nodes[eps[0]]!.counters.suspicionChecksSent == 0)
    }

    @Test("a crashed member is still declared dead on time: checks go unanswered and do not move the deadline")
    func crashedStillDead() {
        var off = testConfig()
        off.suspicionCheckLead = .zero
        func deaths(_ config: MembershipConfig) -> [Instant] {
            var (pump, eps) = Pump.cluster(5, config: config)
            _ = pump.crash(eps[4])
            pump.run(for: .seconds(30))
            return eps.dropLast().compactMap { pump.events(at: $0, kind: .dead, name: "n4").first?.time }
        }
        let with = deaths(testConfig()), without = deaths(off)
        #expect(with.count == 4 && without.count == 4)
        #expect(with.max()! <= without.max()! + .milliseconds(100))
    }
}
