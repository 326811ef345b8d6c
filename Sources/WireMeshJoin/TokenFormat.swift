import ByteCodec
import Foundation
import IPNetwork
import WireMeshCrypto

/// A join token, as printed by `wiremesh token create` and given to `wiremesh join`.
///
/// Text form: `wmj3.` followed by base64url (no padding) of this binary layout:
/// ```
/// u8      format version (3)
/// [8]     token id (random; printed as 16 hex digits by `token list`)
/// [32]    token key K (see `derivedKey`)
/// i64 BE  expiry, Unix seconds
/// u16 BE  uses limit (0 = unlimited until expiry)
/// [16]    fingerprint of the cluster authority's public key (BLAKE2b-128)
/// u8+utf8 cluster id
/// u8      number of members' gossip endpoints (1-4, tried in order), then each:
///         u8 family (4 or 6), 4 or 16 address bytes, u16 BE port
/// [4]     checksum: first 4 bytes of BLAKE2b-128 over everything above (catches copy/paste damage
///         before any network traffic)
/// ```
/// K is derived from the cluster authority's seed, which only authority nodes hold, from the serial of
/// the revocation list (every eviction changes it, so every token outstanding at an eviction stops
/// working), and from the id, expiry and uses limit, which the join request carries under K's MAC: so
/// any authority can check a request without having stored anything, and a joiner cannot stretch the
/// expiry or the limit. An ordinary member cannot mint a token.
/// The token never carries a cluster key: K only authenticates the join exchange (`JoinExchange`),
/// whose answer is sealed under a key derived from K and both sides' nonces.
public struct JoinToken: Sendable, Equatable {
    /// The text every token starts with (format version 2).
    public static let prefix = "wmj3."
    /// Tokens of earlier formats (1: before any member could admit, 2: before the authority).
    public static let oldPrefixes = ["wmj1.": 1, "wmj2.": 2]
    static let version: UInt8 = 3
    /// Bytes of a token id.
    public static let idLength = 8
    static let keyLength = 32
    static let fingerprintLength = 16
    static let checksumLength = 4
    /// Endpoints a token lists at most (this member first, then other live members).
    public static let maxEndpoints = 4
    /// The largest `--uses` a token can carry.
    public static let maxUses = Int(UInt16.max)

    /// Random token id (8 bytes); names the token in `token list` / `token revoke`.
    public let id: [UInt8]
    /// The token key K (`derivedKey`); the secret part of the token.
    public let key: Key
    /// The cluster the token admits into.
    public let clusterID: String
    /// Gossip endpoints of members that can admit the joiner (tried in order).
    public let endpoints: [Endpoint]
    /// When the token stops being accepted.
    public let expiresAt: Date
    /// How many joins the token admits across the cluster (nil: any number until it expires).
    public let usesLimit: Int?
    /// Fingerprint of the cluster authority's key (see `JoinToken.fingerprint(of:)`).
    public let authorityFingerprint: [UInt8]

    public init(id: [UInt8], key: Key, clusterID: String, endpoints: [Endpoint], expiresAt: Date, usesLimit: Int?,
                authorityFingerprint: [UInt8]) {
        precondition(id.count == Self.idLength && authorityFingerprint.count == Self.fingerprintLength)
        self.id = id
        self.key = key
        self.clusterID = clusterID
        self.endpoints = endpoints
        // The token holds whole seconds; keep the value equal to what parsing yields.
        self.expiresAt = Date(timeIntervalSince1970: expiresAt.timeIntervalSince1970.rounded(.down))
        self.usesLimit = usesLimit
        self.authorityFingerprint = authorityFingerprint
    }

    /// The token id as printed by `token list` (16 hex digits).
    public var idText: String { Hex.encode(id) }

    /// The fingerprint a token carries for the authority's public key (BLAKE2b-128 of its bytes).
    public static func fingerprint(of key: IdentityPublicKey) -> [UInt8] {
        KeyDerivation.genericHash(Array("wiremesh-authority".utf8) + key.bytes, outputLength: fingerprintLength)
    }

