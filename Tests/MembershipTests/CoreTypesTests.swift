import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

/// The types `MembershipNode` composes, each driven on its own (virtual time where time matters).
@Suite("Membership core types: broadcast queue, suspicions, member table")
struct CoreTypesTests {
    // MARK: Broadcast queue

    func key(_ name: String, _ kind: BroadcastKey.Kind = .status) -> BroadcastKey { BroadcastKey(name: name, kind: kind) }

    /// One "message" of `size` bytes whose first byte names it.
    func bytes(_ tag: UInt8, size: Int = 10) -> [UInt8] { [tag] + [UInt8](repeating: 0, count: size - 1) }

    /// The tags of the messages one fill put into a payload of `budget` bytes.
    func send(_ q: inout BroadcastQueue, budget: Int = 1000, limit: Int = 3) -> [UInt8] {
        var payload: [UInt8] = []
        q.fill(&payload, budget: budget, limit: limit)
        return stride(from: 0, to: payload.count, by: 10).map { payload[$0] }
    }

    @Test("broadcasts go out fewest transmissions first, newest first within a tier")
    func broadcastOrder() {
        var q = BroadcastQueue()
        q.enqueue(bytes(1), key: key("a"))
        q.enqueue(bytes(2), key: key("b"))
        #expect(send(&q, budget: 10) == [2], "the newest of the untransmitted first")
        q.enqueue(bytes(3), key: key("c"))
        #expect(send(&q, budget: 20) == [3, 1], "untransmitted ones before b, sent once already")
        #expect(send(&q, budget: 1000) == [1, 3, 2], "one tier now: the last promoted first")
    }

    @Test("each broadcast is sent up to the retransmit limit, once per payload, then dropped")
    func broadcastRetransmitLimit() {
        var q = BroadcastQueue()
        for t in UInt8(1)...5 { q.enqueue(bytes(t), key: key("m\(t)")) }
        var sent: [UInt8: Int] = [:]
        for _ in 0..<10 {
            let tags = send(&q, limit: 3)
            #expect(Set(tags).count == tags.count, "a payload carried a broadcast twice: \(tags)")
            for t in tags { sent[t, default: 0] += 1 }
        }
        #expect(sent == [1: 3, 2: 3, 3: 3, 4: 3, 5: 3])
        #expect(q.isEmpty)
    }

    @Test("a newer update of the same key replaces the queued one; a removed key is never sent")
    func broadcastReplaceAndRemove() {
        var q = BroadcastQueue()
        q.enqueue(bytes(1), key: key("a"))
        _ = send(&q)
        q.enqueue(bytes(2), key: key("a"))
        q.enqueue(bytes(3), key: key("b", .record))
        q.enqueue(bytes(4), key: key("b"))
        q.remove(key("b", .record))
        #expect(q.count == 2)
        #expect(send(&q) == [4, 2], "the replacement starts over with no transmissions; 1 and 3 are gone")
        q.removeAll()
        #expect(send(&q).isEmpty)
    }

    @Test("broadcasts that do not fit are skipped for smaller ones, and stay queued")
    func broadcastBudget() {
        var q = BroadcastQueue()
        q.enqueue(bytes(1, size: 10), key: key("small"))
        q.enqueue(bytes(2, size: 50), key: key("big"))
        var payload = [UInt8](repeating: 9, count: 80)
        q.fill(&payload, budget: 100, limit: 3)
        #expect(payload.count == 90 && payload[80] == 1)
        #expect(q.entries[key("big")]?.transmits == 0)
        #expect(q.entries[key("small")]?.transmits == 1)
    }

    // MARK: Suspicions

    let t0 = Instant.seconds(100)

    @Test("a suspicion times out at its maximum unconfirmed and shrinks to its minimum with k confirmations")
    func suspicionTimeouts() {
        var s = Suspicions()
        s.start("x", claimant: "a", now: t0, k: 3, minimum: .seconds(6), maximum: .seconds(24))
        #expect(s["x"]?.deadline == t0 + .seconds(24))
        #expect(s.nextCheck == t0 + .seconds(24))
        #expect(s.confirm("x", by: "a") == nil, "the first claimant does not confirm its own suspicion")
        #expect(s.confirm("x", by: "b") == true)
        // max − (max − min) · log(2) / log(4) = 24 − 18 / 2 = 15 s (to the series' precision)
        let after1 = s["x"]!.deadline.nanoseconds - (t0 + .seconds(15)).nanoseconds
        #expect(abs(after1) < 1000)
        #expect(s.confirm("x", by: "b") == nil, "a confirmer counts once")
        #expect(s.confirm("x", by: "c") == true)
        #expect(s.confirm("x", by: "d") == true)
        #expect(s["x"]?.deadline == t0 + .seconds(6))
        #expect(s.nextCheck == t0 + .seconds(6))
        #expect(s.confirm("x", by: "e") == false, "beyond k: still counted, no longer worth gossiping")
        #expect(s["x"]?.deadline == t0 + .seconds(6), "never below the minimum")
        #expect(s.confirm("nobody", by: "a") == nil)
        s.start("y", claimant: "a", now: t0, k: 0, minimum: .seconds(6), maximum: .seconds(24))
        #expect(s["y"]?.deadline == t0 + .seconds(6), "k = 0 (a small cluster): the minimum at once")
    }

