import Foundation
import Membership
import IPNetwork
import WireMeshCrypto
import WireMeshJoin

/// The state files' formats: versioned JSON, checked on load (a damaged or foreign file is named).
extension StateStore {
    struct ClusterFile: Codable, Equatable {
        var clusterID: String
        var settings: ClusterSettings
        var node: NodeAssignment
        /// The cluster authority's public key (every member checks certificates against it).
        var authority: IdentityPublicKey
        /// The authority's certificate for this node.
        var certificate: NodeCertificate

        enum CodingKeys: String, CodingKey {
            case version, clusterID = "cluster_id", podRange = "pod_range", nodePrefixLength = "node_prefix_length"
            case nodeName = "node_name", podCIDR = "pod_cidr", overlayAddress = "overlay_address"
            case authority, certificate
            // Dual-stack only: absent for IPv4 clusters, whose files keep their bytes.
            case podRangeV6 = "pod_range_v6", nodePrefixLengthV6 = "node_prefix_length_v6", podCIDRV6 = "pod_cidr_v6"
        }

        init(clusterID: String, settings: ClusterSettings, node: NodeAssignment, authority: IdentityPublicKey, certificate: NodeCertificate) {
            self.clusterID = clusterID
            self.settings = settings
            self.node = node
            self.authority = authority
            self.certificate = certificate
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let version = try c.decode(Int.self, forKey: .version)
            guard version == 2 else {
                throw DecodingError.dataCorruptedError(forKey: .version, in: c, debugDescription: version == 1
                    ? "format 1 (before the cluster authority): this node cannot take part in a cluster of this version; join again from a fresh state directory"
                    : "unsupported version \(version)")
            }
            clusterID = try c.decode(String.self, forKey: .clusterID)
            settings = ClusterSettings(podRange: try c.decodePrefix(.podRange),
                                       nodePrefixLength: try c.decode(Int.self, forKey: .nodePrefixLength),
                                       podRangeV6: c.contains(.podRangeV6) ? try c.decodePrefix(.podRangeV6) : nil,
                                       nodePrefixLengthV6: try c.decodeIfPresent(Int.self, forKey: .nodePrefixLengthV6)
                                           ?? ClusterSettings.defaultNodePrefixLengthV6)
            node = NodeAssignment(name: try c.decode(String.self, forKey: .nodeName),
                                  podCIDR: try c.decodePrefix(.podCIDR),
                                  overlayAddress: try c.decodeAddress(.overlayAddress),
                                  podCIDRV6: c.contains(.podCIDRV6) ? try c.decodePrefix(.podCIDRV6) : nil)
            // What loads is what `init`/`join` could have written: a block that is not one of the
            // range's (0.0.0.0/0, a prefix length of 99) would route the wrong traffic into the mesh.
            let ipam: IPAM
            do { ipam = try IPAM(clusterRange: settings.podRange, nodePrefixLength: settings.nodePrefixLength) } catch {
                throw DecodingError.dataCorruptedError(forKey: .podRange, in: c, debugDescription: "\(error)")
            }
            guard ipam.clusterRange.contains(node.podCIDR), node.podCIDR.length == settings.nodePrefixLength,
                  node.podCIDR == node.podCIDR.network else {
                throw DecodingError.dataCorruptedError(forKey: .podCIDR, in: c, debugDescription:
                    "\(node.podCIDR) is not a /\(settings.nodePrefixLength) block of the cluster range \(settings.podRange)")
            }
            let ipamV6: IPAM?
            do { ipamV6 = try settings.ipamV6() } catch {
                throw DecodingError.dataCorruptedError(forKey: .podRangeV6, in: c, debugDescription: "\(error)")
            }
            switch (ipamV6, node.podCIDRV6) {
            case (nil, nil): break
            case (let ipamV6?, let block?):
                guard ipamV6.clusterRange.contains(block), block.length == ipamV6.nodePrefixLength, block == block.network else {
                    throw DecodingError.dataCorruptedError(forKey: .podCIDRV6, in: c, debugDescription:
                        "\(block) is not a /\(ipamV6.nodePrefixLength) block of the IPv6 cluster range \(ipamV6.clusterRange)")
                }
            default:
                throw DecodingError.dataCorruptedError(forKey: .podCIDRV6, in: c, debugDescription:
                    "pod_range_v6 and pod_cidr_v6 must be both present (dual-stack) or both absent")
            }
            guard node.podCIDR.contains(node.overlayAddress) else {
                throw DecodingError.dataCorruptedError(forKey: .overlayAddress, in: c, debugDescription:
                    "\(node.overlayAddress) is not inside this node's pod CIDR \(node.podCIDR)")
            }
            guard let authorityBytes = Data(base64Encoded: try c.decode(String.self, forKey: .authority)),
                  let key = try? IdentityPublicKey(bytes: Array(authorityBytes)) else {
                throw DecodingError.dataCorruptedError(forKey: .authority, in: c, debugDescription: "not a base64 Ed25519 public key")
            }
            authority = key
            guard let certBytes = Data(base64Encoded: try c.decode(String.self, forKey: .certificate)),
                  let cert = try? NodeCertificate(decoding: Array(certBytes)) else {
                throw DecodingError.dataCorruptedError(forKey: .certificate, in: c, debugDescription: "not a base64 node certificate")
            }
            certificate = cert
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(2, forKey: .version)
            try c.encode(clusterID, forKey: .clusterID)
            try c.encode(settings.podRange.description, forKey: .podRange)
            try c.encode(settings.nodePrefixLength, forKey: .nodePrefixLength)
            try c.encode(node.name, forKey: .nodeName)
            try c.encode(node.podCIDR.description, forKey: .podCIDR)
            try c.encode(node.overlayAddress.description, forKey: .overlayAddress)
            try c.encode(Data(authority.bytes).base64EncodedString(), forKey: .authority)
            try c.encode(Data(certificate.encoded).base64EncodedString(), forKey: .certificate)
            if let range = settings.podRangeV6 {
                try c.encode(range.description, forKey: .podRangeV6)
                try c.encode(settings.nodePrefixLengthV6, forKey: .nodePrefixLengthV6)
            }
            try c.encodeIfPresent(node.podCIDRV6?.description, forKey: .podCIDRV6)
        }
    }

