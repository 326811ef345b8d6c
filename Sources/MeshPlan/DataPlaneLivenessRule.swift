import Membership
import WireMeshCrypto

/// What the WireGuard device shows of one peer's data plane, as the reconciler observed it.
///
/// Times are inputs: the planner reads no clock.
public struct DataPlaneSighting: Sendable, Equatable {
    /// The device's latest completed handshake with the peer, seconds since the epoch (nil: none).
    public var lastHandshake: Double?
    /// Seconds since the peer's receive counter was last seen to move, on a monotonic clock
    /// (nil: never seen moving).
    public var receiveIdle: Double?

    public init(lastHandshake: Double?, receiveIdle: Double?) {
        self.lastHandshake = lastHandshake
        self.receiveIdle = receiveIdle
    }
}

/// When a member that gossip declared dead keeps its WireGuard peer.
///
/// The agent is the control plane; WireGuard (kernel or wireguard-go) keeps running when it stops, so
/// a node whose agent restarts still answers on its tunnel. Gossip's failure detector cannot tell the
/// two apart, the device can: a peer whose session is current and whose packets keep arriving is
/// alive, whatever gossip says.
public struct DataPlaneLivenessRule: Sendable, Equatable {
    /// The latest handshake must be younger than this: WireGuard's REJECT_AFTER_TIME (180 s), after
    /// which a session carries no data.
    public var handshakeMaxAge: Double
    /// The receive counter must have moved within this long. With traffic in either direction the
    /// counter moves at least every ~10 s (WireGuard's passive keepalive answers data within 10 s);
    /// 30 s leaves room for the 10 s resync that observes it. A host that really died is removed
    /// this long after its last packet was seen.
    public var receiveWindow: Double

    public init(handshakeMaxAge: Double = 180, receiveWindow: Double = 30) {
        self.handshakeMaxAge = handshakeMaxAge
        self.receiveWindow = receiveWindow
    }
}

extension MeshPlanner {
    /// The members gossip declared dead whose WireGuard peer stays because its data plane is alive:
    /// a handshake younger than `rule.handshakeMaxAge` and received bytes within `rule.receiveWindow`.
    ///
    /// Only `dead`: a member that `left` signed its departure and goes at once; alive and suspect
    /// members are peers anyway. An idle peer (no traffic) whose agent is down is not kept: removing
    /// it loses nothing, and the member is added again when its agent is back.
    public static func deadMembersKept(members: [Member], localName: String, sightings: [Key: DataPlaneSighting],
                                       now: Double, rule: DataPlaneLivenessRule = DataPlaneLivenessRule()) -> Set<String> {
        var kept: Set<String> = []
        for member in members where member.name != localName {
            guard case .dead = member.status, let seen = sightings[member.record.record.wireguardKey],
                  let handshake = seen.lastHandshake, let idle = seen.receiveIdle else { continue }
            // A NaN age compares false and keeps nothing.
            guard now - handshake < rule.handshakeMaxAge, idle < rule.receiveWindow else { continue }
            kept.insert(member.name)
        }
        return kept
    }
}
