import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

/// Push/pull over a stream: whole views swapped in one exchange, and a hostile member getting nothing
/// through it that a datagram would not give it.
@Suite("Membership push/pull: whole-state swaps and what a hostile member gets from them")
struct PushPullTests {
    func pushPullConfig() -> MembershipConfig {
        var c = testConfig()
        c.pushPullDifferingBuckets = 4
        return c
    }

    /// n nodes that all join through n0 and converge, push/pull on.
    func cluster(_ n: Int) -> (Pump, [Endpoint]) {
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<n { eps.append(pump.add("n\(i)", index: i + 1, config: pushPullConfig())) }
        for ep in eps.dropFirst() { pump.join(ep, seeds: [eps[0]]) }
        pump.run(for: .seconds(20))
        return (pump, eps)
    }

    /// The push/pull request `from` would send now: its whole state, as a member holding the key builds it.
    func request(of pump: inout Pump, from ep: Endpoint) -> [UInt8] {
        var node = pump.nodes[ep]!
        let payload = node.statePayload(peerVersions: nil)
        pump.nodes[ep] = node
        return payload
    }

    @Test("a joiner far from its seed's view gets it in one push/pull, not datagram by datagram")
    func joinerSwapsWholeView() {
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<40 { eps.append(pump.add("n\(i)", index: i + 1, config: pushPullConfig())) }
        // n0..n38 know each other (a converged view); n39 knows nobody and joins through n0.
        let records = eps.dropLast().map { pump.nodes[$0]!.localRecord }
        for ep in eps.dropLast() { pump.with(ep) { node, now in node.seed(with: records, now: now); return [] } }
        pump.join(eps[39], seeds: [eps[0]])
        pump.run(for: .seconds(1))
        // The seed saw a summary differing in most buckets and swapped states with the joiner.
        #expect(pump.streams.contains { $0.from == eps[0] && $0.to == eps[39] && !$0.reply })
        #expect(pump.streams.contains { $0.from == eps[39] && $0.to == eps[0] && $0.reply })
        #expect(pump.nodes[eps[0]]!.counters.pushPullsStarted == 1 && pump.nodes[eps[0]]!.counters.pushPullRepliesApplied == 1)
        #expect(pump.nodes[eps[39]]!.counters.pushPullsAnswered == 1)
        // Within one second the joiner holds every record, alive (it asked for the records it lacked in one batch).
        let joiner = pump.nodes[eps[39]]!
        #expect(joiner.members.count == 39)
        #expect(joiner.members.allSatisfy { $0.status.isActive })
        // Every payload stays within the bound.
        #expect(pump.streams.allSatisfy { $0.payload.count <= pushPullConfig().pushPullMaxBytes })
    }

    @Test("a partition heals with push/pull: every node sees every node alive")
    func partitionHeals() {
        var (pump, eps) = cluster(8)
        let left = Set(eps[0..<4])
        pump.drop = { a, b in left.contains(a) != left.contains(b) }
        pump.run(for: .seconds(40))
        if case .dead = pump.status(of: "n7", at: eps[0]) {} else { Issue.record("partition not detected") }
        pump.drop = { _, _ in false }
        let before = pump.streams.count
        pump.run(for: .seconds(20))
        #expect(pump.allSee { $0.status == .alive(incarnation: $0.status.incarnation) })
        #expect(pump.streams.count > before, "the heal used no push/pull")
    }

    @Test("a quiet converged cluster never starts a push/pull")
    func quietClusterStaysOnDatagrams() {
        var (pump, _) = cluster(6)
        pump.run(for: .seconds(30))
        let settled = pump.streams.count
        pump.run(for: .seconds(120))
        #expect(pump.streams.count == settled)
    }

    @Test("an oversized push/pull is refused before it is read, and nothing is answered")
    func oversizedRefused() throws {
        var (pump, eps) = cluster(3)
        var payload = request(of: &pump, from: eps[1])
        while payload.count <= pushPullConfig().pushPullMaxBytes { payload += WireFormat.encode(.ack(seq: 1)) }
        let streams = pump.streams.count
        var node = pump.nodes[eps[0]]!
        let out = node.receivePushPull(request: payload, from: eps[1], now: pump.now)
        pump.nodes[eps[0]] = node
        #expect(node.counters.pushPullOversized == 1)
        #expect(!out.contains { if case .pushPullReply = $0 { true } else { false } })
        #expect(pump.streams.count == streams)
    }

