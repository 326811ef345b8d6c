import Foundation
import Membership
import MeshPlan
import WireGuard
import WireMeshCrypto

/// Tracks, across reconcile passes, when each WireGuard peer's receive counter last moved (on a
/// monotonic clock), and which dead members keep their peer because of it
/// (`MeshPlanner.deadMembersKept`).
///
/// The device only reports a byte count; whether it moved is known by comparing passes, so the
/// precision is the reconcile period (10 s resync, or sooner on a membership event).
struct DataPlaneLiveness: Sendable {
    struct Entry: Sendable {
        var receiveBytes: UInt64
        /// When `receiveBytes` was first seen at its current value.
        var movedAt: ContinuousClock.Instant
        /// Seconds since the epoch, as the device reports it; nil for none.
        var lastHandshake: Double?
        /// The `observe` call that last saw the peer (to forget the ones gone from the device).
        var pass: UInt64
        /// When `lastHandshake` took its current value, on the monotonic clock, and how old the
        /// handshake was then: its age is measured from here, so a step of the wall clock (NTP, an
        /// operator, a VM resumed) neither ages a live session nor keeps a stale one. Only a handshake
        /// first seen with this pass uses the wall clock (the device's time against ours); one that
        /// changed between two passes happened since the previous one (age 0, at most a resync off).
        var handshakeSeen: (at: ContinuousClock.Instant, age: Double)?
    }

    /// Per public key of a peer on the device. Updated in place: with a thousand peers a pass must
    /// not allocate a table per resync.
    private var peers: [Key: Entry] = [:]
    private var pass: UInt64 = 0
    /// Dead members whose peer stays, as of the last `update` (an input of the plan).
    private(set) var kept: Set<String> = []
    var rule = DataPlaneLivenessRule()

    /// Records the device's peers as read at `now`.
    ///
    /// A peer seen for the first time (this agent just started, or the peer is new) counts as having
    /// just received: its history is unknown, and a dead member is then kept for at most one window
    /// unless its counter moves. A counter that changed in any direction (a re-created peer starts
    /// at 0) counts as a move; keeping needs a current handshake as well.
    ///
    /// `wallClock` (seconds since the epoch, now) dates a handshake seen for the first time; without it
    /// handshake times are only passed through (`sighting` then reports them as the device did).
    mutating func observe(_ device: [Peer], at now: ContinuousClock.Instant, wallClock: Double? = nil) {
        pass &+= 1
        for peer in device {
            let handshake = Self.seconds(peer.lastHandshake)
            let previous = peers[peer.publicKey]
            let seen: (at: ContinuousClock.Instant, age: Double)?
            if let previous, previous.lastHandshake == handshake {
                seen = previous.handshakeSeen
            } else if let handshake {
                if previous != nil { seen = (now, 0) } else { seen = wallClock.map { (now, max(0, $0 - handshake)) } }
            } else {
                seen = nil
            }
            if let previous, previous.receiveBytes == peer.receiveBytes {
                peers[peer.publicKey]!.lastHandshake = handshake
                peers[peer.publicKey]!.handshakeSeen = seen
                peers[peer.publicKey]!.pass = pass
            } else {
                peers[peer.publicKey] = Entry(receiveBytes: peer.receiveBytes, movedAt: now, lastHandshake: handshake, pass: pass,
                                              handshakeSeen: seen)
            }
        }
        if peers.count > device.count { peers = peers.filter { $0.value.pass == pass } }
    }

    /// What the device showed of the peer with `key` at the last `observe`, with its receive idle
    /// time as of `now` (nil when the peer is not on the device). With `wallClock` the handshake time
    /// is `wallClock` minus the handshake's age measured on the monotonic clock (see `Entry`), so the
    /// rule's `wallClock - lastHandshake` is that age whatever the wall clock did since.
    func sighting(of key: Key, at now: ContinuousClock.Instant, wallClock: Double? = nil) -> DataPlaneSighting? {
        guard let entry = peers[key] else { return nil }
        var handshake = entry.lastHandshake
        if let wallClock, let seen = entry.handshakeSeen { handshake = wallClock - (seen.age + Self.seconds(now - seen.at)) }
        return DataPlaneSighting(lastHandshake: handshake, receiveIdle: Self.seconds(now - entry.movedAt))
    }

    /// Observes the device and decides which dead members keep their peer; returns the names that
    /// started and stopped being kept (for the log).
    mutating func update(device: [Peer], members: [Member], localName: String,
                         at now: ContinuousClock.Instant, wallClock: Double) -> (started: [String], stopped: [String]) {
        observe(device, at: now, wallClock: wallClock)
        var sightings: [Key: DataPlaneSighting] = [:]
        for member in members {
            guard case .dead = member.status else { continue }
            let key = member.record.record.wireguardKey
            sightings[key] = sighting(of: key, at: now, wallClock: wallClock)
        }
        let next = MeshPlanner.deadMembersKept(members: members, localName: localName, sightings: sightings,
                                               now: wallClock, rule: rule)
        let change = (started: next.subtracting(kept).sorted(), stopped: kept.subtracting(next).sorted())
        kept = next
        return change
    }

    /// A handshake time as seconds since the epoch; nil for none (the kernel reports zero).
    static func seconds(_ handshake: (seconds: Int64, nanoseconds: Int64)?) -> Double? {
        guard let handshake, handshake.seconds > 0 else { return nil }
        return Double(handshake.seconds) + Double(handshake.nanoseconds) / 1e9
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}

extension Agent {
    /// Feeds the device as just read back into the liveness tracking, before planning: the plan keeps
    /// the peers of dead members whose data plane is alive (see `DataPlaneLivenessRule`).
    func observeDataPlane(_ device: Device, members: [Member]) {
        let (started, stopped) = dataPlane.update(device: device.peers, members: members, localName: state.node.name,
                                                  at: clock.monotonic(), wallClock: clock.wall().timeIntervalSince1970)
        for name in started {
            logger.notice("member is dead in gossip but its WireGuard data plane is alive: keeping its peer",
                          metadata: ["node": "\(name)"])
        }
        for name in stopped where members.contains(where: { $0.name == name && !$0.status.isActive }) {
            logger.notice("removing the peer of a dead member: no data received or no current handshake",
                          metadata: ["node": "\(name)", "receive_window_s": "\(dataPlane.rule.receiveWindow)"])
        }
        // The saved member list includes kept members (a restart of this agent must not drop them):
        // save it again when that set changed, even if the view did not.
        if !started.isEmpty || !stopped.isEmpty { lastSavedGeneration = nil }
    }
}
