import IPNetwork
import Membership
import WireGuard
import WireMeshCrypto

/// What the reconciler is told besides the member view: the parts of the desired device that come
/// from the agent's own bookkeeping rather than from gossip.
public struct DeviceOverrides: Sendable, Equatable {
    /// False before gossip is up: the view is empty then, and the peers already on the device stay
    /// (an agent restart must not interrupt traffic).
    public var gossipUp: Bool
    /// Peers of nodes this member just admitted whose records have not arrived by gossip yet.
    public var admitted: [Peer]

    public init(gossipUp: Bool, admitted: [Peer] = []) {
        self.gossipUp = gossipUp
        self.admitted = admitted
    }
}

extension MeshPlanner {
    /// The device as it should be: the plan's device, with the peers on the device kept while gossip
    /// is down, and just-admitted peers added where they clash with no planned key or prefix.
    public static func desiredDevice(plan: Device, actual: Device, overrides: DeviceOverrides) -> Device {
        var desired = plan
        guard overrides.gossipUp else {
            desired.peers = actual.peers
            return desired
        }
        for peer in overrides.admitted {
            let clash = desired.peers.contains { p in
                p.publicKey == peer.publicKey || p.allowedIPs.contains { a in peer.allowedIPs.contains { a.overlaps($0) } }
            }
            if !clash { desired.peers.append(peer) }
        }
        return desired
    }

    /// The operations that take the device from `actual` to `desired`, in the order they are applied.
    ///
    /// - A new private key (a rotation, or a restart after one) is written alone, as
    ///   `keySwitchConfig`: the handshake with the new key starts at once with every peer, and the
    ///   next pass puts the configured keepalive back and applies whatever else differs.
    /// - Otherwise one change: peers that gain allowed IPs come before peers that lose them or go,
    ///   so a prefix moving between two entries (a peer's key switch) always has an owner.
    /// - Every peer that was just added without keepalive gets it on and off again (with keepalive
    ///   the add itself does it): WireGuard then sends a handshake now, while the node behind it may still hold an old
    ///   session with us that we no longer have (its packets would be dropped until its rekey, ~15 s).
    public static func deviceWrites(actual: Device, desired: Device, kick: UInt16) -> [DeviceConfig] {
        let change = diff(actual: actual, desired: desired)
        if let key = change.privateKey, actual.privateKey != nil, key != .zero {
            return [keySwitchConfig(privateKey: key, peers: actual.peers, kick: kick)]
        }
        guard !change.isEmpty else { return [] }
        var ordered = change
        let gains = change.peers.filter { !$0.remove && !$0.replaceAllowedIPs && !$0.allowedIPs.isEmpty }
        ordered.peers = gains + change.peers.filter { $0.remove || $0.replaceAllowedIPs || $0.allowedIPs.isEmpty }
        var writes = [ordered]
        let known = Set(actual.peers.map(\.publicKey))
        let added = change.peers.filter {
            !$0.remove && $0.endpoint != nil && $0.persistentKeepaliveInterval == nil && !known.contains($0.publicKey)
        }.map(\.publicKey)
        if !added.isEmpty {
            writes.append(DeviceConfig(peers: added.map { PeerConfig(publicKey: $0, updateOnly: true, persistentKeepaliveInterval: 1) }))
            writes.append(DeviceConfig(peers: added.map { PeerConfig(publicKey: $0, updateOnly: true, persistentKeepaliveInterval: 0) }))
        }
        return writes
    }
}
