import ByteCodec
import IPNetwork
import WireMeshCrypto

/// What the cluster authority vouches for about one node: that the node named N with identity I owns
/// these pod CIDRs and this overlay address, as of `issuedAt`.
///
/// Carried inside the node's own record (extension `tag`), so it costs no extra message; the name and
/// identity are the record's own and are not repeated in the encoding, only in the signed bytes.
/// Ordinary members cannot forge one: only authority nodes hold the authority seed.
public struct NodeCertificate: Sendable, Equatable {
    public var podCIDRs: [IPPrefix]
    public var overlayAddress: IPAddress?
    /// Unix milliseconds when the authority issued it. Two certificates that overlap (two authorities
    /// admitting at the same instant) are ordered by it: the older owns the prefix.
    public var issuedAt: UInt64
    /// Ed25519 by the authority over `signedBytes`.
    public var signature: Signature

    static let context = Array("wiremesh/certificate/v1".utf8)
    /// Extension tag in `NodeRecord.canonicalEncoding`.
    static let tag: UInt8 = 0xC2

    static func signedBytes(clusterID: String, name: String, identity: IdentityPublicKey, podCIDRs: [IPPrefix],
                            overlayAddress: IPAddress?, issuedAt: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 160)
        w.raw(context)
        w.shortString(clusterID)
        w.shortString(name)
        w.raw(identity.bytes)
        encodeBody(podCIDRs: podCIDRs, overlayAddress: overlayAddress, issuedAt: issuedAt, into: &w)
        return w.bytes
    }

    static func encodeBody(podCIDRs: [IPPrefix], overlayAddress: IPAddress?, issuedAt: UInt64, into w: inout ByteWriter) {
        w.u64(issuedAt)
        w.u8(UInt8(podCIDRs.count))
        for p in podCIDRs { w.prefix(p) }
        if let o = overlayAddress { w.u8(1); w.address(o) } else { w.u8(0) }
    }

    /// Issues a certificate (on an authority node).
    public static func issue(clusterID: String, name: String, identity: IdentityPublicKey, podCIDRs: [IPPrefix],
                             overlayAddress: IPAddress?, issuedAt: UInt64, authority: SigningIdentity) -> NodeCertificate {
        let cidrs = Array(podCIDRs.map(\.network).prefix(8))
        let bytes = signedBytes(clusterID: clusterID, name: name, identity: identity, podCIDRs: cidrs,
                                overlayAddress: overlayAddress, issuedAt: issuedAt)
        return NodeCertificate(podCIDRs: cidrs, overlayAddress: overlayAddress, issuedAt: issuedAt,
                               signature: authority.sign(bytes))
    }

    public init(podCIDRs: [IPPrefix], overlayAddress: IPAddress?, issuedAt: UInt64, signature: Signature) {
        self.podCIDRs = podCIDRs
        self.overlayAddress = overlayAddress
        self.issuedAt = issuedAt
        self.signature = signature
    }

    /// True when `authority` signed this certificate for `name` and `identity` in `clusterID`.
    public func verify(clusterID: String, name: String, identity: IdentityPublicKey, authority: IdentityPublicKey) -> Bool {
        authority.verify(signature, over: Self.signedBytes(clusterID: clusterID, name: name, identity: identity,
                                                           podCIDRs: podCIDRs, overlayAddress: overlayAddress, issuedAt: issuedAt))
    }

    func encode(into w: inout ByteWriter) {
        Self.encodeBody(podCIDRs: podCIDRs, overlayAddress: overlayAddress, issuedAt: issuedAt, into: &w)
        w.raw(signature.bytes)
    }

    static func decode(_ r: inout ByteReader) throws(WireDecodeError) -> NodeCertificate {
        let issuedAt = try r.u64()
        let n = Int(try r.u8())
        guard n <= 8 else { throw .malformed("certificate lists \(n) pod CIDRs, at most 8") }
        var cidrs: [IPPrefix] = []
        for _ in 0..<n { cidrs.append(try r.prefix()) }
        var overlay: IPAddress?
        switch try r.u8() {
        case 0: overlay = nil
        case 1: overlay = try r.address()
        default: throw .malformed("certificate overlay flag")
        }
        guard let signature = try? Signature(bytes: try r.raw(Signature.length)) else { throw .truncated }
        return NodeCertificate(podCIDRs: cidrs, overlayAddress: overlay, issuedAt: issuedAt, signature: signature)
    }

    /// The standalone bytes (state files, join grants).
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 96)
        encode(into: &w)
        return w.bytes
    }

    /// Decodes `encoded`; never traps.
    public init(decoding bytes: [UInt8]) throws(WireDecodeError) {
        var r = ByteReader(bytes)
        self = try Self.decode(&r)
        guard r.isAtEnd else { throw .malformed("trailing bytes after certificate") }
    }
}

