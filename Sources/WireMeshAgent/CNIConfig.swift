import Foundation
import IPNetwork

/// The CNI network config list a container runtime (podman, containerd, CRI-O) reads to put its
/// containers on this node's block of the mesh: a `bridge` per node with the gateway on the block,
/// `host-local` addresses from the block, and `portmap` for published ports. All three are the
/// standard plugins (Debian's `containernetworking-plugins`).
///
/// Addresses of a block B (a /24 in the examples):
/// - B + 0: the node's overlay address, on the WireGuard interface (`IPAM.overlayAddress(of:)`): the
///   node's own address in the mesh, the source of its traffic to other nodes' pods. It exists whether
///   or not a container runs, so it cannot be the bridge's (the bridge appears with the first container).
/// - B + 1: the bridge's address, the containers' gateway.
/// - B + 2 … last − 1: handed to containers by `host-local`; the overlay address, the gateway and the
///   broadcast address are outside that range, so no container can ever get them.
/// Both node addresses lie inside the block, which every peer already routes to this node: the mesh
/// needs no extra allowed IP or route for containers.
///
/// A dual-stack node has an IPv6 block beside it, laid out the same way (B6 + 0 overlay, B6 + 1 the
/// bridge's, containers from B6 + 2 to the last address: IPv6 has no broadcast address): `host-local`
/// gets one range set per family, so every container gets an address of each.
public struct CNIConfig: Sendable, Equatable {
    /// The CNI network name runtimes select (`podman run --network wiremesh`).
    public static let networkName = "wiremesh"
    /// The file name: `10-` sorts it before most runtimes' own defaults (CNI uses the first file by
    /// name when a runtime asks for the default network).
    public static let fileName = "10-wiremesh.conflist"
    /// The CNI spec version of the list (supported by libcni ≥ 1.0 and the Debian 12 plugins, 1.1.1).
    public static let cniVersion = "1.0.0"

    /// This node's pod block.
    public var block: IPPrefix
    /// The bridge's and the containers' MTU: the WireGuard interface's, so a container never sends a
    /// packet the tunnel has to fragment.
    public var mtu: Int
    /// The bridge interface name (`bridgeName(forInterface:)`).
    public var bridge: String
    /// `host-local`'s store (it adds a directory per network name): under the state directory, so two
    /// nodes on one machine never share reservations.
    public var ipamDataDirectory: String
    /// This node's IPv6 pod block in a dual-stack cluster, nil for IPv4 only.
    public var blockV6: IPPrefix?

    public init(block: IPPrefix, mtu: Int, bridge: String, ipamDataDirectory: String, blockV6: IPPrefix? = nil) {
        self.block = block
        self.mtu = mtu
        self.bridge = bridge
        self.ipamDataDirectory = ipamDataDirectory
        self.blockV6 = blockV6
    }

    /// The bridge of the node whose WireGuard interface is `interface`: `<interface>-br` when that
    /// fits the 15 bytes of an interface name, else `wmbr` and a hash of the name (nodes on one
    /// machine sharing a namespace each get their own bridge).
    public static func bridgeName(forInterface interface: String) -> String {
        let plain = interface + "-br"
        if plain.utf8.count <= 15 { return plain }
        // FNV-1a: stable across runs and builds (Swift's Hasher is seeded per process).
        var h: UInt32 = 2_166_136_261
        for b in interface.utf8 { h = (h ^ UInt32(b)) &* 16_777_619 }
        return "wmbr" + String(format: "%08x", h)
    }

    /// Why a block cannot hold containers.
    public struct BlockTooSmall: Error, CustomStringConvertible {
        public var block: IPPrefix
        public var description: String {
            block.address.isIPv4
                ? "pod block \(block) is too small for containers: it needs the overlay address, a gateway, at least one container address and a broadcast address; use a node prefix of /29 or shorter"
                : "IPv6 pod block \(block) is too small for containers: it needs the overlay address, a gateway and container addresses; use an IPv6 node prefix of /126 or shorter (/64 is the default)"
        }
    }

    /// A block of the wrong family: the first block must be IPv4, the second (`blockV6`) IPv6.
    public struct UnsupportedFamily: Error, CustomStringConvertible {
        public var block: IPPrefix
        public var description: String {
            block.address.isIPv4
                ? "pod block \(block) is IPv4 where the IPv6 block of a dual-stack node is expected"
                : "pod block \(block) is IPv6: the CNI config needs the node's IPv4 block first (an IPv6 block goes beside it, dual-stack)"
        }
    }

    /// The gateway (block + 1).
    public var gateway: IPAddress { block.firstAddress.adding(1) }
    /// The first address `host-local` hands out (block + 2).
    public var rangeStart: IPAddress { block.firstAddress.adding(2) }
    /// The last address `host-local` hands out (the one before the broadcast address).
    public var rangeEnd: IPAddress {
        // first + (size − 2): the address before the broadcast address.
        let hostBits = min(block.address.bitWidth - block.length, 63)
        return block.firstAddress.adding((UInt64(1) << UInt64(hostBits)) - 2)
    }

    /// The conflist as the runtime reads it: deterministic (sorted keys), so it is rewritten only
    /// when an input changed. Pure.
    public func render() throws -> String {
        guard block.address.isIPv4 else { throw UnsupportedFamily(block: block) }
        guard block.length <= 29 else { throw BlockTooSmall(block: block) }
        let range: [String: Any] = [
            "subnet": block.network.description, "gateway": gateway.description,
            "rangeStart": rangeStart.description, "rangeEnd": rangeEnd.description,
        ]
        var ranges: [[[String: Any]]] = [[range]]
        var routes: [[String: Any]] = [["dst": "0.0.0.0/0"]]
        if let v6 = blockV6?.network {
            guard !v6.address.isIPv4 else { throw UnsupportedFamily(block: v6) }
            // Overlay, gateway and at least two container addresses.
            guard v6.length <= 126 else { throw BlockTooSmall(block: v6) }
            ranges.append([[
                "subnet": v6.description, "gateway": v6.firstAddress.adding(1).description,
                "rangeStart": v6.firstAddress.adding(2).description, "rangeEnd": v6.lastAddress.description,
            ]])
            routes.append(["dst": "::/0"])
        }
        let bridgePlugin: [String: Any] = [
            "type": "bridge", "bridge": bridge, "isGateway": true,
            // The agent masquerades egress itself (its nftables table), and never pod-to-pod traffic.
            "ipMasq": false,
            // A pod reaching itself through a service address comes back in on its own port.
            "hairpinMode": true,
            "mtu": mtu,
            "ipam": [
                "type": "host-local", "ranges": ranges, "routes": routes,
                "dataDir": ipamDataDirectory,
            ] as [String: Any],
        ]
        let list: [String: Any] = [
            "cniVersion": Self.cniVersion, "name": Self.networkName,
            "plugins": [bridgePlugin, ["type": "portmap", "capabilities": ["portMappings": true]]],
        ]
        let data = try JSONSerialization.data(withJSONObject: list, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