    @Test("forged, altered and untrusted records in a push/pull are refused like in a datagram")
    func forgedRecordsRefused() throws {
        var pump = Pump()
        let a = pump.addCertified("a", index: 1, config: pushPullConfig())
        let b = pump.addCertified("b", index: 2, config: pushPullConfig())
        pump.join(b, seeds: [a])
        pump.run(for: .seconds(10))
        let genuine = pump.nodes[a]!.member(named: "b")!.record
        let mallory = testIdentity("mallory")
        // 1. b's record with a new WireGuard key and a higher version, signed by mallory.
        var altered = genuine.record
        altered.version += 5
        altered.wireguardKey = try Key(bytes: testBytes("mallory-wg"))
        let encoded = try altered.canonicalEncoding()
        let badSig = SignedNodeRecord(record: altered, encodedRecord: encoded, signature: mallory.sign(NodeRecord.signingContext + encoded))
        // 2. b's genuine signature over altered bytes (another member's record, edited).
        let spliced = SignedNodeRecord(record: altered, encodedRecord: encoded, signature: genuine.signature)
        // 3. A validly self-signed record the authority never certified.
        let uncertified = try SignedNodeRecord(signing: testRecord("m", index: 9, identity: mallory), with: mallory)
        // 4. b's name under mallory's identity.
        let hijack = try SignedNodeRecord(signing: certifiedRecord("b", index: 66, identity: mallory, version: 9), with: mallory)
        let payload = forgedPayload([.record(badSig), .record(spliced), .record(uncertified), .record(hijack)])
        var node = pump.nodes[a]!
        let out = node.receivePushPull(request: payload, from: testEndpoint(66), now: pump.now)
        pump.nodes[a] = node
        let c = node.counters
        #expect(c.rejectedBadSignature == 2)
        #expect(c.rejectedUntrusted == 1)
        #expect(c.rejectedIdentityConflict == 1)
        #expect(node.member(named: "b")!.record == genuine)
        #expect(node.member(named: "m") == nil)
        // The request was still answered (it was well-formed): with what a datagram exchange would give.
        #expect(out.contains { if case .pushPullReply = $0 { true } else { false } })
    }

    @Test("a reply nobody asked for, a second reply and a replayed reply are not applied")
    func unsolicitedAndReplayedRepliesRefused() throws {
        let (pump, eps) = cluster(3)
        let mallory = testIdentity("mallory")
        let stranger = try SignedNodeRecord(signing: testRecord("m", index: 9, identity: mallory), with: mallory)
        let payload = forgedPayload([.record(stranger)])
        var node = pump.nodes[eps[0]]!
        _ = node.receivePushPull(reply: payload, from: eps[1], now: pump.now)
        #expect(node.counters.pushPullUnsolicited == 1)
        #expect(node.member(named: "m") == nil)
        // One we asked for is applied once; the same reply again (a replay) is not.
        let started = node.startPushPull(with: eps[1], now: pump.now)
        #expect(started)
        _ = node.receivePushPull(reply: payload, from: eps[1], now: pump.now)
        #expect(node.counters.pushPullRepliesApplied == 1 && node.member(named: "m") != nil)
        _ = node.receivePushPull(reply: payload, from: eps[1], now: pump.now)
        #expect(node.counters.pushPullUnsolicited == 2)
        // A reply from a member other than the one asked is refused too.
        let startedAgain = node.startPushPull(with: eps[2], now: pump.now + .seconds(2))
        #expect(startedAgain)
        _ = node.receivePushPull(reply: payload, from: eps[1], now: pump.now + .seconds(2))
        #expect(node.counters.pushPullUnsolicited == 3)
        // And after the timeout, the late reply is refused.
        _ = node.receivePushPull(reply: payload, from: eps[2], now: pump.now + .seconds(60))
        #expect(node.counters.pushPullUnsolicited == 4 && node.counters.pushPullRepliesApplied == 1)
    }

