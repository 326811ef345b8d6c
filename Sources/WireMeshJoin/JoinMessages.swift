import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

/// The cluster-wide settings every member agrees on (handed to a joiner by the admitting member).
public struct ClusterSettings: Sendable, Equatable {
    /// The pod range all node blocks are carved from, e.g. 10.244.0.0/16.
    public var podRange: IPPrefix
    /// The size of each node's block, e.g. 24 for a /24 per node.
    public var nodePrefixLength: Int
    /// The IPv6 pod range of a dual-stack cluster (e.g. fd42:1::/48), nil for IPv4 only.
    public var podRangeV6: IPPrefix?
    /// The size of each node's IPv6 block (64 by default); meaningful only with `podRangeV6`.
    public var nodePrefixLengthV6: Int

    /// The IPv6 node block size a dual-stack cluster uses unless told otherwise.
    public static let defaultNodePrefixLengthV6 = 64

    public init(podRange: IPPrefix, nodePrefixLength: Int, podRangeV6: IPPrefix? = nil,
                nodePrefixLengthV6: Int = ClusterSettings.defaultNodePrefixLengthV6) {
        self.podRange = podRange
        self.nodePrefixLength = nodePrefixLength
        self.podRangeV6 = podRangeV6
        self.nodePrefixLengthV6 = nodePrefixLengthV6
    }

    /// Every pod range of the cluster: IPv4, then IPv6 if dual-stack.
    public var podRanges: [IPPrefix] { [podRange] + [podRangeV6].compactMap { $0 } }

    /// The IPv6 IPAM of a dual-stack cluster; nil for IPv4 only. Throws on settings IPAM refuses.
    public func ipamV6() throws -> IPAM? {
        guard let podRangeV6 else { return nil }
        return try IPAM(clusterRange: podRangeV6, nodePrefixLength: nodePrefixLengthV6)
    }

    /// Checks the settings as `init` and the state files accept them: an IPv4 range and block size
    /// IPAM accepts, and, if dual-stack, an IPv6 range and block size IPAM accepts.
    public func validate() throws {
        _ = try IPAM(clusterRange: podRange, nodePrefixLength: nodePrefixLength)
        guard let podRangeV6 else { return }
        guard podRange.address.isIPv4 else {
            throw IPAMError.invalidSettings("the pod range \(podRange) is not IPv4: a dual-stack cluster has an IPv4 range (--cluster-cidr) and an IPv6 range (--cluster-cidr-v6)")
        }
        guard !podRangeV6.address.isIPv4 else {
            throw IPAMError.invalidSettings("the IPv6 pod range \(podRangeV6) is IPv4: give an IPv6 range such as fd42:1::/48")
        }
        // IPAM's words name no family or flag: say which range it was about.
        do { _ = try ipamV6() } catch IPAMError.invalidSettings(let what) {
            throw IPAMError.invalidSettings("IPv6 range \(podRangeV6) with a /\(nodePrefixLengthV6) per node: \(what) (IPv6: --cluster-cidr-v6 such as fd42:244::/48, --node-prefix-v6 such as 64)")
        }
    }
}

/// This node's place in the cluster: its name, pod block and overlay address.
public struct NodeAssignment: Sendable, Equatable {
    /// The node's name in the membership (unique in the cluster).
    public var name: String
    /// The pod block routed to this node.
    public var podCIDR: IPPrefix
    /// The address on the WireGuard interface (see `IPAM.overlayAddress(of:)`).
    public var overlayAddress: IPAddress
    /// The IPv6 pod block of a dual-stack cluster, nil for IPv4 only.
    public var podCIDRV6: IPPrefix?

    public init(name: String, podCIDR: IPPrefix, overlayAddress: IPAddress, podCIDRV6: IPPrefix? = nil) {
        self.name = name
        self.podCIDR = podCIDR
        self.overlayAddress = overlayAddress
        self.podCIDRV6 = podCIDRV6
    }

    /// Every pod block: IPv4, then IPv6. What the certificate grants and the record claims, in this order.
    public var podCIDRs: [IPPrefix] { [podCIDR] + [podCIDRV6].compactMap { $0 } }

    /// The IPv6 overlay address: the IPv6 block's first address, like the IPv4 one. Not carried in
    /// the certificate or the record: it follows from the certified block.
    public var overlayAddressV6: IPAddress? { podCIDRV6?.firstAddress }

    /// The addresses of the WireGuard interface, one host prefix per family.
    public var overlayPrefixes: [IPPrefix] {
        ([overlayAddress] + [overlayAddressV6].compactMap { $0 }).map { try! IPPrefix(address: $0, length: $0.bitWidth) }
    }
}