    /// K = BLAKE2b(key: KDF(authority seed, "wmtokens"), "wiremesh-token-v3" ‖ u32 revocation serial ‖ id ‖
    /// i64 expiry ‖ u16 uses limit). Every authority can recompute it; a separate subkey keeps token
    /// keys apart from signatures.
    public static func derivedKey(authoritySeed: Key, revocationSerial: UInt32, id: [UInt8], expiresAt: Int64, usesLimit: Int?) -> Key {
        let base = KeyDerivation.deriveSubkey(from: authoritySeed, id: 1, context: "wmtokens")
        var w = ByteWriter()
        w.raw("wiremesh-token-v3".utf8)
        w.u32(revocationSerial)
        w.raw(id)
        w.u64(UInt64(bitPattern: expiresAt))
        w.u16(UInt16(usesLimit ?? 0))
        return try! Key(bytes: KeyDerivation.genericHash(w.bytes, key: base.bytes))
    }

    /// The printable token.
    public var text: String {
        var w = ByteWriter()
        w.u8(Self.version)
        w.raw(id)
        w.raw(key.bytes)
        w.u64(UInt64(bitPattern: Int64(expiresAt.timeIntervalSince1970)))
        w.u16(UInt16(usesLimit ?? 0))
        w.raw(authorityFingerprint)
        w.shortString(clusterID)
        w.u8(UInt8(endpoints.count))
        for e in endpoints { w.endpoint(e) }
        w.raw(KeyDerivation.genericHash(w.bytes, outputLength: 16).prefix(Self.checksumLength))
        return Self.prefix + base64URLEncode(w.bytes)
    }