/// The authority's signed list of evicted nodes. Each new list carries every earlier entry and a
/// higher `serial`; members keep the highest valid one, persist it and hand it to each other (and
/// to joiners), and announce only its serial in their records (`NodeRecord.revocationSerial`).
public struct RevocationList: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var identity: IdentityPublicKey
        /// Unix milliseconds of the eviction.
        public var evictedAt: UInt64

        public init(name: String, identity: IdentityPublicKey, evictedAt: UInt64) {
            self.name = name
            self.identity = identity
            self.evictedAt = evictedAt
        }
    }

    public var serial: UInt32
    public var entries: [Entry]
    public var signature: Signature

    static let context = Array("wiremesh/revocations/v1".utf8)
    /// More than any cluster evicts; bounds what a decoder allocates.
    public static let maxEntries = 65_536

    static func body(serial: UInt32, entries: [Entry]) -> [UInt8] {
        var w = ByteWriter(capacity: 8 + entries.count * 48)
        w.u32(serial)
        w.u32(UInt32(entries.count))
        for e in entries { w.shortString(e.name); w.raw(e.identity.bytes); w.u64(e.evictedAt) }
        return w.bytes
    }

    static func signedBytes(clusterID: String, body: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: body.count + 48)
        w.raw(context)
        w.shortString(clusterID)
        w.raw(body)
        return w.bytes
    }

    /// The next list: `previous` (nil: none yet) plus `entry`, signed by the authority.
    public static func issue(adding entry: Entry, to previous: RevocationList?, clusterID: String,
                             authority: SigningIdentity) throws(RevocationError) -> RevocationList {
        let old = previous?.entries ?? []
        guard !old.contains(where: { $0.identity == entry.identity }) else { throw .alreadyEvicted(entry.name) }
        let (serial, overflow) = (previous?.serial ?? 0).addingReportingOverflow(1)
        guard !overflow, old.count < maxEntries else { throw .full }
        let entries = old + [entry]
        let sig = authority.sign(signedBytes(clusterID: clusterID, body: body(serial: serial, entries: entries)))
        return RevocationList(serial: serial, entries: entries, signature: sig)
    }

    public init(serial: UInt32, entries: [Entry], signature: Signature) {
        self.serial = serial
        self.entries = entries
        self.signature = signature
    }

    public func verify(clusterID: String, authority: IdentityPublicKey) -> Bool {
        authority.verify(signature, over: Self.signedBytes(clusterID: clusterID, body: Self.body(serial: serial, entries: entries)))
    }

    public func contains(_ identity: IdentityPublicKey) -> Bool { entries.contains { $0.identity == identity } }

    public var encoded: [UInt8] { Self.body(serial: serial, entries: entries) + signature.bytes }

    /// Decodes `encoded` (without verifying); never traps, allocates at most what the bytes hold.
    public init(decoding bytes: [UInt8]) throws(WireDecodeError) {
        var r = ByteReader(bytes)
        serial = try r.u32()
        let n = Int(try r.u32())
        // Each entry takes at least 1 + 1 + 32 + 8 bytes: a count the bytes cannot hold is a lie.
        guard n <= Self.maxEntries, n <= r.remaining / 42 else { throw .malformed("revocation count \(n)") }
        var entries: [Entry] = []
        entries.reserveCapacity(n)
        for _ in 0..<n {
            let name = try r.shortString()
            guard let identity = try? IdentityPublicKey(bytes: try r.raw(32)) else { throw .truncated }
            entries.append(Entry(name: name, identity: identity, evictedAt: try r.u64()))
        }
        guard let sig = try? Signature(bytes: try r.raw(Signature.length)) else { throw .truncated }
        guard r.isAtEnd else { throw .malformed("trailing bytes after revocation list") }
        self.entries = entries
        signature = sig
    }
}