/// The joiner's request (sent as one JSON object).
public struct JoinRequest: Sendable, Equatable {
    static let currentVersion = 2
    public var version: Int = JoinRequest.currentVersion
    public var tokenID: String
    /// The token's expiry (Unix seconds) and uses limit (0 = unlimited): a member derives the
    /// token key from them, so the MAC proves they are the token's.
    public var expiresAt: Int64
    public var usesLimit: Int
    public var clusterID: String
    public var nodeName: String
    public var identityPublicKey: IdentityPublicKey
    public var wireGuardPublicKey: Key
    /// The pod CIDR the operator asked for (`--pod-cidr`), or nil to let the member pick.
    public var requestedPodCIDR: IPPrefix?
    public var nonce: [UInt8]
    /// crypto_auth tag over `canonicalBytes` under the token's auth key.
    public var mac: [UInt8]

    /// Length-prefixed encoding of every field but the MAC (JSON is not canonical, so the MAC is
    /// computed over this instead).
    var canonicalBytes: [UInt8] {
        var w = ByteWriter()
        w.raw("wmj2-req".utf8)
        w.u8(UInt8(truncatingIfNeeded: version))
        w.mediumString(tokenID)
        w.u64(UInt64(bitPattern: expiresAt))
        w.u16(UInt16(truncatingIfNeeded: usesLimit))
        w.mediumString(clusterID)
        w.mediumString(nodeName)
        w.raw(identityPublicKey.bytes)
        w.raw(wireGuardPublicKey.bytes)
        w.mediumString(requestedPodCIDR?.description ?? "")
        w.raw(nonce)
        return w.bytes
    }
}

extension JoinRequest: Codable {
    enum CodingKeys: String, CodingKey {
        case version, tokenID = "token_id", expiresAt = "expires_at", usesLimit = "uses_limit", clusterID = "cluster_id", nodeName = "node_name"
        case identityPublicKey = "identity_public_key", wireGuardPublicKey = "wireguard_public_key"
        case requestedPodCIDR = "requested_pod_cidr", nonce, mac
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        tokenID = try c.decode(String.self, forKey: .tokenID)
        // Absent in version 1 requests, which `admit` refuses with a clear message.
        expiresAt = try c.decodeIfPresent(Int64.self, forKey: .expiresAt) ?? 0
        usesLimit = try c.decodeIfPresent(Int.self, forKey: .usesLimit) ?? 0
        clusterID = try c.decode(String.self, forKey: .clusterID)
        nodeName = try c.decode(String.self, forKey: .nodeName)
        identityPublicKey = try IdentityPublicKey(bytes: try c.decodeBase64(.identityPublicKey))
        wireGuardPublicKey = try Key(bytes: try c.decodeBase64(.wireGuardPublicKey))
        requestedPodCIDR = try c.decodeIfPresent(String.self, forKey: .requestedPodCIDR).map { try IPPrefix($0) }
        nonce = try c.decodeBase64(.nonce)
        mac = try c.decodeBase64(.mac)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(version, forKey: .version)
        try c.encode(tokenID, forKey: .tokenID)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(usesLimit, forKey: .usesLimit)
        try c.encode(clusterID, forKey: .clusterID)
        try c.encode(nodeName, forKey: .nodeName)
        try c.encode(Data(identityPublicKey.bytes).base64EncodedString(), forKey: .identityPublicKey)
        try c.encode(wireGuardPublicKey.base64, forKey: .wireGuardPublicKey)
        try c.encodeIfPresent(requestedPodCIDR?.description, forKey: .requestedPodCIDR)
        try c.encode(Data(nonce).base64EncodedString(), forKey: .nonce)
        try c.encode(Data(mac).base64EncodedString(), forKey: .mac)
    }
}

/// The admitting member's answer (sent as one JSON object).
public struct JoinResponse: Sendable, Equatable {
    public var memberNonce: [UInt8]
    public var authorityPublicKey: IdentityPublicKey
    /// The `JoinGrant`, sealed under the exchange key.
    public var sealed: [UInt8]
    /// Ed25519 signature by the cluster authority's key.
    public var signature: [UInt8]
}

extension JoinResponse: Codable {
    enum CodingKeys: String, CodingKey {
        case memberNonce = "member_nonce", authorityPublicKey = "authority_public_key", sealed, signature
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        memberNonce = try c.decodeBase64(.memberNonce)
        authorityPublicKey = try IdentityPublicKey(bytes: try c.decodeBase64(.authorityPublicKey))
        sealed = try c.decodeBase64(.sealed)
        signature = try c.decodeBase64(.signature)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Data(memberNonce).base64EncodedString(), forKey: .memberNonce)
        try c.encode(Data(authorityPublicKey.bytes).base64EncodedString(), forKey: .authorityPublicKey)
        try c.encode(Data(sealed).base64EncodedString(), forKey: .sealed)
        try c.encode(Data(signature).base64EncodedString(), forKey: .signature)
    }
}

