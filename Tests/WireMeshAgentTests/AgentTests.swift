#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import LinePort
import Logging
import Membership
import Netlink
import NIOConcurrencyHelpers
import Testing
import WireGuard
import WireMeshCrypto
import WireMeshJoin
@testable import WireMeshAgent

/// An agent on an in-memory dataplane and a state directory under /tmp: no root, no interface, no
/// process. With `peers`, gossip runs on 127.0.0.1 (an ephemeral port) with their signed records as
/// its saved view, so the mesh has members without any other process.
struct AgentHarness {
    let directory: String
    let store: StateStore
    let state: NodeState
    let dataplane: InMemoryDataplane
    let agent: Agent
    let peers: [(record: NodeRecord, identity: SigningIdentity)]

    static let podRange = try! IPPrefix("10.244.0.0/16")
    /// The IPv6 range of a `dualStack` harness.
    static let podRangeV6 = try! IPPrefix("fd42:1::/48")
    /// The cluster authority every harness's node and peers are certified by.
    static let authority = SigningIdentity.generate()

    init(directory: String, peers: Int = 0, gossip: Bool = false, device: Device? = nil, clock: AgentClock = .system,
         holdsAuthority: Bool = true, dualStack: Bool = false, beforeStart: (StateStore) throws -> Void = { _ in },
         editPeer: (Int, inout NodeRecord) throws -> Void = { _, _ in }) async throws {
        self.directory = directory
        store = StateStore(directory: directory + "/state")
        let ipam = try IPAM(clusterRange: Self.podRange, nodePrefixLength: 24)
        let block = try IPPrefix("10.244.1.0/24")
        try store.initialise(InitialState.certified(
            clusterID: "c0ffee00c0ffee00",
            settings: ClusterSettings(podRange: Self.podRange, nodePrefixLength: 24, podRangeV6: dualStack ? Self.podRangeV6 : nil),
            node: NodeAssignment(name: "self", podCIDR: block, overlayAddress: ipam.overlayAddress(of: block),
                                 podCIDRV6: dualStack ? try IPPrefix("fd42:1:0:1::/64") : nil),
            identity: .generate(), wireGuardKey: .generatePrivate(), keyring: Keyring(primary: .generate()),
            authority: Self.authority, holdsAuthority: holdsAuthority))
        state = try store.load()
        try beforeStart(store)
        var config = AgentConfig()
        config.stateDirectory = store.directory
        config.interface = "wmtest0"
        config.wireGuardPort = 51999
        dataplane = InMemoryDataplane(interface: config.interface, device: device)
        var logger = Logger(label: "agent-test")
        logger.logLevel = .critical
        let loopback = try IPAddress("127.0.0.1")
        agent = Agent(config: config, store: store, state: state, link: dataplane, advertise: loopback,
                      interfaceIndex: 7, mtu: 1420, logger: logger, clock: clock)
        var made: [(NodeRecord, SigningIdentity)] = []
        for i in 0..<peers {
            let identity = SigningIdentity.generate()
            let cidr = try IPPrefix("10.244.\(10 + i).0/24")
            var record = NodeRecord(name: "peer\(i)", identity: identity.publicKey, version: 1,
                                    wireguardKey: Key.generatePrivate().publicKey(),
                                    wireguardEndpoints: [Endpoint(address: try IPAddress("192.0.2.\(10 + i)"), port: 51820)],
                                    gossipAddress: Endpoint(address: try IPAddress("192.0.2.\(10 + i)"), port: 7946),
                                    podCIDRs: [cidr] + (dualStack ? [try IPPrefix("fd42:1:0:\(10 + i)::/64")] : []),
                                    overlayAddress: cidr.network.address)
            try editPeer(i, &record)
            record.certificate = .issue(clusterID: state.clusterID, name: record.name, identity: identity.publicKey,
                                        podCIDRs: record.podCIDRs, overlayAddress: record.overlayAddress, issuedAt: 1, authority: Self.authority)
            made.append((record, identity))
        }
        self.peers = made
        if peers > 0 || gossip {
            let saved = try made.map { try SignedNodeRecord(signing: $0.0, with: $0.1) }
            // The peers (TEST-NET addresses) never answer: no probing, else a test slowed by a loaded
            // machine past the failure timeout sees them declared dead and their peers removed.
            var membership = MembershipConfig.wiremeshDefaults
            membership.probeInterval = .seconds(3600)
            let transport = try await GossipTransport.bind(GossipSettings(
                config: membership, identity: state.identity, record: await agent.localRecord(version: 1), keyring: state.keyring,
                clusterID: Array(state.clusterID.utf8), bind: Endpoint(address: loopback, port: 0), savedView: saved,
                trust: await agent.trust),
                logger: logger)
            await agent.setTransport(transport)
        }
    }