public enum RevocationError: Error, Equatable, Sendable, CustomStringConvertible {
    case alreadyEvicted(String)
    case full

    public var description: String {
        switch self {
        case .alreadyEvicted(let name): return "node '\(name)' is already evicted"
        case .full: return "the revocation list is full: create a new cluster"
        }
    }
}

/// Why a record was refused by `ClusterTrust`.
public enum TrustRefusal: Error, Equatable, Sendable, CustomStringConvertible {
    case noCertificate(String)
    case badCertificate(String)
    case prefixMismatch(String)
    case outsideRange(String, IPPrefix)
    case evicted(String)

    public var description: String {
        switch self {
        case .noCertificate(let n): return "record of '\(n)' carries no authority certificate"
        case .badCertificate(let n): return "record of '\(n)' carries a certificate the cluster authority did not sign for it"
        case .prefixMismatch(let n): return "record of '\(n)' claims pod CIDRs or an overlay address its certificate does not grant"
        case .outsideRange(let n, let p): return "certificate of '\(n)' grants \(p), outside the cluster range"
        case .evicted(let n): return "'\(n)' was evicted from the cluster"
        }
    }
}

/// What every member checks a record against before it enters the view: the authority's
/// certificate binds the record's name, identity and prefixes, the prefixes lie inside the
/// cluster range, and the identity is not evicted. Pure.
public struct ClusterTrust: Sendable, Equatable {
    public let authority: IdentityPublicKey
    public let clusterID: String
    public let ranges: [IPPrefix]
    public private(set) var revocations: RevocationList?
    private var revoked: Set<IdentityPublicKey>

    public init(authority: IdentityPublicKey, clusterID: String, ranges: [IPPrefix], revocations: RevocationList? = nil) {
        self.authority = authority
        self.clusterID = clusterID
        self.ranges = ranges.map(\.network)
        self.revocations = nil
        self.revoked = []
        _ = adopt(revocations)
    }

    /// Takes `list` if it is valid and newer than the one held; returns whether it did.
    @discardableResult
    public mutating func adopt(_ list: RevocationList?) -> Bool {
        guard let list, list.serial > (revocations?.serial ?? 0), list.verify(clusterID: clusterID, authority: authority) else { return false }
        revocations = list
        revoked = Set(list.entries.map(\.identity))
        return true
    }

    public var revocationSerial: UInt32 { revocations?.serial ?? 0 }

    public func isEvicted(_ identity: IdentityPublicKey) -> Bool { revoked.contains(identity) }

    /// nil when `record` may enter the view; else why not. About 50 µs (one signature check).
    public func refusal(for record: NodeRecord) -> TrustRefusal? {
        let name = record.name
        if revoked.contains(record.identity) { return .evicted(name) }
        guard let cert = record.certificate else { return .noCertificate(name) }
        guard record.podCIDRs == cert.podCIDRs, record.overlayAddress == cert.overlayAddress else { return .prefixMismatch(name) }
        for p in cert.podCIDRs where !ranges.contains(where: { $0.contains(p) }) { return .outsideRange(name, p) }
        if let o = cert.overlayAddress, let host = try? IPPrefix(address: o, length: o.bitWidth),
           !ranges.contains(where: { $0.contains(host) }) {
            return .outsideRange(name, host)
        }
        guard cert.verify(clusterID: clusterID, name: name, identity: record.identity, authority: authority) else {
            return .badCertificate(name)
        }
        return nil
    }
}
