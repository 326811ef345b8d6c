#if canImport(Glibc)
import Glibc
#endif
import IPNetwork
import Membership
import NIOCore
import NIOPosix
import ServiceLifecycle
import Testing
@testable import WireMeshAgent
import WireMeshCrypto

/// Real UDP gossip between transports on 127.0.0.1 (ports chosen by the system, so parallel tests
/// never collide; loopback traffic only).
@Suite("Gossip transport over UDP")
struct GossipTransportTests {
    static let loopback = try! Endpoint("127.0.0.1:0")

    func settings(_ name: String, keyring: Keyring, clusterID: [UInt8], seeds: [Endpoint] = [],
                  leaveOnShutdown: Bool = true) throws -> GossipSettings {
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: name, identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                                wireguardEndpoints: [try Endpoint("192.0.2.1:51820")], gossipAddress: Self.loopback,
                                podCIDRs: [try IPPrefix("10.244.\(name.utf8.count).0/24")])
        return GossipSettings(identity: identity, record: record, keyring: keyring, clusterID: clusterID,
                              bind: Self.loopback, seeds: seeds, leaveOnShutdown: leaveOnShutdown)
    }

    func eventually(timeout: Duration = .seconds(20), _ condition: () async throws -> Bool) async throws -> Bool {
        try await pollUntil(timeout: timeout, condition)
    }

    func status(of name: String, at transport: GossipTransport) async throws -> MemberStatus? {
        try await transport.members().first { $0.name == name }?.status
    }

    @Test("the gossip socket gets a receive buffer for join bursts (as root: beyond net.core.rmem_max)")
    func receiveBuffer() throws {
        let fd = try GossipSocket.bound(to: Endpoint(address: try IPAddress("127.0.0.1"), port: 0))
        defer { close(fd) }
        let size = GossipSocket.receiveBuffer(fd)
        if geteuid() == 0 {
            // The kernel reports twice the size set.
            #expect(size >= 2 * GossipSocket.receiveBufferBytes, "SO_RCVBUF is \(size)")
        } else {
            print("not root: SO_RCVBUFFORCE needs CAP_NET_ADMIN; only checking the socket has a buffer")
            #expect(size > 0)
        }
    }

    @Test("a second transport on a gossip port already held is refused: it never shares the port and takes its datagrams")
    func heldPortIsRefused() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("held-port-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let first = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster))
        let task = Task { try await first.run() }
        defer { task.cancel() }
        var second = try settings("bravo", keyring: keyring, clusterID: cluster)
        second.bind = first.localAddress
        do {
            let t = try await GossipTransport.bind(second)
            Task { try await t.run() }.cancel()
            Issue.record("a second socket bound \(first.localAddress)")
        } catch let error as GossipTransportError {
            guard case .bind(_, let underlying) = error, let io = underlying as? IOError else {
                Issue.record("unexpected error: \(error)")
                return
            }
            #expect(io.errnoCode == EADDRINUSE)
            #expect(error.description.contains("port in use"))
        }
    }

    @Test("three transports see each other's records, then one leaves and the others see it leave")
    func seeEachOtherThenLeave() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let a = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster))
        #expect(a.localAddress.port != 0)
        let b = try await GossipTransport.bind(try settings("bravo", keyring: keyring, clusterID: cluster, seeds: [a.localAddress]))
        let c = try await GossipTransport.bind(try settings("charlie", keyring: keyring, clusterID: cluster, seeds: [b.localAddress]))
        let transports = [a, b, c]
        let tasks = transports.map { t in Task { try await t.run() } }
        defer { for task in tasks { task.cancel() } }

        // Every record arrives intact (the key the owner signed, the port the system chose).
        let bRecord = try await b.localRecord()
        #expect(bRecord.record.gossipAddress.port == b.localAddress.port)
        let converged = try await eventually {
            for t in transports {
                let members = try await t.members()
                guard members.count == 2, members.allSatisfy({ if case .alive = $0.status { true } else { false } }) else { return false }
            }
            return true
        }
        let views = [try await a.members().map(\.name), try await b.members().map(\.name), try await c.members().map(\.name)]
        #expect(converged, "members: \(views)")
        let bAtA = try await a.members().first { $0.name == "bravo" }
        #expect(bAtA?.record == bRecord)

        // A record update travels too.
        try await c.updateLocalRecord { $0.labels["rack"] = "r7" }
        let updated = try await eventually {
            try await a.members().first { $0.name == "charlie" }?.record.record.labels["rack"] == "r7"
        }
        #expect(updated)

        // bravo leaves (its service is cancelled): the others see a signed leave, not a failure.
        tasks[1].cancel()
        _ = try? await tasks[1].value
        let left = try await eventually {
            for t in [a, c] {
                guard case .left = try await status(of: "bravo", at: t) else { return false }
            }
            return true
        }
        let bravoAtAlpha = try await status(of: "bravo", at: a)
        #expect(left, "bravo at alpha: \(String(describing: bravoAtAlpha))")
    }

    @Test("without leaveOnShutdown (the agent's setting) a stopped transport does not leave: a restart keeps its peers")
    func stopWithoutLeave() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let a = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster))
        let b = try await GossipTransport.bind(
            try settings("bravo", keyring: keyring, clusterID: cluster, seeds: [a.localAddress], leaveOnShutdown: false))
        let aTask = Task { try await a.run() }
        let bTask = Task { try await b.run() }
        defer { aTask.cancel(); bTask.cancel() }
        let joined = try await eventually { try await a.members().contains { $0.name == "bravo" } }
        #expect(joined)
        bTask.cancel()
        _ = try? await bTask.value
        // Long enough for a leave notice to arrive on loopback; far shorter than failure detection.
        try await Task.sleep(for: .milliseconds(500))
        let status = try await status(of: "bravo", at: a)
        #expect(status.map { if case .left = $0 { false } else { true } } ?? false, "bravo at alpha: \(String(describing: status))")
    }

    @Test("a transport with another cluster key is never admitted, and its datagrams are counted as refused")
    func wrongClusterKeyIsRefused() async throws {
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let a = try await GossipTransport.bind(try settings("alpha", keyring: Keyring(primary: .generate()), clusterID: cluster))
        let intruder = try await GossipTransport.bind(
            try settings("intruder", keyring: Keyring(primary: .generate()), clusterID: cluster, seeds: [a.localAddress]))
        let tasks = [a, intruder].map { t in Task { try await t.run() } }
        defer { for task in tasks { task.cancel() } }
        let refused = try await eventually { try await a.counters().seal.droppedAuthFailed > 0 }
        #expect(refused)
        #expect(try await a.members().isEmpty)
        #expect(try await intruder.members().isEmpty)
    }

    @Test("mid-rotation: a transport sealing with a new key still meets one that holds only the old key once it installs the new one")
    func clusterKeyRotation() async throws {
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let old = ClusterKey.generate(), new = ClusterKey.generate()
        let a = try await GossipTransport.bind(try settings("alpha", keyring: Keyring(primary: new, others: [old]), clusterID: cluster))
        let b = try await GossipTransport.bind(try settings("bravo", keyring: Keyring(primary: old), clusterID: cluster,
                                                            seeds: [a.localAddress]))
        let tasks = [a, b].map { t in Task { try await t.run() } }
        defer { for task in tasks { task.cancel() } }
        // alpha opens bravo's old-key datagrams (and counts them); bravo cannot read alpha's.
        #expect(try await eventually {
            let opened = try await a.counters().seal.openedWithOtherKey, refused = try await b.counters().seal.droppedAuthFailed
            return opened > 0 && refused > 0
        })
        #expect(try await a.members().contains { $0.name == "bravo" })
        #expect(try await b.members().isEmpty)
        try await b.setKeyring(Keyring(primary: old, others: [new]))
        let met = try await eventually {
            guard case .alive = try await status(of: "alpha", at: b), case .alive = try await status(of: "bravo", at: a) else { return false }
            return true
        }
        #expect(met, "bravo did not read alpha after installing the new key")
    }

    @Test("runs inside a ServiceGroup and stops on graceful shutdown")
    func serviceGroupShutdown() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let a = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster))
        let b = try await GossipTransport.bind(try settings("bravo", keyring: keyring, clusterID: cluster, seeds: [a.localAddress]))
        let aTask = Task { try await a.run() }
        defer { aTask.cancel() }
        let group = ServiceGroup(configuration: .init(services: [b], logger: .init(label: "test")))
        let groupTask = Task { try await group.run() }
        // Both ways: the leave goes to the members bravo knows (under load alpha can know bravo first).
        let joined = try await eventually {
            let alphaKnowsBravo = try await a.members().contains { $0.name == "bravo" }
            let bravoKnowsAlpha = try await b.members().contains { $0.name == "alpha" }
            return alphaKnowsBravo && bravoKnowsAlpha
        }
        #expect(joined)
        await group.triggerGracefulShutdown()
        try await groupTask.value
        let left = try await eventually {
            guard case .left = try await status(of: "bravo", at: a) else { return false }
            return true
        }
        #expect(left)
        // After shutdown the transport refuses calls instead of hanging.
        await #expect(throws: (any Error).self) { try await b.members() }
    }

    /// NIO closes a datagram channel on most send errors; the agent then stopped during a partition made
    /// by a firewall on its own host (EPERM). A broadcast without SO_BROADCAST fails the same way
    /// (EACCES, or ENETUNREACH without a route) and needs no namespace.
    @Test("a send the kernel refuses does not stop the transport")
    func sendErrorIsNotFatal() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("gossip-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let refused = try Endpoint("255.255.255.255:7946")
        let a = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster, seeds: [refused]))
        let taskA = Task { try await a.run() }
        defer { taskA.cancel() }
        // The join to the refused seed has been attempted once run() is running.
        #expect(try await eventually { (try? await a.members()) != nil })
        try await Task.sleep(for: .milliseconds(200))
        let b = try await GossipTransport.bind(try settings("bravo", keyring: keyring, clusterID: cluster, seeds: [a.localAddress]))
        let taskB = Task { try await b.run() }
        defer { taskB.cancel() }
        let met = try await eventually {
            guard case .alive = try await status(of: "bravo", at: a), case .alive = try await status(of: "alpha", at: b) else { return false }
            return true
        }
        #expect(met, "alpha stopped gossiping after a refused send")
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes (a generous bound, not a timing assertion).
func pollUntil(timeout: Duration, _ condition: () async throws -> Bool) async throws -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(50))
    }
    return try await condition()
}
