import IPNetwork
import Membership
import MeshPlan
import Testing
import WireGuard
import WireMeshCrypto
@testable import WireMeshAgent

/// Injected time: a fixed origin plus virtual seconds (nothing sleeps).
private let origin = ContinuousClock.now
private func at(_ seconds: Int) -> ContinuousClock.Instant { origin + .seconds(seconds) }
/// Virtual wall clock for handshakes (seconds since the epoch) at virtual second 0.
private let wall0: Int64 = 1_750_000_000

private func peer(_ key: Key, rx: UInt64, handshakeAt: Int64? = wall0) -> Peer {
    Peer(publicKey: key, lastHandshake: handshakeAt.map { ($0, 0) }, receiveBytes: rx)
}

private func deadMember(_ name: String, key: Key) throws -> Member {
    let identity = SigningIdentity.generate()
    let record = NodeRecord(name: name, identity: identity.publicKey, wireguardKey: key,
                            gossipAddress: try Endpoint("192.0.2.1:7946"), podCIDRs: [try IPPrefix("10.244.2.0/24")])
    return Member(record: try SignedNodeRecord(signing: record, with: identity), status: .dead(incarnation: 1),
                  since: Instant(nanoseconds: 0))
}

@Suite("Data plane liveness across reconcile passes")
struct DataPlaneLivenessTests {
    let key = Key.generatePrivate().publicKey()

    /// Observes `peers` at virtual second `second` and returns the receive idle time of `key` then.
    func idle(_ tracker: inout DataPlaneLiveness, _ peers: [Peer], at second: Int) -> Double? {
        tracker.observe(peers, at: at(second))
        return tracker.sighting(of: key, at: at(second))?.receiveIdle
    }

    @Test func aMovingCounterIsSeenAsJustReceivedAndAStalledOneAges() {
        var tracker = DataPlaneLiveness()
        // First sight: history unknown, counts as just received.
        #expect(idle(&tracker, [peer(key, rx: 100)], at: 0) == 0)
        #expect(idle(&tracker, [peer(key, rx: 5000)], at: 10) == 0)
        #expect(idle(&tracker, [peer(key, rx: 5000)], at: 20) == 10)
        #expect(idle(&tracker, [peer(key, rx: 5000)], at: 45) == 35)
        // Between passes the idle time grows with the clock alone.
        #expect(tracker.sighting(of: key, at: at(47))?.receiveIdle == 37)
        #expect(idle(&tracker, [peer(key, rx: 5092)], at: 50) == 0)
    }

    @Test func handshakeTimesPassThroughAndZeroMeansNone() {
        var tracker = DataPlaneLiveness()
        let other = Key.generatePrivate().publicKey()
        tracker.observe([peer(key, rx: 1, handshakeAt: wall0 - 7), peer(other, rx: 0, handshakeAt: 0)], at: at(0))
        #expect(tracker.sighting(of: key, at: at(0))?.lastHandshake == Double(wall0 - 7))
        #expect(tracker.sighting(of: other, at: at(0)) == DataPlaneSighting(lastHandshake: nil, receiveIdle: 0))
        // A new handshake with an unchanged counter is taken as it is.
        tracker.observe([peer(key, rx: 1, handshakeAt: wall0 + 120)], at: at(5))
        #expect(tracker.sighting(of: key, at: at(5)) == DataPlaneSighting(lastHandshake: Double(wall0 + 120), receiveIdle: 5))
    }

    @Test func aPeerGoneFromTheDeviceIsForgottenAndAResetCounterIsANewStart() {
        var tracker = DataPlaneLiveness()
        let other = Key.generatePrivate().publicKey()
        #expect(idle(&tracker, [peer(key, rx: 900), peer(other, rx: 1)], at: 0) == 0)
        #expect(idle(&tracker, [peer(key, rx: 900), peer(other, rx: 1)], at: 40) == 40)
        #expect(idle(&tracker, [peer(other, rx: 1)], at: 50) == nil)
        #expect(tracker.sighting(of: other, at: at(50))?.receiveIdle == 50)
        // Back on the device (re-added): seen for the first time again.
        #expect(idle(&tracker, [peer(key, rx: 900)], at: 60) == 0)
        #expect(tracker.sighting(of: other, at: at(60)) == nil)
        // A counter that went down (peer re-created) starts over as well.
        #expect(idle(&tracker, [peer(key, rx: 900)], at: 90) == 30)
        #expect(idle(&tracker, [peer(key, rx: 12)], at: 100) == 0)
    }

    /// The restart the rule is for: gossip says dead, the counter keeps moving, the peer stays; the
    /// host then dies, its counter stops, and it goes once the window has passed.
    @Test func aDeadMemberIsKeptWhileReceivingAndDroppedOnceItsCounterStalls() throws {
        var tracker = DataPlaneLiveness()
        let dead = try deadMember("node2", key: key)
        func pass(_ second: Int, rx: UInt64) -> (started: [String], stopped: [String]) {
            tracker.update(device: [peer(key, rx: rx, handshakeAt: wall0 + Int64(second) - 5)], members: [dead],
                           localName: "node1", at: at(second), wallClock: Double(wall0 + Int64(second)))
        }
        #expect(pass(0, rx: 10_000) == (["node2"], []))
        #expect(tracker.kept == ["node2"])
        for (i, second) in [10, 20, 30, 40].enumerated() {
            #expect(pass(second, rx: 10_000 + UInt64(i + 1) * 96_000) == ([], []))
        }
        #expect(tracker.kept == ["node2"])
        // The host died after the pass at 40 s: the counter stays put.
        #expect(pass(50, rx: 394_000) == ([], []))
        #expect(pass(60, rx: 394_000) == ([], []))
        #expect(pass(70, rx: 394_000) == ([], ["node2"]))
        #expect(tracker.kept.isEmpty)
    }

    /// The wall clock stepped an hour ahead (or back) after the handshake was seen: the session is
    /// as old as the monotonic clock says, so a dead member with traffic stays until its handshake is
    /// really 180 s old (issue 12: at +1 h its handshake looked an hour old and the peer was dropped).
    @Test func aWallClockStepNeitherAgesNorRenewsAHandshake() throws {
        for step in [Int64(3600), -3600] {
            var tracker = DataPlaneLiveness()
            let dead = try deadMember("node2", key: key)
            func pass(_ second: Int, rx: UInt64, stepped: Bool = true) -> (started: [String], stopped: [String]) {
                tracker.update(device: [peer(key, rx: rx, handshakeAt: wall0 - 5)], members: [dead], localName: "node1",
                               at: at(second), wallClock: Double(wall0 + Int64(second) + (stepped ? step : 0)))
            }
            #expect(pass(0, rx: 1000, stepped: false) == (["node2"], []))
            #expect(pass(10, rx: 2000) == ([], []), "step \(step): a live session 15 s old")
            #expect(pass(170, rx: 3000) == ([], []), "step \(step): 175 s old, still current")
            #expect(pass(180, rx: 4000) == ([], ["node2"]), "step \(step): 185 s without a new handshake")
        }
    }

    @Test func anIdleDeadMemberIsNotKept() throws {
        var tracker = DataPlaneLiveness()
        let dead = try deadMember("node3", key: key)
        tracker.observe([peer(key, rx: 500)], at: at(0))
        let change = tracker.update(device: [peer(key, rx: 500)], members: [dead], localName: "node1", at: at(30),
                                    wallClock: Double(wall0 + 30))
        #expect(change == ([], []))
        #expect(tracker.kept.isEmpty)
    }
}
