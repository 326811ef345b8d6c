import Foundation
import IPNetwork
import LinePort
@testable import Membership
import NIOPosix
import Testing
@testable import WireMeshAgent
import WireMeshCrypto

/// Push/pull carried over the line port between real transports on 127.0.0.1 (TCP on the gossip port
/// number, ports chosen by the system), and what the agent's side refuses before the core sees it.
@Suite("Gossip transport: push/pull over the line port")
struct PushPullTransportTests {
    static let loopback = try! Endpoint("127.0.0.1:0")

    func config() -> MembershipConfig {
        var c = MembershipConfig.wiremeshDefaults
        c.pushPullDifferingBuckets = 1
        c.antiEntropyInterval = .seconds(1)
        return c
    }

    func settings(_ name: String, keyring: Keyring, clusterID: [UInt8], bind: Endpoint = loopback, seeds: [Endpoint] = [],
                  savedView: [SignedNodeRecord] = [], config: MembershipConfig? = nil) throws -> GossipSettings {
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: name, identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                                wireguardEndpoints: [try Endpoint("192.0.2.1:51820")], gossipAddress: Self.loopback,
                                podCIDRs: [try IPPrefix("10.244.\(name.utf8.count).0/24")])
        return GossipSettings(config: config ?? self.config(), identity: identity, record: record, keyring: keyring, clusterID: clusterID,
                              bind: bind, seeds: seeds, savedView: savedView)
    }

    /// Records of members that exist only on paper (their gossip addresses are unroutable test nets).
    func paperMembers(_ n: Int) throws -> [SignedNodeRecord] {
        try (0..<n).map { i in
            let identity = SigningIdentity.generate()
            let record = NodeRecord(name: "paper-\(i)", identity: identity.publicKey, version: 1, wireguardKey: Key.generatePrivate().publicKey(),
                                    wireguardEndpoints: [try Endpoint("192.0.2.2:51820")],
                                    gossipAddress: Endpoint(address: .v4(0xC633_6400 | UInt32(i)), port: 7946),
                                    podCIDRs: [try IPPrefix("10.245.\(i).0/24")])
            return try SignedNodeRecord(signing: record, with: identity)
        }
    }

    /// The transport its line port answers for (set once both are bound).
    actor Slot {
        var transport: GossipTransport?
        func set(_ t: GossipTransport) { transport = t }
    }

    /// A transport with its line port (TCP on the gossip port number, answering push/pulls only). The
    /// TCP port is taken first (port 0: the system picks a free one), then UDP on the same number: a
    /// UDP port the system picked may be held in TCP by a parallel test.
    func boundWithLinePort(_ make: (Endpoint) throws -> GossipSettings) async throws -> (GossipTransport, LineServer) {
        // A UDP port held by another test fails the bind (no port sharing); take another pair.
        for _ in 0..<9 {
            if let pair = try? await boundPair(make) { return pair }
        }
        return try await boundPair(make)
    }

    func boundPair(_ make: (Endpoint) throws -> GossipSettings) async throws -> (GossipTransport, LineServer) {
        let slot = Slot()
        let port = try await LineServer.bind(Self.loopback) { request in
            guard case .pushPull(let envelope) = request, let t = await slot.transport else {
                return .refused(.malformed("push/pull only here"))
            }
            return await t.answerPushPull(envelope)
        }
        let endpoint = Endpoint(address: Self.loopback.address, port: UInt16(port.localPort!))
        let t: GossipTransport
        do {
            t = try await GossipTransport.bind(try make(endpoint))
        } catch {
            let closing = Task { try await port.run() }
            closing.cancel()
            _ = await closing.result
            throw error
        }
        await slot.set(t)
        return (t, port)
    }

    func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async throws -> Bool {
        try await pollUntil(timeout: timeout, condition)
    }

    /// A sealed request as any cluster-key holder could build it.
    func envelope(_ messages: [WireMessage], keyring: Keyring, clusterID: [UInt8], reply: Bool = false,
                  from: String? = "127.0.0.1:9") -> PushPullEnvelope {
        let payload = messages.flatMap { WireFormat.encode($0) }
        return PushPullEnvelope(from: from, sealed: PushPullSeal.seal(payload, reply: reply, keyring: keyring, clusterID: clusterID))
    }

    @Test("a joiner far from its seed's view gets it through one push/pull over the line port")
    func swapOverLinePort() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("push-pull-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let paper = try paperMembers(40)
        let (a, portA) = try await boundWithLinePort { try settings("alpha", keyring: keyring, clusterID: cluster, bind: $0, savedView: paper) }
        let (b, portB) = try await boundWithLinePort { try settings("bravo", keyring: keyring, clusterID: cluster, bind: $0, seeds: [a.localAddress]) }
        let ports = [portA, portB]
        let tasks = [Task { try await a.run() }, Task { try await b.run() }] + ports.map { p in Task { try await p.run() } }
        defer { for task in tasks { task.cancel() } }
        // bravo learns alpha's 40 other members; alpha swapped states with it over TCP to do so.
        let learned = try await eventually { try await b.members().count >= 41 }
        let known = try await b.members().count
        #expect(learned, "bravo knows \(known) members")
        // The reply may still be on its way when bravo's view is complete (its state requests went by UDP).
        _ = try await eventually { try await a.counters().membership.pushPullRepliesApplied >= 1 }
        let ca = try await a.counters().membership, cb = try await b.counters().membership
        #expect(ca.pushPullsStarted >= 1 && ca.pushPullRepliesApplied >= 1, "alpha: \(ca)")
        #expect(cb.pushPullsAnswered >= 1, "bravo: \(cb)")
        #expect(ca.pushPullUnsolicited == 0 && cb.pushPullUnsolicited == 0)
    }

    @Test("with the agent's push-pull setting on (the default), a member swaps views with a joiner over the line port; off, it refuses a swap before its core")
    func agentSetting() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("push-pull-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let on = AgentConfig()  // the default
        var off = AgentConfig()
        off.pushPull = false
        #expect(on.pushPull && off.membership.pushPullDifferingBuckets == 0 && on.membership.pushPullDifferingBuckets > 0)

        let quiet = try await GossipTransport.bind(try settings("quiet", keyring: keyring, clusterID: cluster, config: off.membership))
        let quietTask = Task { try await quiet.run() }
        defer { quietTask.cancel() }
        let request = envelope([], keyring: keyring, clusterID: cluster)
        guard case .refused(.pushPull) = await quiet.answerPushPull(request) else {
            Issue.record("a member with push-pull off answered a swap")
            return
        }
        #expect(try await quiet.counters().membership.pushPullsAnswered == 0)

        // The joiner's first datagram carries its (empty) digest: alpha, 40 members ahead, starts a swap.
        let paper = try paperMembers(40)
        let (a, portA) = try await boundWithLinePort {
            try settings("alpha", keyring: keyring, clusterID: cluster, bind: $0, savedView: paper, config: on.membership)
        }
        let (b, portB) = try await boundWithLinePort {
            try settings("bravo", keyring: keyring, clusterID: cluster, bind: $0, seeds: [a.localAddress], config: on.membership)
        }
        let tasks = [Task { try await a.run() }, Task { try await b.run() }] + [portA, portB].map { p in Task { try await p.run() } }
        defer { for task in tasks { task.cancel() } }
        #expect(try await eventually { try await b.members().count >= 41 })
        _ = try await eventually { try await a.counters().membership.pushPullRepliesApplied >= 1 }
        let ca = try await a.counters().membership, cb = try await b.counters().membership
        #expect(ca.pushPullsStarted >= 1 && ca.pushPullRepliesApplied >= 1, "alpha: \(ca)")
        #expect(cb.pushPullsAnswered >= 1, "bravo: \(cb)")
    }

    @Test("push/pull requests that are garbled, oversized, under another key, the wrong way round or replayed are refused before the core")
    func hostileRequestsRefused() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("push-pull-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let t = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster))
        let task = Task { try await t.run() }
        defer { task.cancel() }
        func refused(_ reply: LineReply) -> Bool { if case .refused(.pushPull) = reply { true } else { false } }
        let valid = envelope([], keyring: keyring, clusterID: cluster)

        #expect(refused(await t.answerPushPull(PushPullEnvelope(from: "127.0.0.1:9", sealed: Array("not sealed".utf8)))))
        var garbled = valid
        garbled.sealed = "%%% not base64 %%%"
        #expect(refused(await t.answerPushPull(garbled)))
        var anonymous = valid
        anonymous.from = nil
        #expect(refused(await t.answerPushPull(anonymous)))
        // Longer than a line may carry: refused on its length, before any decoding.
        let huge = PushPullEnvelope(from: "127.0.0.1:9", sealed: [UInt8](repeating: 1, count: PushPullEnvelope.maxSealedBytes + 1))
        #expect(huge.sealedBytes == nil)
        #expect(refused(await t.answerPushPull(huge)))
        // Sealed with a key the member does not hold, or as a reply (a reflected answer).
        #expect(refused(await t.answerPushPull(envelope([], keyring: Keyring(primary: .generate()), clusterID: cluster))))
        #expect(refused(await t.answerPushPull(envelope([], keyring: keyring, clusterID: Array("other".utf8)))))
        #expect(refused(await t.answerPushPull(envelope([], keyring: keyring, clusterID: cluster, reply: true))))
        // A genuine request is answered once; the same bytes again are a replay.
        guard case .pushPull(let answer) = await t.answerPushPull(valid) else {
            Issue.record("a valid request was not answered")
            return
        }
        let opened = answer.sealedBytes.flatMap {
            PushPullSeal.open($0, reply: true, keyring: keyring, clusterID: cluster, maxPayload: config().pushPullMaxBytes)
        }
        #expect(opened.map { WireFormat.decodePayload($0).messages.contains { if case .record = $0 { true } else { false } } } == true)
        #expect(refused(await t.answerPushPull(valid)))
        let c = try await t.counters().membership
        #expect(c.pushPullsAnswered == 1)
    }

    @Test("a cluster-key holder's push/pull with a forged record or another member's altered record changes nothing")
    func forgedRecordsInARequestChangeNothing() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("push-pull-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let paper = try paperMembers(1)[0]
        let t = try await GossipTransport.bind(try settings("alpha", keyring: keyring, clusterID: cluster, savedView: [paper]))
        let task = Task { try await t.run() }
        defer { task.cancel() }
        let mallory = SigningIdentity.generate()
        var altered = paper.record
        altered.version += 1
        altered.wireguardKey = Key.generatePrivate().publicKey()
        let encoded = try altered.canonicalEncoding()
        let forged = SignedNodeRecord(record: altered, encodedRecord: encoded, signature: mallory.sign(NodeRecord.signingContext + encoded))
        let spliced = SignedNodeRecord(record: altered, encodedRecord: encoded, signature: paper.signature)
        let reply = await t.answerPushPull(envelope([.record(forged), .record(spliced)], keyring: keyring, clusterID: cluster))
        if case .pushPull = reply {} else { Issue.record("a well-sealed request was not answered: \(reply)") }
        let seen = try await t.members().first { $0.name == paper.record.name }
        #expect(seen?.record == paper)
        #expect(try await t.counters().membership.rejectedBadSignature == 2)
    }

    @Test("the push/pull line stays within the line port's limit at the largest payload")
    func envelopeFitsALine() throws {
        let keyring = Keyring(primary: .generate())
        let payload = [UInt8](repeating: 7, count: MembershipConfig.wiremeshDefaults.pushPullMaxBytes)
        let sealed = PushPullSeal.seal(payload, reply: false, keyring: keyring, clusterID: Array("c".utf8))
        #expect(sealed.count <= PushPullEnvelope.maxSealedBytes)
        let line = LineRequest.pushPull(PushPullEnvelope(from: "[2001:db8::1]:7946", sealed: sealed)).line()
        #expect(line.count <= LineRequest.maxLength)
        guard case .pushPull(let decoded) = try LineRequest.decode(line: Array(line.dropLast())) else {
            Issue.record("decoded to another kind")
            return
        }
        #expect(decoded.sealedBytes == sealed)
    }
}
