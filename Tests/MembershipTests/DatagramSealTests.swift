import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

/// The shells' sealing of the core's payloads (the UDP transport and the simulator use it).
@Suite("Datagram seal: the core's payloads on the wire")
struct DatagramSealTests {
    let otherKey = ClusterKey(key: try! Key(bytes: testBytes("other key")))

    @Test("datagrams: sealed with the cluster id, rejected when oversized, truncated, of another version or key")
    func datagramChecks() throws {
        let dg = sealedDatagram([.ack(seq: 1)])
        #expect(dg.count == DatagramSeal.overhead + 7)
        guard case .success(let ok) = DatagramSeal.decode(dg, keyring: testKeyring, clusterID: testClusterID) else {
            Issue.record("a valid datagram did not open"); return
        }
        #expect(ok.messages == [.ack(seq: 1)])
        #expect(DatagramSeal.decode(dg, keyring: testKeyring, clusterID: Array("other".utf8)) == .failure(.authFailed))
        let other = Keyring(primary: otherKey)
        #expect(DatagramSeal.decode(dg, keyring: other, clusterID: testClusterID) == .failure(.authFailed))
        var v2 = dg
        v2[0] = 2
        #expect(DatagramSeal.decode(v2, keyring: testKeyring, clusterID: testClusterID) == .failure(.badVersion))
        #expect(DatagramSeal.decode(Array(dg[0..<20]), keyring: testKeyring, clusterID: testClusterID) == .failure(.truncated))
        #expect(DatagramSeal.decode([UInt8](repeating: 1, count: 1201), keyring: testKeyring, clusterID: testClusterID) == .failure(.oversized))
        // Rotation: a keyring holding old and new keys opens both.
        var rotated = other
        rotated.install(testClusterKey)
        guard case .success = DatagramSeal.decode(dg, keyring: rotated, clusterID: testClusterID) else {
            Issue.record("an installed secondary key did not open"); return
        }
    }

    @Test("every refused datagram is counted by reason, and the core never sees it")
    func refusalsAreCounted() throws {
        var seal = DatagramSeal(keyring: testKeyring, clusterID: testClusterID)
        let valid = sealedDatagram([.ping(seq: 1, target: "n0", source: "n1")])
        var wrongVersion = valid
        wrongVersion[0] = 9
        var tampered = valid
        tampered[tampered.count - 1] ^= 1
        var rng = SeededRandom(seed: 9)
        #expect(seal.open(sealedDatagram([.ack(seq: 1)], keyring: Keyring(primary: otherKey)), now: .zero) == nil)
        #expect(seal.open(tampered, now: .zero) == nil)
        #expect(seal.open(wrongVersion, now: .zero) == nil)
        #expect(seal.open(Array(valid[0..<10]), now: .zero) == nil)
        #expect(seal.open([], now: .zero) == nil)
        #expect(seal.open([UInt8](repeating: 1, count: 1500), now: .zero) == nil)
        for _ in 0..<200 {
            let garbage = (0..<Int.random(in: 41..<1200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(seal.open([1] + garbage, now: .zero) == nil)
        }
        let opened = seal.open(valid, now: .zero)
        #expect(opened.map { messages(in: $0.payload) } == [.ping(seq: 1, target: "n0", source: "n1")])
        let c = seal.counters
        #expect(c.droppedAuthFailed == 202)
        #expect(c.droppedBadVersion == 1)
        #expect(c.droppedTruncated == 2)
        #expect(c.droppedOversized == 1)
        #expect(c.datagramsReceived == 207)
        #expect(c.openedWithOtherKey == 0)
    }

    @Test("sealing adds exactly the overhead the core budgets for, so a full payload is a 1200-byte datagram")
    func overheadMatchesTheCoreBudget() {
        var seal = DatagramSeal(keyring: testKeyring, clusterID: testClusterID)
        let config = MembershipConfig.wiremeshDefaults
        #expect(config.sealOverhead == DatagramSeal.overhead)
        let payload = [UInt8](repeating: 7, count: config.maxDatagram - config.sealOverhead)
        let datagram = seal.seal(payload)
        #expect(datagram.count == config.maxDatagram)
        #expect(seal.counters.datagramsSent == 1 && seal.counters.bytesSent == 1200)
        #expect(seal.open(datagram, now: .zero)?.payload == payload)
        #expect(seal.open(datagram + [0], now: .zero) == nil, "one byte more is refused")
    }

    @Test("during a rotation: seals with the primary, opens with any installed key and tells which")
    func rotationKeys() {
        let old = testClusterKey, new = otherKey
        var before = DatagramSeal(keyring: Keyring(primary: old), clusterID: testClusterID)
        var after = DatagramSeal(keyring: Keyring(primary: new, others: [old]), clusterID: testClusterID)
        let fromOld = before.seal([3, 0, 4, 0, 0, 0, 1])
        let fromNew = after.seal([3, 0, 4, 0, 0, 0, 2])
        #expect(after.open(fromOld, now: .zero)?.keyIndex == 1)
        #expect(after.open(fromNew, now: .zero)?.keyIndex == 0)
        #expect(after.counters.openedWithOtherKey == 1)
        #expect(before.open(fromNew, now: .zero) == nil, "a node without the new key cannot read it")
        #expect(before.counters.droppedAuthFailed == 1)
        // Once the old key is removed, what it sealed no longer opens.
        after.keyring.remove(old)
        #expect(after.open(fromOld, now: .zero) == nil)
    }

    @Test func aDatagramOpenedBeforeIsDroppedAsAReplayForAtLeastAWindow() {
        var sender = DatagramSeal(keyring: Keyring(primary: testClusterKey), clusterID: testClusterID)
        var receiver = DatagramSeal(keyring: Keyring(primary: testClusterKey), clusterID: testClusterID)
        let ping = sender.seal([3, 0, 4, 0, 0, 0, 1])
        #expect(receiver.open(ping, now: .seconds(1)) != nil)
        #expect(receiver.open(ping, now: .seconds(2)) == nil)
        #expect(receiver.open(ping, now: .seconds(60)) == nil, "still within the window (one generation back)")
        #expect(receiver.counters.droppedReplayed == 2)
        // A fresh datagram with the same payload has a fresh nonce: it opens.
        #expect(receiver.open(sender.seal([3, 0, 4, 0, 0, 0, 1]), now: .seconds(61)) != nil)
        // A garbage datagram takes no place in the filter (only authentic ones do).
        _ = receiver.open([1] + [UInt8](repeating: 7, count: 60), now: .seconds(62))
        #expect(receiver.replays.count == 2)
    }

    @Test func theReplayFilterStaysBoundedUnderAFloodOfFreshNonces() {
        var filter = ReplayFilter(window: .seconds(60), capacity: 1000)
        var rng = SystemRandomNumberGenerator()
        for i in 0..<10_000 {
            let nonce = (0..<24).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let fresh = filter.admit(nonce: nonce, now: .seconds(Double(i) / 1000))
            #expect(fresh && filter.count <= 2000)
        }
        let seen = [UInt8](repeating: 9, count: 24)
        let first = filter.admit(nonce: seen, now: .seconds(20))
        let again = filter.admit(nonce: seen, now: .seconds(21))
        // A quiet filter turns over lazily: one window on, the nonce is one generation back, still caught;
        // the next turn forgets it (an old replay reaches the core, which ignores stale claims).
        let later = filter.admit(nonce: seen, now: .seconds(200))
        let forgotten = filter.admit(nonce: seen, now: .seconds(400))
        #expect(first && !again && !later && forgotten)
    }
}