    /// Parses a token; every malformation is a `JoinError.garbled` naming what is wrong, a token of
    /// format 1 is `JoinError.outdatedToken`.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        for (prefix, version) in Self.oldPrefixes where trimmed.hasPrefix(prefix) { throw JoinError.outdatedToken(version: version) }
        guard trimmed.hasPrefix(Self.prefix) else {
            throw JoinError.garbled("it does not start with '\(Self.prefix)'")
        }
        guard let bytes = base64URLDecode(String(trimmed.dropFirst(Self.prefix.count))) else {
            throw JoinError.garbled("the part after '\(Self.prefix)' is not base64url")
        }
        guard bytes.count > Self.checksumLength else { throw JoinError.garbled("it is truncated") }
        let body = Array(bytes.dropLast(Self.checksumLength))
        let checksum = Array(bytes.suffix(Self.checksumLength))
        guard Array(KeyDerivation.genericHash(body, outputLength: 16).prefix(Self.checksumLength)) == checksum else {
            throw JoinError.garbled("checksum mismatch (incomplete or mistyped copy)")
        }
        var r = ByteReader(body)
        // Names the field a malformed token breaks in.
        func read<T>(_ field: String, _ body: (inout ByteReader) throws -> T) throws -> T {
            do { return try body(&r) } catch WireDecodeError.truncated {
                throw JoinError.garbled("truncated in the \(field)")
            } catch WireDecodeError.malformed(let what) {
                throw JoinError.garbled("\(field) \(what)")
            }
        }
        let version = try read("version") { try $0.u8() }
        guard version == Self.version else { throw JoinError.garbled("unsupported token version \(version)") }
        let id = try read("token id") { Array(try $0.raw(Self.idLength)) }
        let key = try Key(bytes: try read("token key") { try $0.raw(Self.keyLength) })
        let expiry = try read("expiry") { try $0.u64() }
        // `issue` keeps expiries below 2^32 s (the gossip entries hold u32): anything later is no token
        // of ours, and a time past 2^53 s is not even exact as a `Date` (nor, near 2^63, convertible back).
        guard expiry <= UInt64(UInt32.max) else { throw JoinError.garbled("expiry \(expiry) is past the year 2106") }
        let uses = Int(try read("uses limit") { try $0.u16() })
        let fingerprint = try read("authority fingerprint") { Array(try $0.raw(Self.fingerprintLength)) }
        let cluster = try read("cluster id") { try $0.shortString() }
        guard !cluster.isEmpty else { throw JoinError.garbled("empty cluster id") }
        let count = Int(try read("endpoint count") { try $0.u8() })
        var endpoints: [Endpoint] = []
        for _ in 0..<count { endpoints.append(try read("member endpoint") { try $0.endpoint() }) }
        guard endpoints.count > 0 else { throw JoinError.garbled("it names no member endpoint to contact") }
        guard r.isAtEnd else { throw JoinError.garbled("\(r.remaining) unexpected trailing bytes") }
        self.init(id: id, key: key, clusterID: cluster, endpoints: endpoints,
                  expiresAt: Date(timeIntervalSince1970: TimeInterval(expiry)), usesLimit: uses == 0 ? nil : uses,
                  authorityFingerprint: fingerprint)
    }

    /// Issues a new token and the entry the issuing member keeps (and announces). Pure: randomness
    /// is passed in.
    ///
    /// - Parameters:
    ///   - endpoints: members' gossip endpoints, the issuer first (at most `maxEndpoints` are kept).
    ///   - ttl: lifetime in seconds (> 0).
    ///   - uses: how many joins it admits (nil = any number until it expires).
    ///   - random: source of random bytes (secure by default; fixed in tests).
    ///   - revocationSerial: the serial of the revocation list the authority holds (0: none).
    public static func issue(clusterID: String, endpoints: [Endpoint], authority: SigningIdentity, revocationSerial: UInt32,
                             ttl: TimeInterval, uses: Int?, now: Date,
                             random: (Int) -> [UInt8] = secureRandomBytes) throws -> (JoinToken, TokenRecord) {
        guard ttl > 0 else { throw TokenRequestError.invalidLifetime("must be positive, got \(Int(ttl)) s") }
        // Gossip entries hold the expiry as u32 seconds.
        guard now.timeIntervalSince1970 + ttl < TimeInterval(UInt32.max) else {
            throw TokenRequestError.invalidLifetime("\(Int(ttl)) s is too long: the expiry must be before 2106")
        }
        if let uses, uses < 1 || uses > maxUses { throw TokenRequestError.invalidUses(uses) }
        guard !endpoints.isEmpty else {
            throw JoinError.invalidRequest("a token needs at least one member endpoint to contact (is the advertise address set?)")
        }
        guard clusterID.utf8.count <= 255, !clusterID.isEmpty else { throw JoinError.invalidRequest("invalid cluster id") }
        let id = random(idLength)
        let expiry = Int64(now.addingTimeInterval(ttl).timeIntervalSince1970)
        let key = derivedKey(authoritySeed: authority.seed, revocationSerial: revocationSerial, id: id, expiresAt: expiry, usesLimit: uses)
        let token = JoinToken(id: id, key: key, clusterID: clusterID, endpoints: Array(endpoints.prefix(maxEndpoints)),
                              expiresAt: Date(timeIntervalSince1970: TimeInterval(expiry)), usesLimit: uses,
                              authorityFingerprint: fingerprint(of: authority.publicKey))
        let record = TokenRecord(id: token.idText, createdAt: Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down)),
                                 expiresAt: token.expiresAt, usesLimit: uses, issued: true)
        return (token, record)
    }
}

/// Base64url without padding (the token text).
func base64URLEncode(_ bytes: [UInt8]) -> String {
    var s = Data(bytes).base64EncodedString()
    s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    while s.hasSuffix("=") { s.removeLast() }
    return s
}

/// The bytes of unpadded base64url; nil for anything else, including a text whose last character
/// carries bits past the bytes (Foundation ignores them, so two texts would name one token).
func base64URLDecode(_ text: String) -> [UInt8]? {
    guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    guard let bytes = Data(base64Encoded: s).map(Array.init), base64URLEncode(bytes) == text else { return nil }
    return bytes
}
