import ByteCodec
import IPNetwork
import WireMeshCrypto

/// What one node tells the cluster about itself: everything a peer needs to configure WireGuard
/// towards it. Authored (and signed) only by its owner; other members relay it unchanged.
public struct NodeRecord: Sendable, Equatable {
    /// Unique node name (1–63 bytes of UTF-8); bound to `identity` by first use.
    public var name: String
    /// The Ed25519 key that signs this record; the node's long-term identity.
    public var identity: IdentityPublicKey
    /// Bumped by the owner on every change; a lower or equal version never replaces a higher one.
    public var version: UInt64
    /// The node's current WireGuard public key.
    public var wireguardKey: Key
    /// The next WireGuard public key during a rotation (peers may pre-install it), else nil.
    public var pendingWireguardKey: Key?
    /// Where WireGuard packets reach the node (v4 and/or v6).
    public var wireguardEndpoints: [Endpoint]
    /// Where the node's membership protocol listens.
    public var gossipAddress: Endpoint
    /// Pod CIDRs routed to this node through the mesh.
    public var podCIDRs: [IPPrefix]
    /// The node's own address inside the mesh, if any.
    public var overlayAddress: IPAddress?
    /// Free-form labels (keys and values at most 255 bytes each).
    public var labels: [String: String]
    /// Join tokens this node issued, revoked or admitted with (see `TokenAnnouncement`).
    public var tokens: [TokenAnnouncement]
    /// The cluster (gossip) keys the node holds, its primary first (cluster key rotation reads these:
    /// a new key becomes primary once every live member lists it). At most 8.
    public var clusterKeys: [ClusterKeyTag] = []
    /// The cluster authority's certificate for this node's name, identity and prefixes; members
    /// refuse a record without a valid one (`ClusterTrust`).
    public var certificate: NodeCertificate?
    /// Serial of the newest revocation list the node holds (0: none); a member that sees a higher
    /// one fetches the list with the keyring.
    public var revocationSerial: UInt32 = 0
    /// Tags of extensions this version does not know, skipped when the record was decoded (written
    /// by a newer node; they stay in its signed bytes). Never encoded.
    public internal(set) var unknownExtensionTags: [UInt8] = []

    /// A record with the given fields; `version` starts at 1 unless given.
    public init(name: String, identity: IdentityPublicKey, version: UInt64 = 1, wireguardKey: Key,
                pendingWireguardKey: Key? = nil, wireguardEndpoints: [Endpoint] = [], gossipAddress: Endpoint,
                podCIDRs: [IPPrefix] = [], overlayAddress: IPAddress? = nil, labels: [String: String] = [:],
                tokens: [TokenAnnouncement] = []) {
        self.name = name
        self.identity = identity
        self.version = version
        self.wireguardKey = wireguardKey
        self.pendingWireguardKey = pendingWireguardKey
        self.wireguardEndpoints = wireguardEndpoints
        self.gossipAddress = gossipAddress
        self.podCIDRs = podCIDRs
        self.overlayAddress = overlayAddress
        self.labels = labels
        self.tokens = tokens
    }

    /// Domain separation for record signatures, so a record signature can never be replayed as
    /// a signature over anything else (and vice versa).
    static let signingContext = Array("wiremesh/record/v1".utf8)

    /// Checks the limits the canonical encoding relies on.
    public func validate() throws(RecordError) {
        let n = name.utf8.count
        guard n >= 1, n <= 63 else { throw .invalidName(name) }
        guard wireguardEndpoints.count <= 16 else { throw .tooMany(field: "wireguardEndpoints", count: wireguardEndpoints.count, limit: 16) }
        guard podCIDRs.count <= 64 else { throw .tooMany(field: "podCIDRs", count: podCIDRs.count, limit: 64) }
        guard labels.count <= 255 else { throw .tooMany(field: "labels", count: labels.count, limit: 255) }
        guard tokens.count <= TokenAnnouncement.maxPerRecord else {
            throw .tooMany(field: "tokens", count: tokens.count, limit: TokenAnnouncement.maxPerRecord)
        }
        guard Set(tokens.map(\.id)).count == tokens.count else { throw .malformed("a token id is announced twice") }
        for (k, v) in labels where k.utf8.count > 255 || v.utf8.count > 255 {
            throw .labelTooLong(key: k)
        }
        guard clusterKeys.count <= 8 else { throw .tooMany(field: "clusterKeys", count: clusterKeys.count, limit: 8) }
        if let certificate, certificate.podCIDRs.count > 8 {
            throw .tooMany(field: "certificate pod CIDRs", count: certificate.podCIDRs.count, limit: 8)
        }
    }