    @Test("probes, digests and requests inside a push/pull are skipped: a stream does not multiply answers")
    func disallowedMessagesSkipped() {
        var (pump, eps) = cluster(3)
        let name = pump.nodes[eps[0]]!.localRecord.record.name
        let payload = forgedPayload([
            .ping(seq: 7, target: name, source: "n1"),
            .pingReq(seq: 8, target: "n2", address: eps[2]),
            .digestSummary(fingerprints: Array(repeating: 0, count: 32)),
            .request([DigestRequest(nameHash: WireFormat.nameHash("n1"), haveVersion: 0)]),
        ])
        let sentBefore = pump.sent.count
        var node = pump.nodes[eps[0]]!
        let out = node.receivePushPull(request: payload, from: eps[1], now: pump.now)
        pump.nodes[eps[0]] = node
        #expect(node.counters.pushPullDisallowedMessages == 4)
        // No ack, ping, entries or records went out: only the reply.
        #expect(!out.contains { if case .send = $0 { true } else { false } })
        #expect(pump.sent.count == sentBefore)
    }

    @Test("a member's dead claims in a push/pull only make suspects, who refute")
    func deadClaimsAreSuspicions() {
        var (pump, eps) = cluster(4)
        let v = pump.nodes[eps[2]]!.localRecord.record.version
        let payload = forgedPayload([.status(name: "n2", version: v, status: .dead(incarnation: 0), from: "n1")])
        pump.with(eps[0]) { node, now in node.receivePushPull(request: payload, from: eps[1], now: now) }
        if case .suspect = pump.status(of: "n2", at: eps[0]) {} else { Issue.record("not a suspicion: \(String(describing: pump.status(of: "n2", at: eps[0])))") }
        pump.run(for: .seconds(20))
        #expect(pump.allSee { $0.status.isActive })
        #expect(!pump.events.contains { $0.event.kind == .dead })
    }

    @Test("requests over the answer rate are refused; the rate recovers")
    func answerRateLimited() {
        var (pump, eps) = cluster(3)
        let payload = request(of: &pump, from: eps[1])
        var node = pump.nodes[eps[0]]!
        let limit = pushPullConfig().pushPullAnswersPerInterval
        var replies = 0
        for i in 0..<(limit + 3) {
            let out = node.receivePushPull(request: payload, from: testEndpoint(50 + i), now: pump.now)
            replies += out.filter { if case .pushPullReply = $0 { true } else { false } }.count
        }
        #expect(replies == limit)
        #expect(node.counters.pushPullRateLimited == 3)
        let later = node.receivePushPull(request: payload, from: testEndpoint(50), now: pump.now + .seconds(2))
        #expect(later.contains { if case .pushPullReply = $0 { true } else { false } })
    }

    @Test("claims about unknown members in a push/pull ask for their records in one bounded batch")
    func unknownMembersRequestedInOneBatch() {
        var (pump, eps) = cluster(2)
        let claims: [WireMessage] = (0..<1000).map { .status(name: "ghost-\($0)", version: 1, status: .alive(incarnation: 0), from: "n1") }
        var node = pump.nodes[eps[0]]!
        let out = node.receivePushPull(request: forgedPayload(claims), from: eps[1], now: pump.now)
        pump.nodes[eps[0]] = node
        var asked = 0
        for case .send(let payload, let to) in out {
            #expect(to == eps[1])
            for case .request(let items) in messages(in: payload) { asked += items.count }
        }
        #expect(asked == MembershipNode.pushPullRequestLimit)
        #expect(out.filter { if case .send = $0 { true } else { false } }.count <= 4)
    }

