import IPNetwork
import Membership
import WireGuard
import WireMeshCrypto

/// A peer's WireGuard key change this node learned from the rotating node itself (a signed, direct
/// "switch" message), ahead of the gossiped record that will say the same thing.
///
/// While it is in force the plan routes the node's allowed IPs to `newKey` even though the member
/// view still names `oldKey`, so the reconciler does not move them back. Once the record names
/// `newKey`, the old entry is kept (with no allowed IPs) for a short grace so packets of the old
/// session that are still in flight decrypt, then it goes.
public struct KeySwitch: Sendable, Equatable {
    /// The rotating member's name.
    public var node: String
    public var oldKey: Key
    public var newKey: Key
    /// When this node applied the switch, seconds on the caller's clock (the plan itself reads no clock).
    public var appliedAt: Double

    public init(node: String, oldKey: Key, newKey: Key, appliedAt: Double) {
        self.node = node
        self.oldKey = oldKey
        self.newKey = newKey
        self.appliedAt = appliedAt
    }
}

/// How long the rotation bookkeeping lives.
public struct RotationTiming: Sendable, Equatable {
    /// How long the old key's entry stays after the record names the new key.
    public var grace: Double
    /// A switch whose record never arrives (the rotating node crashed, or its record was lost) is
    /// dropped after this long; the member view is the truth again from then on.
    public var maxAge: Double
    /// Keepalive interval set on a freshly switched entry when the mesh has none configured: turning
    /// keepalive on makes WireGuard (kernel and wireguard-go) send at once, which starts the handshake
    /// with the new key without waiting for traffic.
    public var kickKeepalive: UInt16

    public init(grace: Double = 3, maxAge: Double = 300, kickKeepalive: UInt16 = 25) {
        self.grace = grace
        self.maxAge = maxAge
        self.kickKeepalive = kickKeepalive
    }
}

extension KeySwitch {
    /// True when the switch no longer changes the plan and can be forgotten: the member's record
    /// names the new key and the grace has passed, the member moved on to yet another key or is gone,
    /// or the record never came within `maxAge`.
    public func isSettled(member: Member?, now: Double, timing: RotationTiming) -> Bool {
        guard let member, member.status.isActive else { return true }
        let key = member.record.record.wireguardKey
        if key == newKey { return now - appliedAt >= timing.grace }
        if key != oldKey { return true }
        return now - appliedAt >= timing.maxAge
    }
}

extension MeshPlanner {
    /// The plan of `plan(local:privateKey:members:settings:keepingDead:)` with key switches applied.
    ///
    /// - `switches`: for a member whose record still names `oldKey`, its allowed IPs move to an
    ///   entry for `newKey` (same endpoint; keepalive turned on so the handshake starts at once) and
    ///   the old entry stays with none; once the record names `newKey`, the old entry stays, empty,
    ///   until the switch is settled. A switch for any other key is ignored.
    /// - `preinstallPending`: give every member that announces a pending key an extra entry for it,
    ///   with no allowed IPs. Off by default: an entry for the pending key lets the rotating node's
    ///   first handshake complete before this node moved the allowed IPs, and the packets sent on
    ///   that session then fail the source check; without it they wait in the sender's queue (see
    ///   BENCHMARKS.md, "rotation").
    public static func plan(local: NodeRecord, privateKey: Key, members: [Member], settings: MeshSettings,
                            switches: [KeySwitch], preinstallPending: Bool = false,
                            timing: RotationTiming = RotationTiming(), keepingDead: Set<String> = []) -> DesiredMesh {
        var mesh = plan(local: local, privateKey: privateKey, members: members, settings: settings, keepingDead: keepingDead)
        guard !switches.isEmpty || preinstallPending else { return mesh }
        var peers = mesh.device.peers
        let ownKey = privateKey.publicKey()
        func index(_ key: Key) -> Int? { peers.firstIndex { $0.publicKey == key } }
        let kick = settings.persistentKeepalive != 0 ? settings.persistentKeepalive : timing.kickKeepalive

        for s in switches where s.oldKey != s.newKey && s.newKey != ownKey {
            guard let member = members.first(where: { $0.name == s.node }), isPeer(member, localName: local.name) else {
                continue
            }
            let record = member.record.record
            if record.wireguardKey == s.oldKey {
                // Another member already holds the new key: never hand it this member's prefixes.
                guard let old = index(s.oldKey), index(s.newKey) == nil else { continue }
                peers.append(Peer(publicKey: s.newKey, endpoint: peers[old].endpoint,
                                  persistentKeepaliveInterval: kick, allowedIPs: peers[old].allowedIPs))
                peers[old].allowedIPs = []
            } else if record.wireguardKey == s.newKey, let current = index(s.newKey), index(s.oldKey) == nil {
                peers.append(Peer(publicKey: s.oldKey, endpoint: peers[current].endpoint,
                                  persistentKeepaliveInterval: settings.persistentKeepalive, allowedIPs: []))
            }
        }
        if preinstallPending {
            for member in members where isPeer(member, localName: local.name) {
                let record = member.record.record
                guard let pending = record.pendingWireguardKey, pending != ownKey, index(pending) == nil,
                      let current = index(record.wireguardKey) else { continue }
                peers.append(Peer(publicKey: pending, endpoint: peers[current].endpoint,
                                  persistentKeepaliveInterval: settings.persistentKeepalive, allowedIPs: []))
            }
        }
        peers = sortedByKeyText(peers)
        mesh.device.peers = peers
        return mesh
    }
}

extension MeshPlanner {
    /// The device operation that switches this node to `privateKey`: the key plus, for every peer that
    /// routes something, keepalive off and on again (`kick` seconds) so WireGuard sends a handshake
    /// initiation with the new key at once. Peers with no allowed IPs (old entries in their grace) are
    /// left alone. `updateOnly` so a peer removed meanwhile is not re-created.
    ///
    /// The initiation that leaves at once is dropped by each peer (none has an entry for the new key
    /// yet). That is the point: WireGuard then sends no other initiation to that peer for 5 s, so the
    /// initiation the peer sends once it moved cannot cross one of ours. Two initiations in flight at
    /// once make each side drop the other's response, and traffic stops until the 5 s retry
    /// (measured: ~1 rotation in 4 without this). The next reconcile pass puts the configured
    /// keepalive back.
    public static func keySwitchConfig(privateKey: Key, peers: [Peer], kick: UInt16) -> DeviceConfig {
        var change = DeviceConfig(privateKey: privateKey)
        for peer in peers where !peer.allowedIPs.isEmpty {
            change.peers.append(PeerConfig(publicKey: peer.publicKey, updateOnly: true, persistentKeepaliveInterval: 0))
            change.peers.append(PeerConfig(publicKey: peer.publicKey, updateOnly: true,
                                           persistentKeepaliveInterval: max(kick, 1)))
        }
        return change
    }
}