    /// The canonical encoding that is signed and carried on the wire (labels sorted by key).
    public func canonicalEncoding() throws(RecordError) -> [UInt8] {
        try validate()
        var w = ByteWriter(capacity: 192)
        w.shortString(name)
        w.raw(identity.bytes)
        w.u64(version)
        wireguardKey.withUnsafeBytes { w.raw($0) }
        if let p = pendingWireguardKey {
            w.u8(1); p.withUnsafeBytes { w.raw($0) }
        } else {
            w.u8(0)
        }
        w.u8(UInt8(wireguardEndpoints.count))
        for e in wireguardEndpoints { w.endpoint(e) }
        w.endpoint(gossipAddress)
        w.u8(UInt8(podCIDRs.count))
        for p in podCIDRs { w.prefix(p) }
        if let o = overlayAddress { w.u8(1); w.address(o) } else { w.u8(0) }
        w.u8(UInt8(labels.count))
        for k in labels.keys.sorted(by: { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }) {
            w.shortString(k); w.shortString(labels[k]!)
        }
        // Trailing extensions in increasing tag order, each absent when empty (so records without
        // them keep their bytes), each `tag ‖ varint length ‖ body`: a node that does not know a
        // tag skips it and still accepts the record (rolling upgrades add extensions).
        if !tokens.isEmpty {
            var body = ByteWriter()
            TokenAnnouncement.encodeEntries(tokens, into: &body)
            Self.writeExtension(TokenAnnouncement.sectionTag, body.bytes, into: &w)
        }
        if !clusterKeys.isEmpty {
            var body = ByteWriter()
            body.u8(UInt8(clusterKeys.count))
            for t in clusterKeys { body.raw(t.id.bytes); body.varint(t.generation) }
            Self.writeExtension(Self.clusterKeysTag, body.bytes, into: &w)
        }
        if let certificate {
            var body = ByteWriter(capacity: 96)
            certificate.encode(into: &body)
            Self.writeExtension(NodeCertificate.tag, body.bytes, into: &w)
        }
        if revocationSerial > 0 {
            var body = ByteWriter()
            body.varint(UInt64(revocationSerial))
            Self.writeExtension(Self.revocationSerialTag, body.bytes, into: &w)
        }
        return w.bytes
    }

    static func writeExtension(_ tag: UInt8, _ body: [UInt8], into w: inout ByteWriter) {
        w.u8(tag); w.varint(UInt64(body.count)); w.raw(body)
    }