    @Test("a swap that teaches many changes hurries the next anti-entropy round; one that teaches nothing does not")
    func hurryOnlyWhileViewsMove() {
        var config = pushPullConfig()
        config.pushPullFollowUp = .seconds(1)
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<30 { eps.append(pump.add("n\(i)", index: i + 1, config: config)) }
        let records = eps.map { pump.nodes[$0]!.localRecord }
        for ep in eps.dropLast() { pump.with(ep) { node, now in node.seed(with: records, now: now); return [] } }
        // n29 knows nobody: n0's state teaches it 28 members (it asks for their records) at once.
        let payload = request(of: &pump, from: eps[0])
        var fresh = pump.nodes[eps[29]]!
        fresh.nextAntiEntropyAt = pump.now + .seconds(60)
        _ = fresh.receivePushPull(request: payload, from: eps[0], now: pump.now)
        #expect(fresh.nextAntiEntropyAt <= pump.now + .seconds(1))
        // n1 holds the same view as n0: the same state teaches it nothing, its cadence stays.
        var settled = pump.nodes[eps[1]]!
        settled.nextAntiEntropyAt = pump.now + .seconds(60)
        _ = settled.receivePushPull(request: payload, from: eps[0], now: pump.now)
        #expect(settled.nextAntiEntropyAt == pump.now + .seconds(60))
    }

    @Test("members joining by gossip hurry the next anti-entropy round with push/pull on; with it off they do not")
    func joinsHurryTheNextRound() throws {
        var on = pushPullConfig()
        on.pushPullFollowUp = .seconds(1)
        on.pushPullFollowUpChanges = 1
        let joiner = testIdentity("joiner")
        let record = try SignedNodeRecord(signing: testRecord("joiner", index: 9, identity: joiner), with: joiner)
        for (config, hurries) in [(on, true), (testConfig(), false)] {
            var pump = Pump()
            let ep = pump.add("n0", index: 1, config: config)
            var node = pump.nodes[ep]!
            node.nextAntiEntropyAt = pump.now + .seconds(60)
            _ = node.receive(payload: WireFormat.encode(.record(record)), from: testEndpoint(9), now: pump.now)
            #expect(node.members.contains { $0.name == "joiner" })
            #expect((node.nextAntiEntropyAt <= pump.now + .seconds(1)) == hurries)
        }
    }

    @Test("a digest answer showing a node far behind starts a swap from its side; a member that only answers swaps starts none")
    func farBehindSwapsFromTheAskingSide() {
        for starts in [true, false] {
            var config = pushPullConfig()
            // One bucket: the seed never sees enough differing buckets to swap itself, so it answers entries.
            config.digestBuckets = 1
            var joinerConfig = config
            joinerConfig.pushPullStarts = starts
            var pump = Pump()
            var eps: [Endpoint] = []
            for i in 0..<30 { eps.append(pump.add("n\(i)", index: i + 1, config: config)) }
            let records = eps.map { pump.nodes[$0]!.localRecord }
            pump.with(eps[0]) { node, now in node.seed(with: records, now: now); return [] }
            let joiner = pump.add("late", index: 40, config: joinerConfig)
            pump.join(joiner, seeds: [eps[0]])
            pump.run(for: .seconds(1))
            let swapped = pump.streams.contains { $0.from == joiner && $0.to == eps[0] && !$0.reply }
            #expect(swapped == starts)
            #expect(pump.nodes[eps[0]]!.counters.pushPullsStarted == 0)
            #expect(pump.nodes[eps[0]]!.counters.pushPullsAnswered == (starts ? 1 : 0))
        }
    }

    @Test("hostile push/pull bytes never trap: random, truncated and oversized counts")
    func hostileBytesNeverTrap() {
        var (pump, eps) = cluster(2)
        var node = pump.nodes[eps[0]]!
        var rng = SeededRandom(seed: 42)
        let valid = request(of: &pump, from: eps[1])
        for i in 0..<300 {
            var bytes: [UInt8]
            switch i % 3 {
            case 0: bytes = (0..<Int(rng.next() % 2000)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1: bytes = Array(valid.prefix(Int(rng.next() % UInt64(valid.count + 1))))
            default:
                bytes = valid
                for _ in 0..<8 { bytes[Int(rng.next() % UInt64(bytes.count))] = UInt8(truncatingIfNeeded: rng.next()) }
            }
            _ = node.receivePushPull(request: bytes, from: eps[1], now: pump.now + .seconds(Int64(i)))
        }
        #expect(node.members.count >= 1)
    }
}
