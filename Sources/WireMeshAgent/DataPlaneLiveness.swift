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
        /// Seconds since the epoch; nil for none.
        var lastHandshake: Double?
        /// The `observe` call that last saw the peer (to forget the ones gone from the device).
        var pass: UInt64
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
    mutating func observe(_ device: [Peer], at now: ContinuousClock.Instant) {
        pass &+= 1
        for peer in device {
            let handshake = Self.seconds(peer.lastHandshake)
            if let entry = peers[peer.publicKey], entry.receiveBytes == peer.receiveBytes {
                peers[peer.publicKey]!.lastHandshake = handshake
                peers[peer.publicKey]!.pass = pass
            } else {
                peers[peer.publicKey] = Entry(receiveBytes: peer.receiveBytes, movedAt: now, lastHandshake: handshake, pass: pass)
            }
        }
        if peers.count > device.count { peers = peers.filter { $0.value.pass == pass } }
    }

    /// What the device showed of the peer with `key` at the last `observe`, with its receive idle
    /// time as of `now` (nil when the peer is not on the device).
    func sighting(of key: Key, at now: ContinuousClock.Instant) -> DataPlaneSighting? {
        guard let entry = peers[key] else { return nil }
        return DataPlaneSighting(lastHandshake: entry.lastHandshake, receiveIdle: Self.seconds(now - entry.movedAt))
    }

    /// Observes the device and decides which dead members keep their peer; returns the names that
    /// started and stopped being kept (for the log).
    mutating func update(device: [Peer], members: [Member], localName: String,
                         at now: ContinuousClock.Instant, wallClock: Double) -> (started: [String], stopped: [String]) {
        observe(device, at: now)
        var sightings: [Key: DataPlaneSighting] = [:]
        for member in members {
            guard case .dead = member.status else { continue }
            let key = member.record.record.wireguardKey
            sightings[key] = sighting(of: key, at: now)
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