    struct KeyringFile: Codable {
        var keys: [String]
        /// Per key (same order): its generation, nil when unknown.
        var generations: [UInt64?]?
        /// Per key: when it is removed, nil when it is not retiring.
        var retireAt: [Date?]?
        enum CodingKeys: String, CodingKey { case keys, generations, retireAt = "retire_at" }
    }
    struct SettingsFile: Codable {
        var version: Int
        var settings: [String: String]
    }

    /// `version` is absent in files of format 1 (token records with a stored key hash).
    struct TokensFile: Codable {
        var version: Int?
        var tokens: [TokenRecord]
        init(version: Int, tokens: [TokenRecord]) { self.version = version; self.tokens = tokens }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            version = try c.decodeIfPresent(Int.self, forKey: .version)
            tokens = version == nil ? [] : try c.decode([TokenRecord].self, forKey: .tokens)
        }
    }

    /// ISO 8601 text of a time (UTC, whole seconds), as state files and messages show it.
    static func timestamp(_ date: Date) -> String { date.formatted(.iso8601) }

    /// Parses `timestamp(_:)` output.
    static func parseTimestamp(_ text: String) -> Date? { try? Date(text, strategy: .iso8601) }

    func readCluster() throws -> ClusterFile { try readJSON(.cluster) }

    func writeCluster(_ cluster: ClusterFile) throws {
        try writeJSON(cluster, to: .cluster, mode: 0o644)
    }

    func writeKey(_ key: Key, to file: File) throws {
        try io { try AtomicFile.write(key.base64 + "\n", to: path(file), mode: 0o600) }
    }

    func readKey(_ file: File) throws -> Key {
        guard let key = try readKeyIfExists(file) else {
            throw StateError.corrupted(file: path(file), reason: "missing")
        }
        return key
    }

    func readKeyIfExists(_ file: File) throws -> Key? {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(file)) }) else { return nil }
        do {
            return try Key(base64: String(decoding: bytes, as: UTF8.self))
        } catch {
            throw StateError.corrupted(file: path(file), reason: "\(error)")
        }
    }

    func readKeyCreated() throws -> Date {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(.wireGuardKeyCreated)) }) else {
            throw StateError.corrupted(file: path(.wireGuardKeyCreated), reason: "missing")
        }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let date = Self.parseTimestamp(text) else {
            throw StateError.corrupted(file: path(.wireGuardKeyCreated), reason: "'\(text)' is not an ISO 8601 time")
        }
        return date
    }

    func writeJSON<T: Encodable>(_ value: T, to file: File, mode: mode_t) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        try io { try AtomicFile.write(Array(data) + [0x0A], to: path(file), mode: mode) }
    }

    func readJSON<T: Decodable>(_ file: File) throws -> T {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(file)) }) else {
            throw StateError.corrupted(file: path(file), reason: "missing")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw StateError.corrupted(file: path(file), reason: Self.describe(error))
        } catch {
            throw StateError.corrupted(file: path(file), reason: "\(error)")
        }
    }

    func io<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as FileError { throw StateError.io(e) }
    }

    /// A one-line reason for a JSON decoding failure (field path and what was wrong).
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.isEmpty ? "top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? "not valid JSON" : "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let key, let c): return "missing field '\(path(c.codingPath + [key]))'"
        case .typeMismatch(_, let c): return "\(path(c.codingPath)): wrong type"
        case .valueNotFound(_, let c): return "\(path(c.codingPath)): missing value"
        @unknown default: return "\(error)"
        }
    }
}

extension KeyedDecodingContainer {
    /// Decodes a CIDR string, naming the field when it does not parse.
    func decodePrefix(_ key: Key) throws -> IPPrefix {
        let text = try decode(String.self, forKey: key)
        do { return try IPPrefix(text) } catch {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(error)")
        }
    }

    /// Decodes an IP address string, naming the field when it does not parse.
    func decodeAddress(_ key: Key) throws -> IPAddress {
        let text = try decode(String.self, forKey: key)
        do { return try IPAddress(text) } catch {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(error)")
        }
    }
}
