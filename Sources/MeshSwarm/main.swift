import Foundation
// wiremesh-swarm: many simulated cluster members in one process, each a real membership node with its
// own identity, signed record, pod CIDR and UDP gossip socket. Benchmark-only: it measures an agent
// among N peers (`./scripts/bench join` runs it for rss/cpu_percent_idle_1000_peers). It reads the
// cluster key from the agent's state directory, so it runs as root on the agent's machine.
import ArgumentParser
import IPNetwork
import LinePort
import Logging
import Membership
import NIOCore
import NIOPosix
import NIOConcurrencyHelpers
import WireMeshAgent
import WireMeshCrypto
import WireMeshJoin

#if canImport(Glibc)
import Glibc
#endif

@main
struct Swarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wiremesh-swarm",
        abstract: "Run N simulated wiremesh members that join a real agent's cluster (benchmarks only).")

    @Option(help: "State directory of a member of the cluster (the cluster key and settings are read from it).")
    var stateDir: String

    @Option(help: "How many members to simulate.")
    var count = 1000

    @Option(help: "Address the members bind and advertise (gossip and a WireGuard endpoint nobody answers on).")
    var address: String

    @Option(help: "First gossip port; member i uses base-port + i.")
    var basePort: UInt16 = 20_000

    @Option(help: "Gossip address (IP:PORT) of the member to join through.")
    var seed: String

    @Option(help: "Slow the simulated members' own protocol periods (probe, gossip, anti-entropy) by this factor, so one process can host many; the agent keeps its defaults.")
    var slow = 5

    @Option(help: "Event-loop threads the members share.")
    var threads = 2

    @Option(help: "Members started per second; each joins through the seed and a few members started before it, as nodes joining over time would.")
    var joinRate = 50

    @Option(help: "on: the members swap whole views with push/pull over their TCP line port when views are far apart (MembershipConfig.wiremeshPushPull), as agents with --push-pull on do; answer: they answer swaps but start none (a thousand members starting swaps among themselves overload one process); off: datagram anti-entropy only.")
    var pushPull = "off"

    @Option(help: "Answer rotation messages on each member's TCP line port after this many milliseconds, as a peer that applies the switch would (0: no line port; connections are refused).")
    var answerRotationsMs = 0

    mutating func run() async throws {
        let state = try StateStore(directory: stateDir).load()
        guard let authority = state.authority else {
            throw ValidationError("--state-dir must be an authority node's (it holds authority.key): the swarm certifies its members with it")
        }
        let ipam = try IPAM(clusterRange: state.settings.podRange, nodePrefixLength: state.settings.nodePrefixLength)
        guard UInt64(count) < ipam.blockCount else {
            throw ValidationError("the cluster range \(state.settings.podRange) has \(ipam.blockCount) node blocks; --count must be smaller")
        }
        guard Int(basePort) + count <= 65_536 else { throw ValidationError("--base-port + --count exceeds port 65535") }
        let bindAddress: IPAddress
        let seedEndpoint: Endpoint
        do {
            bindAddress = try IPAddress(address)
            seedEndpoint = try Endpoint(seed)
        } catch {
            throw ValidationError("--address must be an IP and --seed IP:PORT (\(error))")
        }
        var logger = Logger(label: "wiremesh.swarm")
        logger.logLevel = .warning
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        guard slow >= 1 else { throw ValidationError("--slow must be at least 1") }
        guard joinRate >= 1 else { throw ValidationError("--join-rate must be at least 1") }
        guard ["on", "answer", "off"].contains(pushPull) else { throw ValidationError("--push-pull must be on, answer or off") }
        var config = pushPull == "off" ? MembershipConfig.wiremeshDefaults : MembershipConfig.wiremeshPushPull
        if pushPull == "answer" { config.pushPullStarts = false }
        config.probeInterval *= slow
        config.probeTimeout *= slow
        config.gossipInterval *= slow
        config.antiEntropyInterval *= slow
        config.pushPullInterval *= slow
        config.pushPullFollowUp *= slow

        // Blocks from the top of the range, away from what the agent's IPAM hands out from the bottom.
        // One process stands for a thousand machines: a record verified by one member is not verified
        // again by the others (SharedVerifications), or the swarm's CPU, not the agents, bounds a storm.
        let verifications = SharedVerifications()
        var transports: [GossipTransport] = []
        var linePorts: [LineServer] = []
        for i in 0..<count {
            let block = ipam.block(at: ipam.blockCount - 1 - UInt64(i))
            let identity = SigningIdentity.generate()
            let gossip = Endpoint(address: bindAddress, port: basePort + UInt16(i))
            var record = NodeRecord(
                name: "swarm-\(i)", identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                wireguardEndpoints: [Endpoint(address: bindAddress, port: 9)], gossipAddress: gossip,
                podCIDRs: [block], overlayAddress: ipam.overlayAddress(of: block))
            // Members take only certified records: the swarm certifies its own with the authority seed.
            record.certificate = .issue(clusterID: state.clusterID, name: record.name, identity: identity.publicKey,
                                        podCIDRs: record.podCIDRs, overlayAddress: record.overlayAddress,
                                        issuedAt: UInt64(Date().timeIntervalSince1970 * 1000), authority: authority)
            let earlier = (0..<min(i, 3)).map { _ in Endpoint(address: bindAddress, port: basePort + UInt16(Int.random(in: 0..<i))) }
            var settings = GossipSettings(config: config, identity: identity, record: record, keyring: state.keyring,
                                          clusterID: Array(state.clusterID.utf8), bind: gossip, seeds: [seedEndpoint] + earlier)
            settings.sharedVerifications = verifications
            // A member's UDP socket and line port on one loop: taking `group.next()` for each put every
            // socket on one loop and every line port on the other (all gossip on one core).
            let loop = group.next()
            let transport = try await GossipTransport.bind(settings, group: loop, logger: logger)
            transports.append(transport)
            if answerRotationsMs > 0 || pushPull != "off" {
                let delay = answerRotationsMs, name = record.name
                linePorts.append(try await LineServer.bind(gossip, group: loop) { request in
                    switch request {
                    case .pushPull(let envelope): return await transport.answerPushPull(envelope)
                    case .rotation where delay > 0:
                        try? await Task.sleep(for: .milliseconds(delay))
                        return .rotated(node: name)
                    default: return .refused(.malformed("this simulated member answers rotations and push/pulls only"))
                    }
                })
            }
        }
        print("swarm: \(count) members bound on \(bindAddress):\(basePort)-\(Int(basePort) + count - 1)")
        fflush(nil)

        let rate = joinRate
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for (i, t) in transports.enumerated() {
                tasks.addTask {
                    try await Task.sleep(for: .milliseconds(i * 1000 / rate))
                    try await t.run()
                }
                tasks.addTask { for await _ in t.events {} }
            }
            for server in linePorts { tasks.addTask { try await server.run() } }
            // How late each event loop runs a task due every 100 ms: a loop late by more than the
            // agents' probe timeout (500 ms) gets members suspected for the swarm's sake, not theirs.
            let lag = LoopLag()
            for loop in group.makeIterator() {
                loop.scheduleRepeatedTask(initialDelay: .milliseconds(100), delay: .milliseconds(100)) { _ in lag.note(loop) }
            }
            tasks.addTask { [transports] in
                while !Task.isCancelled {
                    try await Task.sleep(for: .seconds(5))
                    let alive = try await transports[0].members().filter { if case .alive = $0.status { true } else { false } }.count
                    var started = 0, answered = 0, refused = 0
                    for t in transports {
                        let c = try await t.counters().membership
                        started += c.pushPullsStarted; answered += c.pushPullsAnswered; refused += c.pushPullRateLimited
                    }
                    print("swarm: member 0 sees \(alive) alive; event loops late by \(lag.takeMaxMilliseconds()) ms at most; push/pulls started \(started), answered \(answered), refused \(refused)")
                    fflush(nil)
                }
            }
            try await tasks.next()
            tasks.cancelAll()
        }
    }
}

/// The most an event loop's 100 ms task ran late since the last read.
final class LoopLag: Sendable {
    private let state = NIOLockedValueBox<(last: [ObjectIdentifier: NIODeadline], max: Int64)>(([:], 0))

    func note(_ loop: EventLoop) {
        let now = NIODeadline.now()
        state.withLockedValue { s in
            if let last = s.last[ObjectIdentifier(loop)] {
                s.max = Swift.max(s.max, (now - last).nanoseconds / 1_000_000 - 100)
            }
            s.last[ObjectIdentifier(loop)] = now
        }
    }

    func takeMaxMilliseconds() -> Int64 { state.withLockedValue { s in defer { s.max = 0 }; return s.max } }
}