    var device: Device { get throws { try dataplane.device() } }
}

/// A clock the test moves: monotonic time and the wall clock apart.
final class ManualClock: Sendable {
    private let base = ContinuousClock.now
    private let offsets = NIOLockedValueBox<(monotonic: Duration, wall: TimeInterval)>((.zero, 0))

    var agentClock: AgentClock {
        AgentClock(monotonic: { self.base + self.offsets.withLockedValue { $0.monotonic } },
                   wall: { Date().addingTimeInterval(self.offsets.withLockedValue { $0.wall }) })
    }
    func advance(_ d: Duration) { offsets.withLockedValue { $0.monotonic += d; $0.wall += Double(d.components.seconds) } }
    func jumpWall(_ seconds: TimeInterval) { offsets.withLockedValue { $0.wall += seconds } }
}

/// The agent's own behaviour, driven through its methods against an in-memory dataplane (issue 15:
/// before, only root-only shell e2e covered it).
@Suite struct AgentTests {
    @Test func startUpProgramsKeyPortAndTheFailClosedRoutesThenAPassSendsNothing() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir)
            await h.agent.reconcile()
            let device = try h.device
            #expect(device.privateKey == h.state.wireGuardKey && device.listenPort == 51999)
            let routes = h.dataplane.with { $0.routes }
            #expect(routes.contains { $0.destination == AgentHarness.podRange && $0.interfaceIndex == 7 })
            #expect(routes.contains { $0.destination == AgentHarness.podRange && $0.type == .unreachable })
            let sent = h.dataplane.with { $0.changes.count }
            await h.agent.reconcile()
            #expect(h.dataplane.with { $0.changes.count } == sent, "a second pass changed the device")
            #expect(h.dataplane.with { $0.routes } == routes)
        }
    }

    @Test func beforeGossipIsUpThePeersOnTheDeviceStay() async throws {
        try await withTemporaryDirectory { dir in
            // A restart: the device still holds the peers of the last run; the view is still empty.
            let kept = Peer(publicKey: Key.generatePrivate().publicKey(), allowedIPs: [try IPPrefix("10.244.50.0/24")])
            let h = try await AgentHarness(directory: dir, device: Device(name: "wmtest0", peers: [kept]))
            await h.agent.reconcile()
            #expect(try h.device.peers.map(\.publicKey) == [kept.publicKey])
        }
    }

    @Test func membersBecomePeersAndDriftIsRepaired() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 2)
            await h.agent.reconcile()
            let want = Set(h.peers.map(\.record.wireguardKey))
            #expect(Set(try h.device.peers.map(\.publicKey)) == want)
            let p0 = try #require(try h.device.peers.first { $0.publicKey == h.peers[0].record.wireguardKey })
            #expect(Set(p0.allowedIPs) == Set(h.peers[0].record.podCIDRs))
            // Behind the agent's back: a foreign peer appears, a member's peer and a route go.
            let foreign = Key.generatePrivate().publicKey()
            try h.dataplane.configure(DeviceConfig(peers: [
                PeerConfig(publicKey: foreign, allowedIPs: [try IPPrefix("10.244.99.0/24")]),
                PeerConfig(publicKey: h.peers[1].record.wireguardKey, remove: true),
            ]))
            h.dataplane.with { $0.routes.removeAll { $0.type == .unreachable } }
            await h.agent.reconcile()
            #expect(Set(try h.device.peers.map(\.publicKey)) == want)
            #expect(h.dataplane.with { $0.routes }.contains { $0.type == .unreachable })
        }
    }

    @Test func aDeviceThatCannotBeProgrammedMakesTheNodeUnhealthyUntilItCan() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir)
            h.dataplane.with { $0.configureError = .rejected(device: "wmtest0", errno: EADDRINUSE, message: "") }
            await h.agent.reconcile()
            guard case .status(let sick) = await h.agent.handle(.status) else { Issue.record("no status"); return }
            #expect(sick.healthy == false)
            #expect(sick.problems?.first?.contains("WireGuard port 51999 is in use") == true)
            h.dataplane.with { $0.configureError = nil }
            await h.agent.reconcile()
            guard case .status(let well) = await h.agent.handle(.status) else { Issue.record("no status"); return }
            #expect(well.healthy == true && well.problems == [])
            #expect(well.mtu == 1420 && well.advertiseAddress == "127.0.0.1" && well.backend == "memory")
        }
    }

    /// Dual-stack: the interface gets an overlay address of each family, both ranges are routed into it
    /// (and backed by an unreachable route), and each peer's allowed IPs hold both of its blocks.
    @Test func aDualStackNodeProgramsBothFamilies() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 2, dualStack: true)
            h.dataplane.with { $0.exists = false }  // the first start: the link is created and configured
            await h.agent.reconcile()
            let s = h.dataplane.with { $0 }
            #expect(s.addresses == [try IPPrefix("10.244.1.0/32"), try IPPrefix("fd42:1:0:1::/128")])
            for range in [AgentHarness.podRange, AgentHarness.podRangeV6] {
                #expect(s.routes.contains { $0.destination == range && $0.interfaceIndex == s.index }, "\(range) into the interface")
                #expect(s.routes.contains { $0.destination == range && $0.type == .unreachable }, "\(range) fail-closed")
            }
            for peer in h.peers {
                let entry = try #require(s.device.peers.first { $0.publicKey == peer.record.wireguardKey })
                #expect(Set(entry.allowedIPs) == Set(peer.record.podCIDRs) && entry.allowedIPs.count == 2)
            }
            let record = await h.agent.localRecord(version: 1)
            #expect(record.podCIDRs == [try IPPrefix("10.244.1.0/24"), try IPPrefix("fd42:1:0:1::/64")])
            #expect(await h.agent.trust.refusal(for: record) == nil, "the node's own record passes its cluster's trust")
            let changes = h.dataplane.with { $0.changes.count }
            await h.agent.reconcile()
            #expect(h.dataplane.with { $0.changes.count } == changes && h.dataplane.with { $0.routes } == s.routes, "a second pass did something")
        }
    }

    @Test func aVanishedInterfaceIsCreatedAgainAndProgrammed() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            await h.agent.reconcile()
            h.dataplane.tearDown(clusterRanges: [AgentHarness.podRange])  // wireguard-go killed, link gone
            await h.agent.reconcile()
            let s = h.dataplane.with { $0 }
            let overlay = try IPPrefix("10.244.1.0/32")
            #expect(s.exists && s.mtu == 1420 && s.up && s.addresses == [overlay])
            #expect(s.device.privateKey == h.state.wireGuardKey && s.device.peers.count == 1)
            #expect(s.routes.contains { $0.interfaceIndex == s.index }, "routes point at the new interface")
        }
    }

    @Test func anAdmittedNodeIsOnTheDeviceBeforeItsRecordArrivesAndTwoJoinsGetTwoBlocks() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            await h.agent.reconcile()
            let now = Date()
            let (token, record) = try JoinToken.issue(clusterID: h.state.clusterID, endpoints: [Endpoint(address: try IPAddress("127.0.0.1"), port: 7946)],
                                                      authority: h.state.authority!, revocationSerial: 0, ttl: 600, uses: nil, now: now)
            try await h.agent.saveTokenRecords([record])
            func request(_ name: String, key: Key) -> LineRequest {
                .join(JoinExchange.makeRequest(token: token, nodeName: name, identity: SigningIdentity.generate().publicKey,
                                               wireGuardPublicKey: key, nonce: secureRandomBytes(JoinExchange.nonceLength)))
            }
            let keyA = Key.generatePrivate().publicKey(), keyB = Key.generatePrivate().publicKey()
            async let a = h.agent.answer(request("joiner-a", key: keyA))
            async let b = h.agent.answer(request("joiner-b", key: keyB))
            let replies = await [a, b]
            #expect(replies.allSatisfy { if case .joined = $0 { true } else { false } }, "\(replies)")
            let device = try h.device
            let blocks = [keyA, keyB].compactMap { k in device.peers.first { $0.publicKey == k }?.allowedIPs.first { $0.length == 24 } }
            #expect(blocks.count == 2 && blocks[0] != blocks[1], "blocks: \(blocks)")
            let taken = [try IPPrefix("10.244.1.0/24"), try IPPrefix("10.244.10.0/24")]
            #expect(!blocks.contains { taken.contains($0) }, "a block of this node or a member was handed out")
        }
    }

    @Test func aForgedJoinRequestChangesNothingAndLearnsNothing() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            await h.agent.reconcile()
            let before = try h.device
            // A token of another cluster (another join-signing seed), naming a member that exists.
            let (other, _) = try JoinToken.issue(clusterID: "0ther0000000000", endpoints: [Endpoint(address: try IPAddress("127.0.0.1"), port: 7946)],
                                                 authority: .generate(), revocationSerial: 0, ttl: 600, uses: nil, now: Date())
            let r = JoinExchange.makeRequest(token: other, nodeName: "peer0", identity: SigningIdentity.generate().publicKey,
                                             wireGuardPublicKey: Key.generatePrivate().publicKey(), nonce: secureRandomBytes(JoinExchange.nonceLength))
            let reply = await h.agent.answer(try LineRequest.decode(line: LineRequest.join(r).line().dropLast()))
            guard case .refused(.join(let rejection)) = reply else { Issue.record("not refused: \(reply)"); return }
            #expect(rejection.code == .authentication)
            #expect(!rejection.message.contains(h.state.clusterID) && !rejection.message.contains("peer0"))
            #expect(try h.device == before)
        }
    }

    @Test func aPeersKeySwitchMovesItsPrefixesInOneWriteGainBeforeLoss() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            await h.agent.reconcile()
            let peer = h.peers[0]
            let newKey = Key.generatePrivate().publicKey()
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let before = h.dataplane.with { $0.changes.count }
            try await h.agent.handleRotation(RotationMessage(phase: .switch, node: "peer0", oldKey: peer.record.wireguardKey,
                                                             newKey: newKey, issuedAt: now, identity: peer.identity))
            let device = try h.device
            #expect(device.peers.first { $0.publicKey == newKey }?.allowedIPs.contains(peer.record.podCIDRs[0]) == true)
            #expect(device.peers.first { $0.publicKey == peer.record.wireguardKey }?.allowedIPs == [], "the old entry stays, empty, for the grace")
            let writes = h.dataplane.with { Array($0.changes[before...]) }
            #expect(writes.count == 1 && writes[0].peers.map(\.publicKey) == [newKey, peer.record.wireguardKey])
            // A retry of the same switch writes nothing more.
            try await h.agent.handleRotation(RotationMessage(phase: .switch, node: "peer0", oldKey: peer.record.wireguardKey,
                                                             newKey: newKey, issuedAt: now, identity: peer.identity))
            #expect(h.dataplane.with { $0.changes.count } == before + 1)
            // Signed by anyone else: refused, nothing written.
            await #expect(throws: RotationRefusal.self) {
                try await h.agent.handleRotation(RotationMessage(phase: .switch, node: "peer0", oldKey: newKey,
                                                                 newKey: Key.generatePrivate().publicKey(), issuedAt: now,
                                                                 identity: SigningIdentity.generate()))
            }
            #expect(h.dataplane.with { $0.changes.count } == before + 1)
        }
    }

    @Test func rotateKeyIsAStateChangeTheReconcilerWritesAsAKeySwitchThenSettles() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            await h.agent.reconcile()
            await h.agent.setPeerTimeout(seconds: 1)  // peer0 is not there to answer (192.0.2.0/24)
            let before = h.dataplane.with { $0.changes.count }
            let outcome = try await h.agent.rotateKey()
            let state = try h.store.load()
            #expect(state.wireGuardKey.publicKey() == outcome.newKey && state.pendingWireGuardKey == nil)
            #expect(outcome.switched.isEmpty && outcome.livePeers == ["peer0"])
            let writes = h.dataplane.with { Array($0.changes[before...]) }
            // One write: the key, and keepalive off then on for the peer that routes (the handshake kick).
            #expect(writes.count == 1)
            #expect(writes[0].privateKey == state.wireGuardKey)
            #expect(writes[0].peers.map(\.persistentKeepaliveInterval) == [0, 25])
            #expect(try h.device.privateKey == state.wireGuardKey)
            // The next pass puts the configured keepalive (none) back and sends nothing after that.
            await h.agent.reconcile()
            #expect(try h.device.peers.allSatisfy { $0.persistentKeepaliveInterval == 0 })
            let settled = h.dataplane.with { $0.changes.count }
            await h.agent.reconcile()
            #expect(h.dataplane.with { $0.changes.count } == settled)
        }
    }

    @Test func anUnreadableTokensFileIsNamedAndNeverOverwritten() async throws {
        try await withTemporaryDirectory { dir in
            let garbage = Data("{\"not\": json".utf8)
            let h = try await AgentHarness(directory: dir) { store in
                try garbage.write(to: URL(fileURLWithPath: store.directory + "/tokens.json"))
            }
            await h.agent.reconcile()  // the device does not depend on it
            #expect(try h.device.privateKey == h.state.wireGuardKey)
            guard case .failure(let failure) = await h.agent.handle(.tokenCreate(ttlSeconds: 600, uses: 1)) else {
                Issue.record("a token was created over an unreadable tokens.json"); return
            }
            #expect(failure.message.contains("tokens.json"), "\(failure.message)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: h.store.directory + "/tokens.json")) == garbage)
        }
    }

    @Test func anAdmittedPeerWhoseRecordNeverComesGoesAfterAMinuteOfMonotonicTimeNotOfWallClock() async throws {
        try await withTemporaryDirectory { dir in
            let time = ManualClock()
            let h = try await AgentHarness(directory: dir, peers: 1, clock: time.agentClock)
            await h.agent.reconcile()
            let (token, record) = try JoinToken.issue(clusterID: h.state.clusterID, endpoints: [Endpoint(address: try IPAddress("127.0.0.1"), port: 7946)],
                                                      authority: h.state.authority!, revocationSerial: 0, ttl: 7200, uses: nil, now: Date())
            try await h.agent.saveTokenRecords([record])
            let key = Key.generatePrivate().publicKey()
            let r = JoinExchange.makeRequest(token: token, nodeName: "joiner", identity: SigningIdentity.generate().publicKey,
                                             wireGuardPublicKey: key, nonce: secureRandomBytes(JoinExchange.nonceLength))
            let reply = await h.agent.answer(.join(r))
            #expect({ if case .joined = reply { true } else { false } }(), "\(reply)")
            let reserved = { await h.agent.reservedBlock(of: "joiner") }
            let block = try #require(await reserved())
            #expect(try h.device.peers.contains { $0.publicKey == key })
            time.jumpWall(3600)  // the wall clock jumps an hour: no TTL moves
            await h.agent.reconcile()
            await h.agent.followView()
            #expect(try h.device.peers.contains { $0.publicKey == key })
            #expect(await reserved() == block)
            time.advance(.seconds(61))
            await h.agent.reconcile()
            #expect(try !h.device.peers.contains { $0.publicKey == key }, "the record never came: the peer goes after 60 s")
            #expect(await reserved() == block, "its block stays reserved for 300 s")
            time.advance(.seconds(240))
            await h.agent.followView()
            #expect(await reserved() == nil)
        }
    }

    @Test func aClusterKeyRotationGoesInstallingThenRetiringThenSteadyAndIsPersistedAtEachStep() async throws {
        try await withTemporaryDirectory { dir in
            let time = ManualClock()
            let h = try await AgentHarness(directory: dir, gossip: true, clock: time.agentClock)
            await h.agent.reconcile()
            let old = h.state.keyring.primary.id
            #expect(await h.agent.clusterKeyStatus.phase == "steady")
            let message = try await h.agent.rotateClusterKey()
            #expect(message.contains("cluster key"), "\(message)")
            // No other live member: every member (none) holds the new key, so it is primary at once,
            // and the old one is kept for the grace (30 s) to open what is still in flight.
            let rotated = try h.store.load()
            #expect(rotated.keyring.primary.id != old && rotated.keyring.keys.map(\.id).contains(old))
            #expect(await h.agent.clusterKeyStatus.phase == "retiring")
            time.jumpWall(10)
            await h.agent.followView()
            #expect(try h.store.load().keyring.keys.count == 2, "the grace has not passed")
            time.advance(.seconds(25))
            await h.agent.followView()
            let settled = try h.store.load()
            #expect(settled.keyring.keys.map(\.id) == [rotated.keyring.primary.id], "the old key is gone after the grace")
            #expect(await h.agent.clusterKeyStatus.phase == "steady")
            // A second rotation starts from the new key with the next generation.
            _ = try await h.agent.rotateClusterKey()
            let again = try h.store.load()
            #expect(again.clusterKeys.entries.first?.generation == (settled.clusterKeys.entries.first?.generation ?? 0) + 1)
        }
    }

    @Test func leaveIsRecordedAndSignalled() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            guard case .done(let message) = await h.agent.handle(.leave) else { Issue.record("leave failed"); return }
            #expect(message.contains("left cluster \(h.state.clusterID)"))
            #expect(try h.store.leftMarker()?.clusterID == h.state.clusterID)
            var signalled = false
            for await _ in h.agent.leaves { signalled = true; break }
            let leaving = await h.agent.isLeaving
            #expect(signalled && leaving)
            #expect(throws: StateError.self) { try h.store.load() }
        }
    }
}