    @Test("expiry returns the due suspects in name order and batches later checks")
    func suspicionExpiry() {
        var s = Suspicions()
        s.start("c", claimant: "a", now: t0, k: 0, minimum: .seconds(5), maximum: .seconds(5))
        s.start("b", claimant: "a", now: t0, k: 0, minimum: .seconds(5), maximum: .seconds(5))
        s.start("d", claimant: "a", now: t0 + .milliseconds(50), k: 0, minimum: .seconds(5), maximum: .seconds(5))
        s.start("e", claimant: "a", now: t0, k: 0, minimum: .seconds(9), maximum: .seconds(9))
        s.start("gone", claimant: "a", now: t0, k: 0, minimum: .seconds(1), maximum: .seconds(1))
        s.clear("gone")
        #expect(s.expire(now: t0 + .seconds(1)).dead == [], "a cleared suspicion never expires")
        #expect(s.nextCheck == t0 + .seconds(5))
        #expect(s.expire(now: t0 + .seconds(4)).dead == [], "not yet due: nothing happens")
        let due = s.expire(now: t0 + .seconds(5)).dead
        #expect(due == ["b", "c"])
        #expect(s.nextCheck == t0 + .seconds(5) + .milliseconds(100), "d (due 50 ms later) waits for the 100 ms batch")
        for name in due { s.clear(name) }
        #expect(s.expire(now: t0 + .seconds(5) + .milliseconds(100)).dead == ["d"])
        #expect(s.nextCheck == t0 + .seconds(9))
        s.clear("d")
        #expect(s.expire(now: t0 + .seconds(9)).dead == ["e"])
    }

    @Test("a suspicion is checked with the suspect a lead and half a lead before its deadline, which does not move")
    func suspicionChecks() {
        var s = Suspicions()
        s.checkLead = .seconds(1)
        s.start("x", claimant: "a", now: t0, k: 0, minimum: .seconds(5), maximum: .seconds(5))
        #expect(s.nextCheck == t0 + .seconds(4))
        #expect(s.expire(now: t0 + .seconds(3)) == ([], []))
        #expect(s.expire(now: t0 + .seconds(4)) == ([], ["x"]))
        #expect(s.nextCheck == t0 + .milliseconds(4500))
        #expect(s.expire(now: t0 + .milliseconds(4500)) == ([], ["x"]))
        #expect(s.nextCheck == t0 + .seconds(5), "two checks at most")
        #expect(s.expire(now: t0 + .seconds(5)) == (["x"], []))
    }

    // MARK: Member table

    func state(_ name: String, index: Int, version: UInt64 = 1, status: MemberStatus = .alive(incarnation: 0)) -> MemberState {
        let identity = testIdentity(name)
        let signed = try! SignedNodeRecord(signing: testRecord(name, index: index, identity: identity, version: version), with: identity)
        return MemberState(signed: signed, status: status, since: .zero, hash: stableNameHash(name))
    }

    func table(_ buckets: Int = 8) -> MemberTable {
        MemberTable(buckets: buckets, localHash: stableNameHash("me"), localVersion: 1, localStatus: .alive(incarnation: 0))
    }

    @Test("the digest depends on the members' states, not on the order they were stored in")
    func tableDigest() {
        let names = (0..<20).map { "m\($0)" }
        var a = table(), b = table()
        for (i, n) in names.enumerated() { a.store(n, state(n, index: i)) }
        for (i, n) in names.enumerated().reversed() { b.store(n, state(n, index: i)) }
        #expect(a.summary == b.summary)
        let settled = a.summary
        a.store("m3", state("m3", index: 3, status: .suspect(incarnation: 0)))
        #expect(a.summary != settled)
        let changed = a.summary.indices.filter { a.summary[$0] != settled[$0] }
        #expect(changed == [a.bucket(of: stableNameHash("m3"))], "only m3's bucket moves")
        a.store("m3", state("m3", index: 3))
        #expect(a.summary == settled)
        a.store("extra", state("extra", index: 30))
        a.remove("extra")
        #expect(a.summary == settled)
        a.setLocal(version: 2, status: .alive(incarnation: 0))
        #expect(a.summary != settled, "this node's own entry is part of the digest")
        a.setLocal(version: 1, status: .alive(incarnation: 0))
        #expect(a.summary == settled)
    }

