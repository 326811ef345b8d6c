import IPNetwork
import Membership
import Netlink
import WireGuard
import WireMeshCrypto

/// What the mesh should look like on this node, computed from the member view alone.
///
/// Pure: no I/O, no clock. The reconciler diffs it against what the device and the routing table
/// report and applies only the delta, so running it twice plans nothing the second time.
public struct DesiredMesh: Sendable, Equatable {
    /// The WireGuard device as it should be (peers in name order).
    public var device: Device
    /// Routes this node should carry, all tagged with `WireMeshRouteProtocol`.
    public var routes: [Route]
    /// Prefixes claimed by more than one member; each went to the winner named here.
    public var conflicts: [PrefixConflict]
}

/// Two members claimed overlapping prefixes; WireGuard allows one owner per prefix.
public struct PrefixConflict: Sendable, Equatable, CustomStringConvertible {
    public var prefix: IPPrefix
    public var winner: String
    public var loser: String

    public init(prefix: IPPrefix, winner: String, loser: String) {
        self.prefix = prefix
        self.winner = winner
        self.loser = loser
    }

    public var description: String { "\(prefix) claimed by \(winner) and \(loser); routed to \(winner)" }
}

/// Node-local settings the plan needs besides the member view.
public struct MeshSettings: Sendable, Equatable {
    /// WireGuard interface name.
    public var interface: String
    /// Its ifindex, for routes.
    public var interfaceIndex: Int32
    public var listenPort: UInt16
    /// Seconds, 0 = off.
    public var persistentKeepalive: UInt16
    /// The cluster's pod range(s): routed into the interface as a whole so a missing peer means a
    /// dropped packet, never a clear-text one (fail closed).
    public var clusterCIDRs: [IPPrefix]
    /// Metric of the `unreachable` backstop route for the cluster range, used if the interface is gone.
    public var unreachableMetric: UInt32

    public init(interface: String, interfaceIndex: Int32, listenPort: UInt16, persistentKeepalive: UInt16 = 0,
                clusterCIDRs: [IPPrefix], unreachableMetric: UInt32 = 4_200_000_000) {
        self.interface = interface
        self.interfaceIndex = interfaceIndex
        self.listenPort = listenPort
        self.persistentKeepalive = persistentKeepalive
        self.clusterCIDRs = clusterCIDRs
        self.unreachableMetric = unreachableMetric
    }
}

public enum MeshPlanner {
    /// Members that get a WireGuard peer: alive or suspect. Suspicion alone does not tear down a
    /// tunnel (that would turn a slow node into a dropped one); departed members go, and dead ones
    /// too unless their data plane shows them alive (`deadMembersKept`, `plan(...keepingDead:)`).
    public static func isPeer(_ member: Member, localName: String) -> Bool {
        member.name != localName && member.status.isActive
    }

    /// The allowed IPs a member's record asks for: its pod CIDRs and its overlay address.
    public static func claimedPrefixes(of record: NodeRecord) -> [IPPrefix] {
        var out = record.podCIDRs.map(\.network)
        if let overlay = record.overlayAddress,
           let host = try? IPPrefix(address: overlay, length: overlay.bitWidth),
           !out.contains(where: { $0.contains(host) }) {
            out.append(host)
        }
        return out
    }

    /// When a member's claim was made: its certificate's issue time (the authority's clock, which no
    /// member can backdate), else its record version (Unix ms at its start).
    static func claimTime(_ record: NodeRecord) -> UInt64 { record.certificate?.issuedAt ?? record.version }