/// What a successful join hands the new node (only ever sent sealed).
public struct JoinGrant: Sendable {
    public var clusterID: String
    public var settings: ClusterSettings
    public var assignment: NodeAssignment
    public var keyring: Keyring
    /// The cluster authority's public key: what every member checks certificates against.
    public var authority: IdentityPublicKey
    /// The authority's certificate for the joiner's name, identity and assignment.
    public var certificate: NodeCertificate
    /// The authority's newest revocation list, if any node was ever evicted.
    public var revocations: RevocationList?
    /// Last-known members of the admitting node (opaque membership bytes).
    public var members: [UInt8]

    struct Wire: Codable {
        var cluster_id: String
        var pod_range: String
        var node_prefix_length: Int
        // Dual-stack only (absent for IPv4 clusters, so their grants keep their bytes).
        var pod_range_v6: String?
        var node_prefix_length_v6: Int?
        var node_name: String
        var pod_cidr: String
        var pod_cidr_v6: String?
        var overlay_address: String
        var cluster_keys: [String]
        var authority: String
        var certificate: String
        var revocations: String?
        var members: String
    }

    func encoded() throws -> [UInt8] {
        let v6 = settings.podRangeV6 != nil
        let wire = Wire(cluster_id: clusterID, pod_range: settings.podRange.description, node_prefix_length: settings.nodePrefixLength,
                        pod_range_v6: settings.podRangeV6?.description, node_prefix_length_v6: v6 ? settings.nodePrefixLengthV6 : nil,
                        node_name: assignment.name, pod_cidr: assignment.podCIDR.description,
                        pod_cidr_v6: assignment.podCIDRV6?.description,
                        overlay_address: assignment.overlayAddress.description,
                        cluster_keys: keyring.keys.map { $0.key.base64 }, authority: Data(authority.bytes).base64EncodedString(),
                        certificate: Data(certificate.encoded).base64EncodedString(),
                        revocations: revocations.map { Data($0.encoded).base64EncodedString() },
                        members: Data(members).base64EncodedString())
        return Array(try JSONEncoder().encode(wire))
    }

    static func decode(_ bytes: [UInt8]) throws -> JoinGrant {
        do {
            let w = try JSONDecoder().decode(Wire.self, from: Data(bytes))
            let keys = try w.cluster_keys.map { ClusterKey(key: try Key(base64: $0)) }
            guard let primary = keys.first, let members = Data(base64Encoded: w.members),
                  let authority = Data(base64Encoded: w.authority), let certificate = Data(base64Encoded: w.certificate) else {
                throw JoinError.malformedMessage("grant holds no cluster key, or unreadable members, authority or certificate")
            }
            let revocations = try w.revocations.map { text in
                guard let bytes = Data(base64Encoded: text) else { throw JoinError.malformedMessage("grant revocations are not base64") }
                return try RevocationList(decoding: Array(bytes))
            }
            let settings = ClusterSettings(podRange: try IPPrefix(w.pod_range), nodePrefixLength: w.node_prefix_length,
                                           podRangeV6: try w.pod_range_v6.map { try IPPrefix($0) },
                                           nodePrefixLengthV6: w.node_prefix_length_v6 ?? ClusterSettings.defaultNodePrefixLengthV6)
            let assignment = NodeAssignment(name: w.node_name, podCIDR: try IPPrefix(w.pod_cidr),
                                            overlayAddress: try IPAddress(w.overlay_address),
                                            podCIDRV6: try w.pod_cidr_v6.map { try IPPrefix($0) })
            // An IPv6 block without an IPv6 range (or the reverse) is a grant this node cannot use.
            guard (settings.podRangeV6 == nil) == (assignment.podCIDRV6 == nil) else {
                throw JoinError.malformedMessage("grant has an IPv6 pod range without an IPv6 block, or the reverse")
            }
            return JoinGrant(clusterID: w.cluster_id, settings: settings, assignment: assignment,
                             keyring: Keyring(primary: primary, others: Array(keys.dropFirst())),
                             authority: try IdentityPublicKey(bytes: Array(authority)),
                             certificate: try NodeCertificate(decoding: Array(certificate)),
                             revocations: revocations, members: Array(members))
        } catch let e as JoinError {
            throw e
        } catch {
            throw JoinError.malformedMessage("sealed grant does not decode: \(error)")
        }
    }
}

// MARK: - Byte helpers

extension KeyedDecodingContainer {
    func decodeBase64(_ key: Key) throws -> [UInt8] {
        let text = try decode(String.self, forKey: key)
        guard let data = Data(base64Encoded: text) else {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "not base64")
        }
        return Array(data)
    }
}