    @Test("a bucket lists its entries in name-hash order, inside its range, this node included")
    func tableBuckets() {
        var t = table(4)
        for i in 0..<40 { t.store("m\(i)", state("m\(i)", index: i, version: UInt64(i + 1))) }
        let me = DigestEntry(nameHash: t.localHash, version: 7, status: .alive(incarnation: 2))
        var total = 0
        for b in 0..<4 {
            let entries = t.entries(inBucket: b, local: me)
            total += entries.count
            #expect(entries.map(\.nameHash) == entries.map(\.nameHash).sorted())
            #expect(entries.allSatisfy { t.range(ofBucket: b).contains($0.nameHash) })
            #expect(entries.contains(me) == (b == t.bucket(of: me.nameHash)))
        }
        #expect(total == 41)
        #expect(t.name(forHash: stableNameHash("m7")) == "m7")
        #expect(t.entries(inBucket: t.bucket(of: stableNameHash("m7")), local: me).contains {
            $0.nameHash == stableNameHash("m7") && $0.version == 8 })
    }

    @Test("status sets, counts, names and the generation follow every store and removal")
    func tableBookkeeping() {
        var t = table()
        #expect(t.generation == 0)
        for i in 0..<5 { t.store("m\(i)", state("m\(i)", index: i)) }
        t.store("m1", state("m1", index: 1, status: .dead(incarnation: 0)))
        t.store("m2", state("m2", index: 2, status: .suspect(incarnation: 0)))
        #expect(t.activeCount == 4)
        #expect(t.inactive == ["m1"])
        #expect(t.generation == 7)
        t.remove("m0")
        t.remove("m1")
        #expect(t.remove("never") == nil)
        #expect(t.generation == 9, "removing an unknown name changes nothing")
        #expect(Set(t.names) == ["m2", "m3", "m4"] && t.names.count == 3)
        #expect(t.inactive.isEmpty && t.activeCount == 3 && t.count == 3)
        #expect(t.name(forHash: stableNameHash("m0")) == nil)
    }

    @Test("after any sequence of stores and removals every lookup, bucket and count agrees with the members held")
    func tableRandomOperations() {
        var rng = SeededRandom(seed: 11)
        let pool = (0..<120).map { "m\($0)" }
        let states: [MemberStatus] = [.alive(incarnation: 0), .suspect(incarnation: 1), .dead(incarnation: 1), .left(incarnation: 2)]
        var t = table(4)
        var model: [String: (version: UInt64, status: MemberStatus)] = [:]
        for step in 0..<3000 {
            let i = Int(rng.next() % UInt64(pool.count))
            let name = pool[i]
            if rng.next() % 3 == 0 {
                let removed = t.remove(name)
                #expect((removed != nil) == (model[name] != nil))
                model[name] = nil
            } else {
                let version = rng.next() % 4 + 1, status = states[Int(rng.next() % 4)]
                t.store(name, state(name, index: i, version: version, status: status))
                model[name] = (version, status)
            }
            guard step % 50 == 0 || step == 2999 else { continue }
            #expect(t.count == model.count)
            #expect(Set(t.names) == Set(model.keys) && t.names.count == model.count)
            #expect(t.activeCount == model.values.filter { $0.status.isActive }.count)
            #expect(t.inactive == Set(model.filter { !$0.value.status.isActive }.keys))
            for name in pool {
                let held = t[name]
                #expect(held?.signed.record.version == model[name]?.version && held?.status == model[name]?.status, "\(name)")
                #expect(t.name(forHash: stableNameHash(name)) == (model[name] == nil ? nil : name))
            }
            let me = DigestEntry(nameHash: t.localHash, version: 1, status: .alive(incarnation: 0))
            var listed: [UInt64: DigestEntry] = [:]
            for b in 0..<4 {
                for e in t.entries(inBucket: b, local: me) where e.nameHash != me.nameHash { listed[e.nameHash] = e }
            }
            #expect(listed.count == model.count)
            for (name, m) in model {
                #expect(listed[stableNameHash(name)] == DigestEntry(nameHash: stableNameHash(name), version: m.version, status: m.status))
            }
            var fresh = table(4)
            for (name, m) in model.sorted(by: { $0.key < $1.key }) {
                fresh.store(name, state(name, index: Int(name.dropFirst())!, version: m.version, status: m.status))
            }
            #expect(t.summary == fresh.summary)
        }
    }

    @Test("a seeded view enters the probe order as if each member was inserted one by one")
    func probeOrderBatch() throws {
        let identity = testIdentity("prober")
        for (already, cursor, added) in [(0, 0, 500), (7, 3, 1), (40, 17, 300), (1, 1, 2)] {
            var one = try MembershipNode(config: testConfig(), identity: identity,
                                         record: testRecord("prober", index: 0, identity: identity), seed: 99, now: .zero)
            one.probeOrder = (0..<already).map { "old\($0)" }
            one.probeIndex = cursor
            var batch = one
            let names = (0..<added).map { "new\($0)" }
            for name in names { one.insertIntoProbeOrder(name) }
            batch.insertIntoProbeOrder(names)
            #expect(batch.probeOrder == one.probeOrder, "\(already) members, \(added) added")
            #expect(batch.probeIndex == one.probeIndex)
            #expect(batch.rng.next() == one.rng.next(), "the same draws")
        }
    }
}
