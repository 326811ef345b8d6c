import Foundation
import IPNetwork

/// The agent's own nftables table of one address family (`table ip wiremesh`, and in a dual-stack
/// cluster `table ip6 wiremesh` beside it), as libnftables JSON. Pure.
///
/// Two tables rather than one `inet` table: an IPv4 cluster keeps the table it always had, and
/// each family's rules name only that family's addresses.
///
/// One chain, `postrouting` (nat, priority srcnat), in this order:
/// 1. `ip saddr CLUSTER ip daddr CLUSTER return`: pod to pod (and node overlay to pod) is never
///    NATed: a pod sees the other pod's own address.
/// 2. `ip saddr BLOCK masquerade`: this node's containers to anything outside the cluster range
///    (egress) leave with the node's underlay address, as they would behind any host.
/// 3. `oifname "WG" snat to OVERLAY`: traffic into the mesh whose source is not a cluster address
///    (a node process that bound its underlay address, or a node process's connection to a service
///    address that a kube-proxy-style DNAT sent to another node's pod: its source was chosen for the
///    service address's route) gets the node's overlay address, the only node address the peers
///    accept from this node (WireGuard drops a source outside the sender's allowed IPs) and route back.
///
/// The table is replaced in one transaction (add, delete, add: idempotent whether it existed or not),
/// only when what is in the kernel differs from this plan (`matches`).
public struct EgressRules: Sendable, Equatable {
    /// The table's name (in each family): one per network namespace and family, owned by the agent.
    public static let tableName = "wiremesh"
    /// The IPv4 table's family (the only one of an IPv4 cluster).
    public static let family = "ip"
    /// Every family the agent may own a table in (`leave` removes each).
    public static let families = ["ip", "ip6"]
    public static let chainName = "postrouting"

    /// This plan's table family: `ip` for an IPv4 range, `ip6` for an IPv6 one.
    public var family: String { clusterRange.address.isIPv4 ? "ip" : "ip6" }

    /// The cluster's pod range.
    public var clusterRange: IPPrefix
    /// This node's pod block.
    public var block: IPPrefix
    /// This node's overlay address (on the WireGuard interface).
    public var overlayAddress: IPAddress
    /// The WireGuard interface.
    public var interface: String

    public init(clusterRange: IPPrefix, block: IPPrefix, overlayAddress: IPAddress, interface: String) {
        self.clusterRange = clusterRange
        self.block = block
        self.overlayAddress = overlayAddress
        self.interface = interface
    }

    private static func prefixMatch(_ field: String, _ prefix: IPPrefix) -> [String: Any] {
        let n = prefix.network
        return ["match": ["op": "==", "left": ["payload": ["protocol": n.address.isIPv4 ? "ip" : "ip6", "field": field]],
                          "right": ["prefix": ["addr": n.address.description, "len": n.length]]]]
    }

    /// The chain object as libnftables lists it (without its handle).
    var chain: [String: Any] {
        ["family": family, "table": Self.tableName, "name": Self.chainName,
         "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"]
    }

    /// The rules' expression lists, in order, as libnftables lists them.
    var ruleExpressions: [[[String: Any]]] {
        [
            [Self.prefixMatch("saddr", clusterRange), Self.prefixMatch("daddr", clusterRange), ["return": NSNull()]],
            [Self.prefixMatch("saddr", block), ["masquerade": NSNull()]],
            [["match": ["op": "==", "left": ["meta": ["key": "oifname"]], "right": interface]],
             ["snat": ["addr": overlayAddress.description]]],
        ]
    }

    /// The batch that replaces the table with this plan (one transaction).
    public func replaceBatch() throws -> String {
        let v4 = clusterRange.address.isIPv4
        guard block.address.isIPv4 == v4, overlayAddress.isIPv4 == v4 else {
            throw NftablesError(operation: "plan the egress table",
                                message: "cluster range \(clusterRange), block \(block) and overlay address \(overlayAddress) are not all of one family")
        }
        let table: [String: Any] = ["family": family, "name": Self.tableName]
        var commands: [[String: Any]] = [
            ["add": ["table": table]], ["delete": ["table": table]], ["add": ["table": table]],
            ["add": ["chain": chain]],
        ]
        for expr in ruleExpressions {
            commands.append(["add": ["rule": ["family": family, "table": Self.tableName, "chain": Self.chainName, "expr": expr]]])
        }
        return try Self.json(commands)
    }

    /// The batch that removes the table of `family` (nothing if it is absent: add first, then delete).
    public static func removeBatch(family: String = EgressRules.family) throws -> String {
        let table: [String: Any] = ["family": family, "name": tableName]
        return try json([["add": ["table": table]], ["delete": ["table": table]]])
    }

    /// Whether a listing (`Nftables.listTable`) holds exactly this plan: one chain as planned and the
    /// planned rules in order, nothing else (handles aside).
    public func matches(listing: [[String: Any]]) -> Bool {
        let chains = listing.compactMap { $0["chain"] as? [String: Any] }
        let rules = listing.compactMap { $0["rule"] as? [String: Any] }
        guard listing.contains(where: { $0["set"] != nil || $0["map"] != nil }) == false,
              chains.count == 1, rules.count == ruleExpressions.count else { return false }
        var chainSeen = chains[0]
        chainSeen["handle"] = nil
        guard let have = Self.canonical(chainSeen), have == Self.canonical(chain) else { return false }
        for (rule, expr) in zip(rules, ruleExpressions) {
            guard rule["chain"] as? String == Self.chainName, let seen = rule["expr"].flatMap(Self.canonical),
                  seen == Self.canonical(expr) else { return false }
        }
        return true
    }

    /// JSON text with sorted keys: equal for equal values, whichever side (Swift or parsed) built them.
    static func canonical(_ value: Any) -> String? {
        guard let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// `{"nftables": commands}` as text.
    static func json(_ commands: [[String: Any]]) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: ["nftables": commands], options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }
}
