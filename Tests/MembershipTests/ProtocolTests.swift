import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

/// Drives `MembershipNode`s directly with virtual time through `Pump`.
@Suite("Membership protocol: SWIM, Lifeguard, records, anti-entropy")
struct ProtocolTests {
    /// n nodes named n0..n(k-1) that all join through n0 and converge.
    func cluster(_ n: Int, config: MembershipConfig = testConfig()) -> (Pump, [Endpoint]) {
        Pump.cluster(n, config: config)
    }

    @Test("nodes that join through one seed all see each other alive")
    func joinConverges() {
        let (pump, eps) = cluster(5)
        #expect(pump.allSee { $0.status.isActive })
        for ep in eps { #expect(pump.nodes[ep]!.members.count == 4) }
        // Each node reported every other one as joined exactly once.
        #expect(pump.events(at: eps[3], kind: .joined, name: "n1").count == 1)
    }

    @Test("the view generation stays put while nothing changes and moves with every change")
    func viewGeneration() {
        var (pump, eps) = cluster(5)
        pump.run(for: .seconds(30))  // dissemination tail
        let settled = eps.map { pump.nodes[$0]!.viewGeneration }
        let views = eps.map { pump.nodes[$0]!.members }
        pump.run(for: .seconds(60))  // probes, acks and anti-entropy rounds, no change
        #expect(eps.map { pump.nodes[$0]!.viewGeneration } == settled)
        #expect(eps.map { pump.nodes[$0]!.members } == views)
        _ = pump.crash(eps[4])
        pump.run(for: .seconds(30))
        for (i, ep) in eps.dropLast().enumerated() {
            #expect(pump.nodes[ep]!.viewGeneration != settled[i], "n4's death did not move the generation at \(ep)")
            #expect(pump.nodes[ep]!.members != views[i])
        }
    }

    @Test("no datagram ever exceeds 1200 bytes, even with large records")
    func datagramLimit() throws {
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<8 {
            var labels: [String: String] = [:]
            for l in 0..<3 { labels["label-\(l)"] = String(repeating: "x", count: 200) }
            eps.append(pump.add("node-with-a-long-name-\(i)", index: i + 1, labels: labels))
        }
        for ep in eps.dropFirst() { pump.join(ep, seeds: [eps[0]]) }
        pump.run(for: .seconds(30))
        #expect(pump.allSee { $0.status.isActive })
        #expect(!pump.sent.isEmpty)
        // Sealed by the shell, every payload stays within the 1200-byte datagram.
        #expect(pump.sent.allSatisfy { $0.payload.count + DatagramSeal.overhead <= 1200 })
        #expect(pump.sent.contains { $0.payload.count + DatagramSeal.overhead > 900 })
        // A datagram never carries the same update twice (each copy would burn a retransmission).
        for s in pump.sent {
            let ms = messages(in: s.payload)
            var seen: [WireMessage] = []
            for m in ms {
                switch m {
                case .record, .status, .leave:
                    #expect(!seen.contains(m), "duplicate \(m)")
                    seen.append(m)
                default: break
                }
            }
        }
    }

    @Test("a record too large for a datagram is refused at update with a clear error, and nothing changes")
    func recordTooLarge() throws {
        var pump = Pump()
        let a = pump.add("a", index: 1)
        var node = pump.nodes[a]!
        #expect(throws: MembershipError.self) {
            _ = try node.updateLocalRecord(now: .zero) { r in
                for l in 0..<8 { r.labels["label-\(l)"] = String(repeating: "y", count: 200) }
            }
        }
        do {
            _ = try node.updateLocalRecord(now: .zero) { r in
                for l in 0..<8 { r.labels["label-\(l)"] = String(repeating: "y", count: 200) }
            }
        } catch {
            #expect(error.description.contains("at most"))
            #expect(error.description.contains("labels"))
        }
        #expect(node.localRecord.record.version == 1)
        #expect(node.localRecord.record.labels.isEmpty)
        // A fresh node with such a record cannot be created either.
        let identity = testIdentity("big")
        var big = testRecord("big", index: 9, identity: identity)
        for l in 0..<8 { big.labels["label-\(l)"] = String(repeating: "y", count: 200) }
        #expect(throws: MembershipError.self) {
            _ = try MembershipNode(config: testConfig(), identity: identity, record: big, seed: 1, now: .zero)
        }
    }

    @Test("a crashed node goes alive → suspect → dead on every other node")
    func crashDetected() {
        var (pump, eps) = cluster(5)
        let crashedAt = pump.now
        _ = pump.crash(eps[4])
        pump.run(for: .seconds(30))
        for ep in eps.dropLast() {
            let suspect = pump.events(at: ep, kind: .suspect, name: "n4")
            let dead = pump.events(at: ep, kind: .dead, name: "n4")
            #expect(dead.count == 1, "node \(ep) did not declare n4 dead")
            if let d = dead.first, let s = suspect.first {
                #expect(s.time < d.time)
                #expect(s.time > crashedAt)
            }
            if case .dead = pump.status(of: "n4", at: ep) {} else { Issue.record("n4 not dead at \(ep)") }
        }
        // The survivors never suspected each other.
        #expect(!pump.events.contains { $0.event.kind == .dead && $0.event.member.name != "n4" })
    }

    @Test("a suspected node refutes with a higher incarnation and is never declared dead")
    func refutation() {
        var (pump, eps) = cluster(4)
        // An adversary with the cluster key (not n1's identity key) claims n1 is suspect.
        let claim = forgedPayload([.status(name: "n1", version: 1, status: .suspect(incarnation: 0), from: "mallory")])
        pump.inject(claim, from: testEndpoint(99), to: eps[0])
        pump.run(for: .seconds(10))
        #expect(pump.events(at: eps[0], kind: .suspect, name: "n1").count == 1)
        #expect(pump.nodes[eps[1]]!.localIncarnation >= 1)
        for ep in eps where ep != eps[1] {
            #expect(pump.status(of: "n1", at: ep) == .alive(incarnation: pump.nodes[eps[1]]!.localIncarnation))
        }
        #expect(!pump.events.contains { $0.event.kind == .dead })
        // Lifeguard: refuting raised n1's local health multiplier at least once (it may have recovered since).
        #expect(pump.nodes[eps[1]]!.counters.payloadsSent > 0)
    }

    @Test("a forged dead claim is only a suspicion: the victim refutes it and is declared dead nowhere")
    func forgedDeadRefuted() {
        var (pump, eps) = cluster(4)
        // Repeated, and "confirmed" by made-up claimants: the claimant field is not signed.
        for claimant in ["mallory", "n3", "n4", "eve"] {
            let claim = forgedPayload([.status(name: "n2", version: 1, status: .dead(incarnation: 0), from: claimant)])
            pump.inject(claim, from: testEndpoint(99), to: eps[0])
        }
        pump.run(for: .seconds(15))
        #expect(pump.events(at: eps[0], kind: .suspect, name: "n2").count == 1)
        #expect(!pump.events.contains { $0.event.kind == .dead }, "a node was declared dead on forged claims")
        #expect(pump.allSee { $0.status.isActive })
        #expect(pump.status(of: "n2", at: eps[0])!.incarnation >= 1)
    }

    @Test("forged deaths that follow the victim's incarnation for 10 s, in every member's name, get it declared dead nowhere")
    func forgedDeathsFollowingTheIncarnation() {
        var (pump, eps) = cluster(5)
        for round in 0..<40 {
            // The adversary holds the cluster key, so it reads the victim's current incarnation and
            // claims it dead at that one, in the name of each other member: every refutation is met.
            let inc = pump.status(of: "n2", at: eps[0])?.incarnation ?? 0
            let claims: [WireMessage] = ["n0", "n1", "n3", "n4"].map {
                .status(name: "n2", version: 1, status: .dead(incarnation: inc), from: $0)
            }
            let target = [0, 1, 3, 4][round % 4]
            pump.inject(forgedPayload(claims), from: testEndpoint(99), to: eps[target])
            pump.run(for: .milliseconds(250))
        }
        pump.run(for: .seconds(10))
        #expect(!pump.events.contains { $0.event.kind == .dead }, "\(pump.events.filter { $0.event.kind == .dead }.count) dead events")
        #expect(pump.allSee { $0.status.isActive })
        #expect(pump.status(of: "n2", at: eps[0])!.incarnation >= 2, "the victim refuted again and again")
    }

    @Test("a claim about a node at version 2^64 - 1 sent to that node is ignored, not fatal", arguments: [
        MemberStatus.alive(incarnation: 0), .suspect(incarnation: 0), .dead(incarnation: 0),
    ])
    func absurdVersionAboutSelf(_ status: MemberStatus) {
        var (pump, eps) = cluster(3)
        // Sent to n1 itself: before, n1 tried to continue above UInt64.max and trapped on + 1.
        let claim = forgedPayload([.status(name: "n1", version: .max, status: status, from: "mallory")])
        pump.inject(claim, from: testEndpoint(99), to: eps[1])
        pump.run(for: .seconds(15))
        #expect(pump.nodes[eps[1]]!.localRecord.record.version == 1)
        #expect(pump.allSee { $0.status.isActive })
        #expect(pump.nodes[eps[1]]!.counters.ignoredStale >= 1)
    }

    @Test("records of ever new names stop at maxMembers: the view does not grow without bound")
    func viewIsBounded() throws {
        var config = testConfig()
        config.maxMembers = 6
        var (pump, eps) = cluster(3, config: config)
        for i in 0..<40 {
            let identity = testIdentity("sybil-\(i)")
            let signed = try SignedNodeRecord(signing: testRecord("sybil-\(i)", index: 100 + i, identity: identity), with: identity)
            pump.inject(forgedPayload([.record(signed)]), from: testEndpoint(99), to: eps[0])
        }
        pump.run(for: .seconds(5))
        let node = pump.nodes[eps[0]]!
        #expect(node.members.count == 6)
        #expect(node.counters.rejectedViewFull >= 36)
        // The real members are still there and alive.
        #expect(["n1", "n2"].allSatisfy { node.member(named: $0)?.status.isActive == true })
    }

    @Test("an absurd incarnation in a forged claim is escaped with a new record version")
    func absurdIncarnation() {
        var (pump, eps) = cluster(3)
        let claim = forgedPayload([.status(name: "n2", version: 1, status: .dead(incarnation: UInt64.max), from: "mallory")])
        pump.inject(claim, from: testEndpoint(99), to: eps[2])
        pump.run(for: .seconds(15))
        #expect(pump.nodes[eps[2]]!.localRecord.record.version == 2)
        #expect(pump.version(of: "n2", at: eps[0]) == 2)
        #expect(pump.allSee { $0.status.isActive })
    }

    @Test("graceful leave: others see left, then reap it and keep a tombstone")
    func leaveAndReap() {
        var (pump, eps) = cluster(4)
        pump.with(eps[3]) { node, now in node.leave(now: now) }
        pump.run(for: .seconds(5))
        for ep in eps.dropLast() {
            #expect(pump.status(of: "n3", at: ep) == .left(incarnation: 0))
            #expect(pump.events(at: ep, kind: .left, name: "n3").count == 1)
        }
        #expect(!pump.events.contains { $0.event.kind == .dead })
        pump.run(for: .seconds(70))
        for ep in eps.dropLast() {
            #expect(pump.nodes[ep]!.member(named: "n3") == nil)
            #expect(pump.nodes[ep]!.tombstoneVersions["n3"] == 1)
            #expect(pump.events(at: ep, kind: .reaped, name: "n3").count == 1)
        }
    }

    @Test("a forged leave (not signed by the node) is rejected")
    func forgedLeave() {
        var (pump, eps) = cluster(3)
        let mallory = testIdentity("mallory")
        let sig = mallory.sign(LeaveNotice.signedBytes(name: "n1", identity: mallory.publicKey, version: 1, incarnation: 0))
        let notice = LeaveNotice(name: "n1", version: 1, incarnation: 0, signature: sig)
        pump.inject(forgedPayload([.leave(notice)]), from: testEndpoint(99), to: eps[0])
        pump.run(for: .seconds(3))
        #expect(pump.nodes[eps[0]]!.counters.rejectedBadSignature == 1)
        #expect(pump.status(of: "n1", at: eps[0])?.isActive == true)
        #expect(!pump.events.contains { $0.event.kind == .left })
    }

    @Test("forged records are rejected: wrong signature, or the name bound to another identity")
    func forgedRecords() throws {
        var (pump, eps) = cluster(3)
        let mallory = testIdentity("mallory")
        // 1. n1's record with a higher version and a new WireGuard key, signed by mallory.
        let genuine = pump.nodes[eps[1]]!.localRecord
        var changed = genuine.record
        changed.version = 5
        changed.wireguardKey = try Key(bytes: testBytes("mallory-wg"))
        let encoded = try changed.canonicalEncoding()
        let badSig = SignedNodeRecord(record: changed, encodedRecord: encoded,
                                      signature: mallory.sign(NodeRecord.signingContext + encoded))
        // 2. A record for name n1 under mallory's own identity (validly signed by mallory).
        var hijack = testRecord("n1", index: 66, identity: mallory, version: 9)
        hijack.wireguardKey = try Key(bytes: testBytes("mallory-wg"))
        let hijackSigned = try SignedNodeRecord(signing: hijack, with: mallory)
        pump.inject(forgedPayload([.record(badSig), .record(hijackSigned)]), from: testEndpoint(99), to: eps[0])
        // The same forgery again costs no second signature check.
        pump.inject(forgedPayload([.record(badSig)]), from: testEndpoint(99), to: eps[0])
        pump.run(for: .seconds(3))
        let c = pump.nodes[eps[0]]!.counters
        #expect(c.rejectedBadSignature == 1 && c.rejectedRepeated == 1)
        #expect(c.rejectedIdentityConflict == 1)
        let seen = pump.nodes[eps[0]]!.member(named: "n1")!
        #expect(seen.record == genuine)
        #expect(seen.record.record.wireguardKey == genuine.record.wireguardKey)
    }

    @Test("a record update reaches every node; an older version never replaces it")
    func updateDisseminates() throws {
        var (pump, eps) = cluster(6)
        let oldRecord = pump.nodes[eps[2]]!.localRecord
        var failed: Error?
        pump.with(eps[2]) { node, now in
            do {
                return try node.updateLocalRecord(now: now) { r in
                    r.wireguardEndpoints = [try! Endpoint("198.51.100.7:51820")]
                    r.labels["role"] = "gateway"
                }
            } catch { failed = error; return [] }
        }
        #expect(failed == nil)
        pump.run(for: .seconds(5))
        for ep in eps where ep != eps[2] {
            let m = pump.nodes[ep]!.member(named: "n2")
            #expect(m?.record.record.version == 2)
            #expect(m?.record.record.labels["role"] == "gateway")
            #expect(pump.events(at: ep, kind: .updated, name: "n2").count == 1)
        }
        // Replaying the old record changes nothing.
        pump.inject(forgedPayload([.record(oldRecord)]), from: testEndpoint(99), to: eps[0])
        pump.run(for: .seconds(1))
        #expect(pump.version(of: "n2", at: eps[0]) == 2)
        #expect(pump.nodes[eps[0]]!.counters.ignoredStale >= 1)
    }

    @Test("replaying every datagram of a past minute changes nothing")
    func replayIgnored() {
        var (pump, eps) = cluster(4)
        let captured = pump.sent.filter { $0.to == eps[0] }
        pump.run(for: .seconds(5))
        // n3 updates its record so the replayed traffic is strictly old.
        pump.with(eps[3]) { node, now in (try? node.updateLocalRecord(now: now) { $0.labels["v"] = "2" }) ?? [] }
        pump.run(for: .seconds(10))
        let before = pump.nodes[eps[0]]!.members
        let stalesBefore = pump.nodes[eps[0]]!.counters.ignoredStale
        for c in captured { pump.inject(c.payload, from: c.from, to: eps[0]) }
        pump.run(for: .seconds(1))
        let after = pump.nodes[eps[0]]!.members
        #expect(after.map(\.record) == before.map(\.record))
        #expect(after.map { $0.status.isActive } == before.map { $0.status.isActive })
        #expect(pump.version(of: "n3", at: eps[0]) == 2)
        #expect(pump.nodes[eps[0]]!.counters.ignoredStale > stalesBefore)
        pump.run(for: .seconds(10))
        #expect(pump.allSee { $0.status.isActive })
        #expect(!pump.events.contains { $0.event.kind == .dead })
    }

    @Test("garbage and truncated payloads are counted, never fatal")
    func badPayloads() throws {
        var (pump, eps) = cluster(2)
        var rng = SeededRandom(seed: 9)
        pump.inject([], from: eps[1], to: eps[0])
        for _ in 0..<200 {
            let garbage = (0..<Int.random(in: 1..<1159, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            pump.inject(garbage, from: eps[1], to: eps[0])
        }
        // A truncated TLV header.
        pump.inject([5, 0, 200, 1, 2], from: eps[1], to: eps[0])
        pump.run(for: .seconds(1))
        let c = pump.nodes[eps[0]]!.counters
        #expect(c.droppedMalformed >= 1)
        #expect(c.payloadsReceived >= 202)
        pump.run(for: .seconds(5))
        #expect(pump.allSee { $0.status.isActive })
    }

    @Test("an unknown message type is skipped and the rest of the datagram is handled")
    func unknownMessageHandled() {
        var (pump, eps) = cluster(2)
        let sentBefore = pump.sent.count
        let payload: [UInt8] = [250, 0, 4, 1, 2, 3, 4] + WireFormat.encode(.ping(seq: 77, target: "n0", source: "n1"))
        pump.inject(payload, from: eps[1], to: eps[0])
        pump.run(for: .milliseconds(1))
        #expect(pump.nodes[eps[0]]!.counters.unknownMessagesSkipped == 1)
        let replies = pump.sent[sentBefore...].filter { $0.from == eps[0] && $0.to == eps[1] }
        #expect(replies.contains { messages(in: $0.payload).contains(.ack(seq: 77)) })
    }

    @Test("a node restarted without state rejoins above its old version, also after being reaped")
    func rejoinHigherVersion() {
        var (pump, eps) = cluster(4)
        // n3 bumps its record a few times, then crashes and is declared dead and reaped.
        for i in 0..<3 { pump.with(eps[3]) { node, now in (try? node.updateLocalRecord(now: now) { $0.labels["i"] = "\(i)" }) ?? [] } }
        pump.run(for: .seconds(5))
        #expect(pump.version(of: "n3", at: eps[0]) == 4)
        _ = pump.crash(eps[3])
        pump.run(for: .seconds(90))
        #expect(pump.nodes[eps[0]]!.member(named: "n3") == nil)
        #expect(pump.nodes[eps[0]]!.tombstoneVersions["n3"] == 4)
        // Restart from scratch: version 1, which the tombstone refuses.
        let restarted = pump.add("n3", index: 4)
        pump.join(restarted, seeds: [eps[0]])
        pump.run(for: .seconds(15))
        let v = pump.nodes[restarted]!.localRecord.record.version
        #expect(v > 4)
        for ep in eps.dropLast() {
            #expect(pump.version(of: "n3", at: ep) == v)
            #expect(pump.status(of: "n3", at: ep)?.isActive == true)
        }
    }

    @Test("rejoin after a graceful leave needs and gets a higher record version")
    func rejoinAfterLeave() {
        var (pump, eps) = cluster(3)
        pump.with(eps[2]) { node, now in node.leave(now: now) }
        pump.run(for: .seconds(5))
        #expect(pump.status(of: "n2", at: eps[0]) == .left(incarnation: 0))
        pump.join(eps[2], seeds: [eps[0]])
        pump.run(for: .seconds(10))
        #expect(pump.version(of: "n2", at: eps[0]) == 2)
        #expect(pump.status(of: "n2", at: eps[0])?.isActive == true)
        #expect(pump.events(at: eps[1], kind: .alive, name: "n2").count == 1)
    }

    @Test("a partition declares the other side dead; after the heal every node sees every node alive")
    func partitionHeals() {
        var (pump, eps) = cluster(6)
        let left = Set(eps[0..<3])
        pump.drop = { a, b in left.contains(a) != left.contains(b) }
        pump.run(for: .seconds(40))
        if case .dead = pump.status(of: "n5", at: eps[0]) {} else { Issue.record("partition not detected") }
        #expect(pump.status(of: "n1", at: eps[0])?.isActive == true)
        pump.drop = { _, _ in false }
        pump.run(for: .seconds(20))
        #expect(pump.allSee { $0.status.isActive })
    }

    @Test("Lifeguard: an isolated node raises its local health multiplier; the suspicion timeout shrinks with confirmations")
    func lifeguard() throws {
        var (pump, eps) = cluster(5)
        #expect(pump.nodes[eps[0]]!.localHealthMultiplier == 1)
        let isolated = eps[0]
        pump.drop = { a, _ in a == isolated }
        pump.run(for: .seconds(4))
        #expect(pump.nodes[isolated]!.localHealthMultiplier > 1)

        var s = Suspicion(start: .zero, confirmers: ["a"], k: 3, minimum: .seconds(3), maximum: .seconds(12))
        let none = s.deadline
        s.confirmers.insert("b")
        let one = s.deadline
        s.confirmers.formUnion(["c", "d"])
        let three = s.deadline
        s.confirmers.formUnion(["e", "f"])
        let five = s.deadline
        #expect(none == .seconds(12))
        #expect(one < none && one > three)
        #expect(three == .seconds(3))
        #expect(five == .seconds(3))
    }

    @Test("buddy system: a ping to a suspect carries the suspicion to it")
    func buddyPing() {
        var config = testConfig()
        config.suspicionMultiplier = 20   // keep the suspect alive long enough to be probed again
        var (pump, eps) = cluster(3, config: config)
        let target = eps[2]
        pump.drop = { _, b in b == target }
        let start = pump.sent.count
        pump.run(for: .seconds(4))
        #expect(pump.events(at: eps[0], kind: .suspect, name: "n2").count + pump.events(at: eps[1], kind: .suspect, name: "n2").count > 0)
        let pings = pump.sent[start...].filter { $0.to == target }.map { messages(in: $0.payload) }
        #expect(pings.contains { ms in
            ms.contains { if case .ping(_, "n2", _) = $0 { return true } else { return false } }
                && ms.contains { if case .status("n2", _, .suspect, _) = $0 { return true } else { return false } }
        })
    }

    @Test("anti-entropy pulls only what differs")
    func digestPullsDifference() throws {
        var pump = Pump()
        var config = testConfig()
        config.gossipNodes = 0   // no push gossip: only anti-entropy (and piggybacking) can carry the change
        config.antiEntropyDeadProbability = 0
        var eps: [Endpoint] = []
        for i in 0..<10 { eps.append(pump.add("n\(i)", index: i + 1, config: config)) }
        // Members that exist only as records (they never answer, so they end up dead everywhere).
        var records: [SignedNodeRecord] = eps.map { pump.nodes[$0]!.localRecord }
        for i in 0..<10 {
            let id = testIdentity("m\(i)")
            records.append(try SignedNodeRecord(signing: testRecord("m\(i)", index: 100 + i, identity: id), with: id))
        }
        for ep in eps { pump.with(ep) { node, now in node.seed(with: records, now: now); return node.tick(now: now) } }
        // m7 published version 2; only n0 has it.
        let id7 = testIdentity("m7")
        let v2 = try SignedNodeRecord(signing: testRecord("m7", index: 107, identity: id7, version: 2), with: id7)
        pump.with(eps[0]) { node, now in node.seed(with: [v2], now: now); return [] }
        let start = pump.sent.count
        pump.run(for: .seconds(40))
        for ep in eps { #expect(pump.version(of: "m7", at: ep) == 2) }
        let recordsSent = pump.sent[start...].flatMap { messages(in: $0.payload) }
            .compactMap { m -> String? in if case .record(let r) = m { return r.record.name } else { return nil } }
        #expect(Set(recordsSent) == ["m7"])
        // Digest exchanges did run and found the differences.
        let entries = pump.sent[start...].flatMap { messages(in: $0.payload) }
            .filter { if case .digestEntries = $0 { return true } else { return false } }
        #expect(!entries.isEmpty)
    }

    @Test("seeding a converged view needs no signature checks and no join traffic")
    func seedBootstrap() throws {
        var pump = Pump()
        var eps: [Endpoint] = []
        for i in 0..<10 { eps.append(pump.add("n\(i)", index: i + 1)) }
        let all = eps.map { pump.nodes[$0]!.localRecord }
        for ep in eps { pump.with(ep) { node, now in node.seed(with: all, now: now); return node.tick(now: now) } }
        #expect(pump.allSee { $0.status == .alive(incarnation: 0) })
        pump.run(for: .seconds(20))
        #expect(pump.allSee { $0.status.isActive })
        #expect(eps.allSatisfy { pump.nodes[$0]!.counters.signaturesVerified == 0 })
        #expect(!pump.events.contains { $0.event.kind == .suspect })
    }

    @Test("same seed, same inputs: the same events and the same payload bytes")
    func deterministic() {
        func run() -> (events: [String], sent: [(from: Endpoint, to: Endpoint, payload: [UInt8])]) {
            var (pump, eps) = cluster(5)
            _ = pump.crash(eps[2])
            pump.with(eps[3]) { node, now in (try? node.updateLocalRecord(now: now) { $0.labels["k"] = "v" }) ?? [] }
            pump.run(for: .seconds(20))
            return (pump.events.map { "\($0.at) \($0.time) \($0.event.kind) \($0.event.member.name) \($0.event.member.status) \($0.event.member.since)" },
                    pump.sent)
        }
        let a = run(), b = run()
        #expect(a.events.count > 20)
        #expect(a.events == b.events)
        #expect(a.sent.count == b.sent.count)
        #expect(a.sent.count > 200)
        let differing = zip(a.sent, b.sent).filter { $0.from != $1.from || $0.to != $1.to || $0.payload != $1.payload }
        #expect(differing.isEmpty, "\(differing.count) of \(a.sent.count) payloads differ")
    }
}