    /// Decodes a canonical encoding; rejects trailing bytes so each record has exactly one encoding.
    static func decode(_ r: inout ByteReader) throws(WireDecodeError) -> NodeRecord {
        let name = try r.shortString()
        guard !name.isEmpty, name.utf8.count <= 63 else { throw .malformed("node name length") }
        guard let identity = try? IdentityPublicKey(bytes: try r.raw(32)) else { throw .truncated }
        let version = try r.u64()
        guard let wgKey = try? Key(bytes: try r.raw(32)) else { throw .truncated }
        var pending: Key?
        switch try r.u8() {
        case 0: pending = nil
        case 1: pending = try? Key(bytes: try r.raw(32)); if pending == nil { throw .truncated }
        default: throw .malformed("pending key flag")
        }
        let nEndpoints = Int(try r.u8())
        guard nEndpoints <= 16 else { throw .malformed("too many endpoints") }
        var endpoints: [Endpoint] = []
        for _ in 0..<nEndpoints { endpoints.append(try r.endpoint()) }
        let gossip = try r.endpoint()
        let nPrefixes = Int(try r.u8())
        guard nPrefixes <= 64 else { throw .malformed("too many pod CIDRs") }
        var prefixes: [IPPrefix] = []
        for _ in 0..<nPrefixes { prefixes.append(try r.prefix()) }
        var overlay: IPAddress?
        switch try r.u8() {
        case 0: overlay = nil
        case 1: overlay = try r.address()
        default: throw .malformed("overlay flag")
        }
        let nLabels = Int(try r.u8())
        var labels: [String: String] = [:]
        var previous: [UInt8]?
        for _ in 0..<nLabels {
            let k = try r.shortString()
            let kb = Array(k.utf8)
            if let p = previous, !p.lexicographicallyPrecedes(kb) { throw .malformed("labels not sorted") }
            previous = kb
            // Two keys with different bytes that Swift takes for one (canonically equivalent, e.g.
            // "e\u{301}" and "\u{e9}") would leave one label and a record that re-encodes differently.
            guard labels[k] == nil else { throw .malformed("two labels with equivalent keys") }
            labels[k] = try r.shortString()
        }
        var record = NodeRecord(name: name, identity: identity, version: version, wireguardKey: wgKey,
                                pendingWireguardKey: pending, wireguardEndpoints: endpoints, gossipAddress: gossip,
                                podCIDRs: prefixes, overlayAddress: overlay, labels: labels)
        var lastTag = -1
        while !r.isAtEnd {
            let tag = try r.u8()
            guard Int(tag) > lastTag else { throw .malformed("record extensions out of order") }
            lastTag = Int(tag)
            let length = try r.varint()
            guard length <= UInt64(r.remaining) else { throw .truncated }
            let bodyEnd = r.offset + Int(length)
            var body = ByteReader(r.bytes, offset: r.offset, end: bodyEnd)
            r.offset = bodyEnd
            switch tag {
            case TokenAnnouncement.sectionTag:
                record.tokens = try TokenAnnouncement.decodeEntries(&body)
            case clusterKeysTag:
                let n = Int(try body.u8())
                guard (1...8).contains(n) else { throw .malformed("cluster key count \(n)") }
                for _ in 0..<n {
                    guard let id = ClusterKeyID(bytes: try body.raw(ClusterKeyID.length)) else { throw .truncated }
                    record.clusterKeys.append(ClusterKeyTag(id: id, generation: try body.varint()))
                }
            case NodeCertificate.tag:
                record.certificate = try NodeCertificate.decode(&body)
            case revocationSerialTag:
                let serial = try body.varint()
                guard serial > 0, serial <= UInt64(UInt32.max) else { throw .malformed("revocation serial \(serial)") }
                record.revocationSerial = UInt32(serial)
            default:
                // A newer node's extension: its bytes stay in the signed encoding, which is what
                // is verified and relayed; this node just does not read it.
                record.unknownExtensionTags.append(tag)
                continue
            }
            guard body.isAtEnd else { throw .malformed("record extension \(tag) has trailing bytes") }
        }
        return record
    }

    /// Extension tag of `clusterKeys` in the canonical encoding.
    static let clusterKeysTag: UInt8 = 0xC1
    /// Extension tag of `revocationSerial`.
    static let revocationSerialTag: UInt8 = 0xC3
}

/// Why a node record was refused.
public enum RecordError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidName(String)
    case tooMany(field: String, count: Int, limit: Int)
    case labelTooLong(key: String)
    /// The signed record does not fit in one datagram next to a probe message.
    case tooLarge(name: String, bytes: Int, limit: Int)
    /// The record names an identity other than the signing identity.
    case identityMismatch(name: String)
    /// The signature does not verify with the record's identity.
    case badSignature(name: String)
    case malformed(String)

    public var description: String {
        switch self {
        case .invalidName(let n):
            return "node name '\(n)' is invalid: it must be 1 to 63 bytes of UTF-8"
        case .tooMany(let field, let count, let limit):
            return "node record has \(count) \(field), at most \(limit) are allowed: remove some"
        case .labelTooLong(let key):
            return "node label '\(key.prefix(32))' is too long: keys and values are limited to 255 bytes"
        case .tooLarge(let name, let bytes, let limit):
            return "node record of '\(name)' is \(bytes) bytes signed, at most \(limit) fit in a gossip datagram: shorten or remove labels"
        case .identityMismatch(let name):
            return "node record of '\(name)' names an identity different from the key signing it"
        case .badSignature(let name):
            return "node record of '\(name)' has a signature that does not verify with its identity"
        case .malformed(let why):
            return "node record is malformed: \(why)"
        }
    }
}