    /// Computes the desired device and routes.
    ///
    /// Allowed IPs are unique per interface, so overlapping claims are resolved deterministically:
    /// the older claim (`claimTime`) wins, then the lower name. Prefixes that overlap
    /// this node's own pod CIDRs are never routed to a peer.
    ///
    /// `keepingDead` names dead members that stay peers because their data plane is alive
    /// (`deadMembersKept`); other statuses are ignored there. They come after every live member, so
    /// a live member wins any prefix or WireGuard key they share.
    public static func plan(local: NodeRecord, privateKey: Key, members: [Member], settings: MeshSettings,
                            keepingDead: Set<String> = []) -> DesiredMesh {
        let localPrefixes = claimedPrefixes(of: local)
        func isKeptDead(_ m: Member) -> Bool {
            guard case .dead = m.status else { return false }
            return m.name != local.name && keepingDead.contains(m.name)
        }
        let candidates = members.filter { isPeer($0, localName: local.name) || isKeptDead($0) }
            .map { (rank: isKeptDead($0) ? 1 : 0, member: $0) }
            .sorted { ($0.rank, claimTime($0.member.record.record), $0.member.name) < ($1.rank, claimTime($1.member.record.record), $1.member.name) }
            .map(\.member)

        var owners = DisjointPrefixes<String>()
        for prefix in localPrefixes { owners.insert(prefix, local.name) }
        var conflicts: [PrefixConflict] = []
        var peers: [Peer] = []
        var seenKeys: Set<Key> = [privateKey.publicKey()]
        for member in candidates {
            let record = member.record.record
            // Two members announcing one WireGuard key would fight over a single peer entry.
            guard seenKeys.insert(record.wireguardKey).inserted else { continue }
            var allowed: [IPPrefix] = []
            for prefix in claimedPrefixes(of: record) {
                if let clash = owners.insert(prefix, record.name) {
                    conflicts.append(PrefixConflict(prefix: prefix, winner: clash.value, loser: record.name))
                    continue
                }
                allowed.append(prefix)
            }
            peers.append(Peer(publicKey: record.wireguardKey,
                              endpoint: preferredEndpoint(record.wireguardEndpoints),
                              persistentKeepaliveInterval: settings.persistentKeepalive,
                              allowedIPs: allowed))
        }
        peers = sortedByKeyText(peers)

        let device = Device(name: settings.interface, privateKey: privateKey, publicKey: privateKey.publicKey(),
                            listenPort: settings.listenPort, peers: peers)
        return DesiredMesh(device: device, routes: routes(settings: settings), conflicts: conflicts)
    }

    /// Peers in the order `wg` lists them (by key text); each key encoded once, not per comparison.
    static func sortedByKeyText(_ peers: [Peer]) -> [Peer] {
        peers.map { ($0.publicKey.base64, $0) }.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// The routes of the plan: each cluster range into the interface, plus an `unreachable` backstop
    /// with a worse metric that takes over if the interface disappears.
    public static func routes(settings: MeshSettings) -> [Route] {
        settings.clusterCIDRs.flatMap { cidr in
            [
                Route(destination: cidr.network, interfaceIndex: settings.interfaceIndex),
                Route(destination: cidr.network, type: .unreachable, metric: settings.unreachableMetric),
            ]
        }
    }

    /// IPv4 first: it is what the demo underlay and most clusters use; IPv6 otherwise.
    static func preferredEndpoint(_ endpoints: [Endpoint]) -> Endpoint? {
        endpoints.first(where: { $0.address.isIPv4 }) ?? endpoints.first
    }
}

/// The difference between the routes we own and the routes we want.
public struct RouteChanges: Sendable, Equatable {
    public var add: [Route]
    public var remove: [Route]
    public var isEmpty: Bool { add.isEmpty && remove.isEmpty }
}

extension MeshPlanner {
    /// Routes to add and remove. `actual` must hold only routes tagged with our protocol; routes are
    /// compared on destination, interface, type, table and metric (what identifies them in the kernel).
    public static func routeChanges(actual: [Route], desired: [Route]) -> RouteChanges {
        func key(_ r: Route) -> RouteKey {
            // The kernel stores an IPv6 route given no metric with 1024 (IP6_RT_PRIO_USER) and lists it so.
            let metric = r.metric ?? 0
            return RouteKey(destination: r.destination.network, interfaceIndex: r.type == .unicast ? r.interfaceIndex : nil,
                            table: r.table, type: r.type.rawValue,
                            metric: metric == 0 && !r.destination.address.isIPv4 ? 1024 : metric)
        }
        let have = Set(actual.map(key))
        let want = Set(desired.map(key))
        return RouteChanges(add: desired.filter { !have.contains(key($0)) },
                            remove: actual.filter { !want.contains(key($0)) })
    }

    struct RouteKey: Hashable {
        var destination: IPPrefix
        var interfaceIndex: Int32?
        var table: UInt32
        var type: UInt8
        var metric: UInt32
    }
}