/// A node record with its owner's Ed25519 signature over `signingContext ‖ canonical encoding`.
///
/// Immutable and held by reference: every member view keeps a copy of every record, and a copy is
/// one pointer to the same storage instead of ~450 bytes inline (N views × N members at 10,000 nodes).
public struct SignedNodeRecord: Sendable, Equatable {
    private final class Storage: Sendable {
        let record: NodeRecord
        let encodedRecord: [UInt8]
        let signature: Signature

        init(record: NodeRecord, encodedRecord: [UInt8], signature: Signature) {
            self.record = record
            self.encodedRecord = encodedRecord
            self.signature = signature
        }
    }

    private let storage: Storage

    /// The record as its owner wrote it.
    public var record: NodeRecord {
        // Lent, not copied: callers read one field of it on hot paths.
        _read { yield storage.record }
    }
    /// The canonical encoding of `record` (kept so it is computed once).
    public var encodedRecord: [UInt8] {
        _read { yield storage.encodedRecord }
    }
    /// The owner's signature.
    public var signature: Signature { storage.signature }

    /// Signs `record` with `identity`; fails if the record is invalid or names another identity.
    public init(signing record: NodeRecord, with identity: SigningIdentity) throws(RecordError) {
        guard record.identity == identity.publicKey else { throw .identityMismatch(name: record.name) }
        let encoded = try record.canonicalEncoding()
        storage = Storage(record: record, encodedRecord: encoded, signature: identity.sign(NodeRecord.signingContext + encoded))
    }

    /// Wraps a record and a signature without checking it (call `verify()`).
    init(record: NodeRecord, encodedRecord: [UInt8], signature: Signature) {
        storage = Storage(record: record, encodedRecord: encodedRecord, signature: signature)
    }

    /// True when the signature verifies with `record.identity` (about 50 µs: callers cache).
    public func verify() -> Bool {
        record.identity.verify(signature, over: NodeRecord.signingContext + encodedRecord)
    }

    /// The wire form: u16 length of the record ‖ record ‖ 64-byte signature.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: encodedRecord.count + 66)
        encode(into: &w)
        return w.bytes
    }

    func encode(into w: inout ByteWriter) {
        w.u16(UInt16(encodedRecord.count))
        w.raw(encodedRecord)
        w.raw(signature.bytes)
    }

    /// Decodes the wire form (without verifying the signature). Never traps.
    public static func decode(_ bytes: [UInt8]) throws(WireDecodeError) -> SignedNodeRecord {
        var r = ByteReader(bytes)
        let s = try decode(&r)
        guard r.isAtEnd else { throw .malformed("trailing bytes after signed record") }
        return s
    }

    static func decode(_ r: inout ByteReader) throws(WireDecodeError) -> SignedNodeRecord {
        let n = Int(try r.u16())
        let start = r.offset
        guard r.remaining >= n else { throw .truncated }
        var inner = ByteReader(r.bytes, offset: start, end: start + n)
        let record = try NodeRecord.decode(&inner)
        guard inner.isAtEnd else { throw .malformed("trailing bytes in record") }
        let encoded = Array(r.bytes[start..<start + n])
        r.offset = start + n
        guard let sig = try? Signature(bytes: try r.raw(64)) else { throw .truncated }
        return SignedNodeRecord(record: record, encodedRecord: encoded, signature: sig)
    }

    /// Bytes of the wire form.
    public var encodedSize: Int { 2 + encodedRecord.count + Signature.length }

    public static func == (a: SignedNodeRecord, b: SignedNodeRecord) -> Bool {
        a.storage === b.storage || (a.encodedRecord == b.encodedRecord && a.signature == b.signature)
    }
}
