import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

// MARK: - Token string

/// A join token, as printed by `wiremesh token create` and given to `wiremesh join`.
///
/// Text form: `wmj2.` followed by base64url (no padding) of this binary layout:
/// ```
/// u8      format version (2)
/// [8]     token id (random; printed as 16 hex digits by `token list`)
/// [32]    token key K (see `derivedKey`)
/// i64 BE  expiry, Unix seconds
/// u16 BE  uses limit (0 = unlimited until expiry)
/// [16]    fingerprint of the cluster's join-signing public key (BLAKE2b-128)
/// u8+utf8 cluster id
/// u8      number of members' gossip endpoints (1-4, tried in order), then each:
///         u8 family (4 or 6), 4 or 16 address bytes, u16 BE port
/// [4]     checksum: first 4 bytes of BLAKE2b-128 over everything above (catches copy/paste damage
///         before any network traffic)
/// ```
/// K is derived from the cluster's join-signing seed, which every member holds, and from the id,
/// expiry and uses limit, which the join request carries under K's MAC: so any member can check a
/// request without having stored anything, and a joiner cannot stretch the expiry or the limit.
/// The token never carries a cluster key: K only authenticates the join exchange (`JoinExchange`),
/// whose answer is sealed under a key derived from K and both sides' nonces.
public struct JoinToken: Sendable, Equatable {
    /// The text every token starts with (format version 2).
    public static let prefix = "wmj2."
    /// Tokens of format 1 (before tokens could be admitted by any member).
    static let version1Prefix = "wmj1."
    static let version: UInt8 = 2
    static let idLength = 8
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
    /// Fingerprint of the cluster's join-signing identity (see `JoinToken.fingerprint(of:)`).
    public let joinSigningFingerprint: [UInt8]

    public init(id: [UInt8], key: Key, clusterID: String, endpoints: [Endpoint], expiresAt: Date, usesLimit: Int?,
                joinSigningFingerprint: [UInt8]) {
        precondition(id.count == Self.idLength && joinSigningFingerprint.count == Self.fingerprintLength)
        self.id = id
        self.key = key
        self.clusterID = clusterID
        self.endpoints = endpoints
        // The token holds whole seconds; keep the value equal to what parsing yields.
        self.expiresAt = Date(timeIntervalSince1970: expiresAt.timeIntervalSince1970.rounded(.down))
        self.usesLimit = usesLimit
        self.joinSigningFingerprint = joinSigningFingerprint
    }

    /// The token id as printed by `token list` (16 hex digits).
    public var idText: String { hex(id) }

    /// The fingerprint a token carries for a join-signing public key (BLAKE2b-128 of its bytes).
    public static func fingerprint(of key: IdentityPublicKey) -> [UInt8] {
        KeyDerivation.genericHash(Array("wiremesh-join-signing".utf8) + key.bytes, outputLength: fingerprintLength)
    }

    /// K = BLAKE2b(key: KDF(join-signing seed, "wmtokens"), "wiremesh-token-v2" ‖ id ‖ i64 expiry ‖ u16 uses limit).
    /// Every member can recompute it; a separate subkey keeps token keys apart from signatures.
    public static func derivedKey(joinSigningSeed: Key, id: [UInt8], expiresAt: Int64, usesLimit: Int?) -> Key {
        let base = KeyDerivation.deriveSubkey(from: joinSigningSeed, id: 1, context: "wmtokens")
        var w = ByteWriter()
        w.bytes(Array("wiremesh-token-v2".utf8))
        w.bytes(id)
        w.i64(expiresAt)
        w.u16(UInt16(usesLimit ?? 0))
        return try! Key(bytes: KeyDerivation.genericHash(w.buffer, key: base.bytes))
    }

    /// The printable token.
    public var text: String {
        var w = ByteWriter()
        w.u8(Self.version)
        w.bytes(id)
        w.bytes(key.bytes)
        w.i64(Int64(expiresAt.timeIntervalSince1970))
        w.u16(UInt16(usesLimit ?? 0))
        w.bytes(joinSigningFingerprint)
        w.string8(clusterID)
        w.u8(UInt8(endpoints.count))
        for e in endpoints { w.endpoint(e) }
        w.bytes(Array(KeyDerivation.genericHash(w.buffer, outputLength: 16).prefix(Self.checksumLength)))
        return Self.prefix + base64URLEncode(w.buffer)
    }

    /// Parses a token; every malformation is a `JoinError.garbled` naming what is wrong, a token of
    /// format 1 is `JoinError.outdatedToken`.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix(Self.version1Prefix) { throw JoinError.outdatedToken(version: 1) }
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
        do {
            let version = try r.u8("version")
            guard version == Self.version else { throw JoinError.garbled("unsupported token version \(version)") }
            let id = try r.bytes(Self.idLength, "token id")
            let key = try Key(bytes: try r.bytes(Self.keyLength, "token key"))
            let expiry = try r.i64("expiry")
            let uses = Int(try r.u16("uses limit"))
            let fingerprint = try r.bytes(Self.fingerprintLength, "join-signing fingerprint")
            let cluster = try r.string8("cluster id")
            guard !cluster.isEmpty else { throw JoinError.garbled("empty cluster id") }
            let count = Int(try r.u8("endpoint count"))
            var endpoints: [Endpoint] = []
            for _ in 0..<count { endpoints.append(try r.endpoint("member endpoint")) }
            guard endpoints.count > 0 else { throw JoinError.garbled("it names no member endpoint to contact") }
            guard r.isAtEnd else { throw JoinError.garbled("\(r.remaining) unexpected trailing bytes") }
            self.init(id: id, key: key, clusterID: cluster, endpoints: endpoints,
                      expiresAt: Date(timeIntervalSince1970: TimeInterval(expiry)), usesLimit: uses == 0 ? nil : uses,
                      joinSigningFingerprint: fingerprint)
        } catch let e as ByteReader.Truncated {
            throw JoinError.garbled("truncated in the \(e.field)")
        }
    }

    /// Issues a new token and the entry the issuing member keeps (and announces). Pure: randomness
    /// is passed in.
    ///
    /// - Parameters:
    ///   - endpoints: members' gossip endpoints, the issuer first (at most `maxEndpoints` are kept).
    ///   - ttl: lifetime in seconds (> 0).
    ///   - uses: how many joins it admits (nil = any number until it expires).
    ///   - random: source of random bytes (secure by default; fixed in tests).
    public static func issue(clusterID: String, endpoints: [Endpoint], joinSigning: SigningIdentity, ttl: TimeInterval,
                             uses: Int?, now: Date, random: (Int) -> [UInt8] = secureRandomBytes) throws -> (JoinToken, TokenRecord) {
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
        let key = derivedKey(joinSigningSeed: joinSigning.seed, id: id, expiresAt: expiry, usesLimit: uses)
        let token = JoinToken(id: id, key: key, clusterID: clusterID, endpoints: Array(endpoints.prefix(maxEndpoints)),
                              expiresAt: Date(timeIntervalSince1970: TimeInterval(expiry)), usesLimit: uses,
                              joinSigningFingerprint: fingerprint(of: joinSigning.publicKey))
        let record = TokenRecord(id: token.idText, createdAt: Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down)),
                                 expiresAt: token.expiresAt, usesLimit: uses, issued: true)
        return (token, record)
    }
}

// MARK: - Token records

/// What this member knows from its own actions about one token (`tokens.json`, 0600): whether it
/// issued or revoked it, how many joins it admitted with it, and the nonces of those requests. No
/// secret: K is derived again from the join-signing key when a request arrives.
/// The same entry, minus the nonces, is announced in this member's node record.
public struct TokenRecord: Codable, Sendable, Equatable {
    /// Token id, 16 hex digits.
    public var id: String
    /// When the token was created (set by its issuer only).
    public var createdAt: Date?
    public var expiresAt: Date
    /// The token's limit (nil: unlimited until expiry).
    public var usesLimit: Int?
    /// This member created the token.
    public var issued: Bool
    /// This member revoked it, or learned of a revocation from another member and relays it.
    public var revoked: Bool
    /// Joins this member admitted with the token.
    public var used: Int
    /// Nonces of join requests this member admitted (base64), so a replayed request is refused here.
    public var usedNonces: [String]

    public init(id: String, createdAt: Date? = nil, expiresAt: Date, usesLimit: Int?, issued: Bool = false,
                revoked: Bool = false, used: Int = 0, usedNonces: [String] = []) {
        self.id = id
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLimit = usesLimit
        self.issued = issued
        self.revoked = revoked
        self.used = used
        self.usedNonces = usedNonces
    }

    enum CodingKeys: String, CodingKey {
        case id, createdAt = "created_at", expiresAt = "expires_at", usesLimit = "uses_limit", issued, revoked, used
        case usedNonces = "used_nonces"
    }

    /// The entry this member announces for the token.
    public var announcement: TokenAnnouncement? {
        guard let bytes = unhex(id), bytes.count == JoinToken.idLength else { return nil }
        return TokenAnnouncement(id: bytes, createdAt: UInt32(clamping: Int64(createdAt?.timeIntervalSince1970 ?? 0)),
                                 expiresAt: UInt32(clamping: Int64(expiresAt.timeIntervalSince1970)),
                                 usesLimit: UInt16(clamping: usesLimit ?? 0), issued: issued, revoked: revoked,
                                 used: UInt16(clamping: used))
    }
}

/// Whether a token can still admit a node.
public enum TokenState: String, Codable, Sendable {
    case valid, expired, revoked, exhausted
}

/// One token as the whole cluster knows it: the merge of every member's announcement.
public struct ClusterToken: Sendable, Equatable {
    public var id: String
    public var createdAt: Date?
    public var expiresAt: Date
    public var usesLimit: Int?
    /// Members that announce having issued it (normally one).
    public var issuedBy: [String]
    /// Members that announce a revocation (the revoker and those relaying it).
    public var revokedBy: [String]
    /// Joins admitted with it, summed over the members' own counts.
    public var used: Int

    /// Revoked anywhere, then expired, then out of uses.
    public func state(at now: Date) -> TokenState {
        if !revokedBy.isEmpty { return .revoked }
        if now >= expiresAt { return .expired }
        if let usesLimit, used >= usesLimit { return .exhausted }
        return .valid
    }

    /// Joins still admitted (nil: unlimited until expiry).
    public var usesLeft: Int? { usesLimit.map { max(0, $0 - used) } }

    /// Throws the error a joiner should see unless the token still admits a join at `now`.
    public func checkUsable(at now: Date) throws {
        switch state(at: now) {
        case .revoked: throw JoinError.revoked(id: id)
        case .expired: throw JoinError.expired(id: id, at: expiresAt)
        case .exhausted: throw JoinError.exhausted(id: id)
        case .valid: return
        }
    }
}

/// Pure operations over this member's token entries and the announcements gossiped by the others.
public enum TokenRecords {
    /// The cluster-wide view: this member's entries merged with every member's announcement
    /// (dead and left members included while they are in the view: their uses and revocations
    /// still count). Keyed by token id.
    public static func merge(local: (name: String, records: [TokenRecord]),
                             members: [(name: String, tokens: [TokenAnnouncement])]) -> [String: ClusterToken] {
        var view: [String: ClusterToken] = [:]
        func add(_ id: String, from name: String, createdAt: Date?, expiresAt: Date, usesLimit: Int?, issued: Bool,
                 revoked: Bool, used: Int) {
            var t = view[id] ?? ClusterToken(id: id, createdAt: nil, expiresAt: expiresAt, usesLimit: usesLimit,
                                             issuedBy: [], revokedBy: [], used: 0)
            if issued {
                t.issuedBy.append(name)
                // The issuer's word on expiry and limit (a request's MAC pins them anyway).
                t.createdAt = createdAt ?? t.createdAt
                t.expiresAt = expiresAt
                t.usesLimit = usesLimit
            }
            if revoked { t.revokedBy.append(name) }
            t.used += used
            view[id] = t
        }
        for r in local.records {
            add(r.id, from: local.name, createdAt: r.createdAt, expiresAt: r.expiresAt, usesLimit: r.usesLimit,
                issued: r.issued, revoked: r.revoked, used: r.used)
        }
        for (name, tokens) in members where name != local.name {
            for a in tokens {
                add(hex(a.id), from: name, createdAt: a.createdAt == 0 ? nil : Date(timeIntervalSince1970: TimeInterval(a.createdAt)),
                    expiresAt: Date(timeIntervalSince1970: TimeInterval(a.expiresAt)),
                    usesLimit: a.usesLimit == 0 ? nil : Int(a.usesLimit), issued: a.issued, revoked: a.revoked, used: Int(a.used))
            }
        }
        return view
    }

    /// What this member announces: entries of tokens that have not expired, at most
    /// `TokenAnnouncement.maxPerRecord` (revocations first, then entries with admitted joins, then
    /// the latest-expiring issued ones), sorted by id.
    public static func announcements(_ records: [TokenRecord], now: Date) -> [TokenAnnouncement] {
        let live = records.filter { $0.expiresAt > now }
        let ranked = live.sorted { a, b in
            func rank(_ r: TokenRecord) -> Int { r.revoked ? 0 : r.used > 0 ? 1 : 2 }
            return (rank(a), -a.expiresAt.timeIntervalSince1970, a.id) < (rank(b), -b.expiresAt.timeIntervalSince1970, b.id)
        }
        return ranked.prefix(TokenAnnouncement.maxPerRecord).compactMap(\.announcement)
            .sorted { $0.id.lexicographicallyPrecedes($1.id) }
    }

    /// Number of unexpired entries this member holds (what `token create` must keep within the record's room).
    public static func liveCount(_ records: [TokenRecord], now: Date) -> Int {
        records.filter { $0.expiresAt > now }.count
    }

    /// Marks token `id` revoked in this member's entries. A token this member has no entry for is
    /// revoked if the cluster view knows it; an id nobody announces is `TokenRequestError.noSuchToken`.
    public static func revoke(_ id: String, in records: [TokenRecord], view: [String: ClusterToken]) throws -> [TokenRecord] {
        let id = try TokenReference.validatedID(id)  // anything else is refused without being repeated
        var out = records
        if let i = out.firstIndex(where: { $0.id == id }) {
            out[i].revoked = true
        } else if let t = view[id] {
            out.append(TokenRecord(id: id, expiresAt: t.expiresAt, usesLimit: t.usesLimit, revoked: true))
        } else {
            throw TokenRequestError.noSuchToken(id: id)
        }
        return out
    }

    /// Takes over revocations other members announce for tokens that have not expired, so the
    /// revocation is still gossiped after the revoking member is gone. Returns nil when nothing changes.
    public static func adoptingRevocations(_ records: [TokenRecord], view: [String: ClusterToken], now: Date) -> [TokenRecord]? {
        var out = records
        var changed = false
        for t in view.values.sorted(by: { $0.id < $1.id }) where !t.revokedBy.isEmpty && t.expiresAt > now {
            if let i = out.firstIndex(where: { $0.id == t.id }) {
                if !out[i].revoked { out[i].revoked = true; changed = true }
            } else {
                out.append(TokenRecord(id: t.id, expiresAt: t.expiresAt, usesLimit: t.usesLimit, revoked: true))
                changed = true
            }
        }
        return changed ? out : nil
    }

    /// Records one admitted join (count and nonce) in this member's entries.
    public static func recordingUse(of request: JoinRequest, nonce: String, in records: [TokenRecord]) -> [TokenRecord] {
        var out = records
        if let i = out.firstIndex(where: { $0.id == request.tokenID }) {
            out[i].used += 1
            out[i].usedNonces.append(nonce)
        } else {
            out.append(TokenRecord(id: request.tokenID, expiresAt: Date(timeIntervalSince1970: TimeInterval(request.expiresAt)),
                                   usesLimit: request.usesLimit == 0 ? nil : request.usesLimit, used: 1, usedNonces: [nonce]))
        }
        return out
    }

    /// Drops entries of tokens that expired more than `retention` ago (kept a while so `token list`
    /// can still show why a join failed); their nonces go with them, as an expired token is refused anyway.
    public static func pruned(_ records: [TokenRecord], now: Date, retention: TimeInterval = 7 * 86400) -> [TokenRecord] {
        records.filter { now.timeIntervalSince($0.expiresAt) < retention }
    }
}

// MARK: - Errors

/// Why a token or a join exchange was refused. Each message names the token and what to do.
public enum JoinError: Error, Equatable, CustomStringConvertible {
    case garbled(String)
    case outdatedToken(version: Int)
    case expired(id: String, at: Date)
    case revoked(id: String)
    case unknownToken(id: String)
    case otherCluster(token: String, member: String)
    case exhausted(id: String)
    case authenticationFailed(id: String)
    case replayed(id: String)
    case notAMember(cluster: String, reason: String)
    case malformedMessage(String)
    case invalidRequest(String)
    case rejected(JoinRejection)

    public var description: String {
        switch self {
        case .garbled(let what):
            return "garbled join token: \(what): copy the whole token printed by 'wiremesh token create'"
        case .outdatedToken(let version):
            return "join token is of format \(version), which this version of wiremesh no longer accepts: re-create the token with 'wiremesh token create' on any member"
        case .expired(let id, let at):
            return "join token \(id) expired at \(StateStore.timestamp(at)): create a new one with 'wiremesh token create'"
        case .revoked(let id):
            return "join token \(id) was revoked: create a new one with 'wiremesh token create'"
        case .unknownToken(let id):
            return "join token \(id) is unknown to this member: no member announces it (not created in this cluster, or expired and pruned); check the id with 'wiremesh token list'"
        case .otherCluster(let token, let member):
            return "join token is for cluster \(token), but the answering member belongs to cluster \(member): create the token with 'wiremesh token create' on a member of the cluster to join"
        case .exhausted(let id):
            return "join token \(id) has no uses left (joins are counted across all members): create a new one with 'wiremesh token create --uses N'"
        case .authenticationFailed(let id):
            return "join request for token \(id) failed authentication: the token key does not match its id, expiry and uses (damaged or forged token, or a token of another cluster)"
        case .replayed(let id):
            return "join request for token \(id) was already answered (replayed request): run 'wiremesh join' again"
        case .notAMember(let cluster, let reason):
            return "the answering node is not a member of cluster \(cluster): \(reason); check the endpoints in the token"
        case .malformedMessage(let what):
            return "malformed join message: \(what)"
        case .invalidRequest(let what):
            return "invalid join token request: \(what)"
        case .rejected(let r):
            return r.message
        }
    }
}

/// A member's refusal, sent back to the joiner in clear (it holds no secret).
public struct JoinRejection: Codable, Sendable, Equatable {
    /// Stable reason code for scripts: garbled, expired, revoked, unknown, other-cluster, exhausted,
    /// authentication, replayed, malformed, ipam.
    public var code: String
    /// The member's error text.
    public var message: String

    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }

    /// The rejection for a member-side error.
    public init(_ error: Error) {
        let code: String
        switch error as? JoinError {
        case .garbled?, .outdatedToken?: code = "garbled"
        case .expired?: code = "expired"
        case .revoked?: code = "revoked"
        case .unknownToken?: code = "unknown"
        case .otherCluster?: code = "other-cluster"
        case .exhausted?: code = "exhausted"
        case .authenticationFailed?: code = "authentication"
        case .replayed?: code = "replayed"
        case .malformedMessage?, .invalidRequest?: code = "malformed"
        default: code = error is IPAMError ? "ipam" : "internal"
        }
        self.init(code: code, message: "\(error)")
    }
}

// MARK: - Join exchange

/// The join exchange, as pure functions over explicit inputs (nonces and time are parameters).
///
/// ```
/// joiner (holds the token)                        any member (holds the join-signing seed S)
///   Ka  = crypto_kdf(K, 1, "wmjoin01")
///   JoinRequest{id, expiry, uses limit, cluster, name, identity pk, WireGuard pk, requested CIDR?, Nj,
///               mac = crypto_auth(Ka, canonical(request))} ──▶
///                                                   K = JoinToken.derivedKey(S, id, expiry, uses limit);
///                                                   checks: cluster, MAC, not expired, not revoked by any
///                                                   member, uses summed over all members below the limit,
///                                                   Nj not seen here before; assigns the pod CIDR
///   T   = id ‖ Nj ‖ Nm ‖ identity pk ‖ WireGuard pk
///   Ks  = BLAKE2b(key: K, "wmjseal2" ‖ T)
///   ◀── JoinResponse{Nm, join-signing pk, sealed = XChaCha20-Poly1305(Ks, grant, ad: "wmj2" ‖ id),
///                    signature = Ed25519_joinSigning("wmj2-resp" ‖ T ‖ sealed)}
///   joiner checks fingerprint(pk) = token's, the signature, opens the grant, and checks the grant's
///   join-signing seed matches pk and its cluster id matches the token's.
/// ```
/// An observer without the token sees no key (the grant is sealed under a key it cannot derive).
/// Nonces are remembered only by the member that answered. A request replayed to another member is
/// still safe: its answer is sealed under Ks, which needs K and the joiner's nonce, so the replayer
/// learns nothing and gets no membership (it also lacks the node's identity and WireGuard keys);
/// once the real node is a live member every member refuses its name. What a replay can do is make
/// a member count one more use of a limited token (and hold a pod block for a few minutes) while the
/// original join has not been gossiped yet, the same effect as two racing joins.
/// A token thief who is not a member cannot impersonate the cluster to a joiner: the answer must be
/// signed by the join-signing key.
public enum JoinExchange {
    /// Length of the joiner's and the member's nonces.
    public static let nonceLength = 24
    static let kdfContext = "wmjoin01"

    /// Builds the joiner's signed-by-MAC request.
    public static func makeRequest(token: JoinToken, nodeName: String, identity: IdentityPublicKey, wireGuardPublicKey: Key,
                                   requestedPodCIDR: IPPrefix? = nil, nonce: [UInt8]) -> JoinRequest {
        precondition(nonce.count == nonceLength)
        var request = JoinRequest(tokenID: token.idText, expiresAt: Int64(token.expiresAt.timeIntervalSince1970),
                                  usesLimit: token.usesLimit ?? 0, clusterID: token.clusterID, nodeName: nodeName,
                                  identityPublicKey: identity, wireGuardPublicKey: wireGuardPublicKey,
                                  requestedPodCIDR: requestedPodCIDR, nonce: nonce, mac: [])
        request.mac = KeyDerivation.authenticate(request.canonicalBytes, key: authKey(token.key))
        return request
    }

    /// What the admitting member knows and hands out.
    public struct MemberContext: Sendable {
        public var clusterID: String
        public var settings: ClusterSettings
        public var keyring: Keyring
        public var joinSigning: SigningIdentity
        /// Last-known members (opaque membership bytes) so the joiner has several seeds.
        public var members: [UInt8]

        public init(clusterID: String, settings: ClusterSettings, keyring: Keyring, joinSigning: SigningIdentity, members: [UInt8]) {
            self.clusterID = clusterID
            self.settings = settings
            self.keyring = keyring
            self.joinSigning = joinSigning
            self.members = members
        }
    }

    /// The member's answer and what it must remember (`TokenRecords.recordingUse`).
    public struct Admission: Sendable {
        public var response: JoinResponse
        public var assignment: NodeAssignment
        /// The request's nonce (base64), to remember against replays.
        public var nonce: String
    }

    /// Checks `request` against the cluster's view of its token and, if admitted, seals the grant.
    ///
    /// - Parameters:
    ///   - token: the merged view of the token (`TokenRecords.merge`), nil when no member announces
    ///     it yet (a token is self-certifying: its issuer may be down or not gossiped yet).
    ///   - usedNonces: nonces this member already admitted for the token.
    ///   - assign: picks the joiner's pod CIDR and overlay address (IPAM); its error rejects the join.
    ///   - memberNonce: 24 fresh random bytes.
    /// - Throws: `JoinError` (or the `assign` error); send it back as a `JoinRejection`.
    /// Checks the request's MAC before anything else is looked at: a stranger learns nothing (not the
    /// cluster id, not which names exist) and costs no view copy or disk read. Returns the token key.
    /// Another cluster's token fails here too: its key comes from another join-signing seed.
    @discardableResult
    public static func authenticate(_ request: JoinRequest, joinSigning: SigningIdentity) throws -> Key {
        guard request.version == JoinRequest.currentVersion else {
            throw JoinError.malformedMessage("unsupported join request version \(request.version) (from an older wiremesh or token format): re-create the token with 'wiremesh token create' and join with this version")
        }
        guard request.nonce.count == nonceLength else { throw JoinError.malformedMessage("nonce must be \(nonceLength) bytes") }
        guard let id = unhex(request.tokenID), id.count == JoinToken.idLength, request.tokenID == hex(id),
              (0...JoinToken.maxUses).contains(request.usesLimit) else {
            throw JoinError.malformedMessage("token id must be 16 lowercase hex digits and uses limit 0-\(JoinToken.maxUses)")
        }
        let key = JoinToken.derivedKey(joinSigningSeed: joinSigning.seed, id: id, expiresAt: request.expiresAt,
                                       usesLimit: request.usesLimit == 0 ? nil : request.usesLimit)
        guard KeyDerivation.verify(tag: request.mac, for: request.canonicalBytes, key: authKey(key)) else {
            throw JoinError.authenticationFailed(id: request.tokenID)
        }
        return key
    }

    public static func admit(_ request: JoinRequest, token: ClusterToken?, usedNonces: [String], member: MemberContext, now: Date,
                             memberNonce: [UInt8], assign: (JoinRequest) throws -> NodeAssignment) throws -> Admission {
        guard memberNonce.count == nonceLength else { throw JoinError.invalidRequest("member nonce must be \(nonceLength) bytes") }
        guard request.version == JoinRequest.currentVersion else {
            throw JoinError.malformedMessage("unsupported join request version \(request.version) (from an older wiremesh or token format): re-create the token with 'wiremesh token create' and join with this version")
        }
        let key = try authenticate(request, joinSigning: member.joinSigning)
        guard request.clusterID == member.clusterID else {
            throw JoinError.otherCluster(token: request.clusterID, member: member.clusterID)
        }
        // The MAC pins expiry and limit: the request's values are the token's.
        var view = token ?? ClusterToken(id: request.tokenID, createdAt: nil, expiresAt: .distantPast, usesLimit: nil,
                                         issuedBy: [], revokedBy: [], used: 0)
        view.expiresAt = Date(timeIntervalSince1970: TimeInterval(request.expiresAt))
        view.usesLimit = request.usesLimit == 0 ? nil : request.usesLimit
        try view.checkUsable(at: now)
        let nonceText = Data(request.nonce).base64EncodedString()
        guard !usedNonces.contains(nonceText) else { throw JoinError.replayed(id: request.tokenID) }

        let assignment = try assign(request)
        let grant = JoinGrant(clusterID: member.clusterID, settings: member.settings, assignment: assignment,
                              keyring: member.keyring, joinSigning: member.joinSigning, members: member.members)
        let transcript = transcript(request: request, memberNonce: memberNonce)
        let sealed = ClusterKey(key: sealKey(key, transcript: transcript))
            .seal(try grant.encoded(), associatedData: associatedData(request.tokenID))
        let signature = member.joinSigning.sign(Array("wmj2-resp".utf8) + transcript + sealed)
        let response = JoinResponse(memberNonce: memberNonce, joinSigningPublicKey: member.joinSigning.publicKey,
                                    sealed: sealed, signature: signature.bytes)
        return Admission(response: response, assignment: assignment, nonce: nonceText)
    }

    /// The joiner's check of the member's answer; returns the grant (cluster key, settings, pod CIDR).
    public static func accept(_ response: JoinResponse, for request: JoinRequest, token: JoinToken) throws -> JoinGrant {
        guard response.memberNonce.count == nonceLength else { throw JoinError.malformedMessage("member nonce must be \(nonceLength) bytes") }
        guard KeyDerivation.constantTimeEqual(JoinToken.fingerprint(of: response.joinSigningPublicKey), token.joinSigningFingerprint) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "its join-signing key does not match the token's fingerprint")
        }
        let transcript = transcript(request: request, memberNonce: response.memberNonce)
        guard let signature = try? Signature(bytes: response.signature),
              response.joinSigningPublicKey.verify(signature, over: Array("wmj2-resp".utf8) + transcript + response.sealed) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the answer is not signed by the cluster's join-signing key")
        }
        let plaintext: [UInt8]
        do {
            plaintext = try ClusterKey(key: sealKey(token.key, transcript: transcript))
                .open(response.sealed, associatedData: associatedData(request.tokenID))
        } catch {
            throw JoinError.authenticationFailed(id: token.idText)
        }
        let grant = try JoinGrant.decode(plaintext)
        guard grant.clusterID == token.clusterID else {
            throw JoinError.otherCluster(token: token.clusterID, member: grant.clusterID)
        }
        guard grant.joinSigning.publicKey == response.joinSigningPublicKey else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the granted join-signing key differs from the one that signed")
        }
        return grant
    }

    static func authKey(_ tokenKey: Key) -> Key {
        KeyDerivation.deriveSubkey(from: tokenKey, id: 1, context: kdfContext)
    }

    static func sealKey(_ tokenKey: Key, transcript: [UInt8]) -> Key {
        try! Key(bytes: KeyDerivation.genericHash(Array("wmjseal2".utf8) + transcript, key: tokenKey.bytes))
    }

    static func transcript(request: JoinRequest, memberNonce: [UInt8]) -> [UInt8] {
        Array(request.tokenID.utf8) + request.nonce + memberNonce + request.identityPublicKey.bytes + request.wireGuardPublicKey.bytes
    }

    static func associatedData(_ tokenID: String) -> [UInt8] { Array("wmj2".utf8) + Array(tokenID.utf8) }
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
        w.bytes(Array("wmj2-req".utf8))
        w.u8(UInt8(truncatingIfNeeded: version))
        w.string16(tokenID)
        w.i64(expiresAt)
        w.u16(UInt16(truncatingIfNeeded: usesLimit))
        w.string16(clusterID)
        w.string16(nodeName)
        w.bytes(identityPublicKey.bytes)
        w.bytes(wireGuardPublicKey.bytes)
        w.string16(requestedPodCIDR?.description ?? "")
        w.bytes(nonce)
        return w.buffer
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
    public var joinSigningPublicKey: IdentityPublicKey
    /// The `JoinGrant`, sealed under the exchange key.
    public var sealed: [UInt8]
    /// Ed25519 signature by the cluster's join-signing key.
    public var signature: [UInt8]
}

extension JoinResponse: Codable {
    enum CodingKeys: String, CodingKey {
        case memberNonce = "member_nonce", joinSigningPublicKey = "join_signing_public_key", sealed, signature
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        memberNonce = try c.decodeBase64(.memberNonce)
        joinSigningPublicKey = try IdentityPublicKey(bytes: try c.decodeBase64(.joinSigningPublicKey))
        sealed = try c.decodeBase64(.sealed)
        signature = try c.decodeBase64(.signature)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Data(memberNonce).base64EncodedString(), forKey: .memberNonce)
        try c.encode(Data(joinSigningPublicKey.bytes).base64EncodedString(), forKey: .joinSigningPublicKey)
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
    public var joinSigning: SigningIdentity
    /// Last-known members of the admitting node (opaque membership bytes).
    public var members: [UInt8]

    struct Wire: Codable {
        var cluster_id: String
        var pod_range: String
        var node_prefix_length: Int
        var node_name: String
        var pod_cidr: String
        var overlay_address: String
        var cluster_keys: [String]
        var join_signing_seed: String
        var members: String
    }

    func encoded() throws -> [UInt8] {
        let wire = Wire(cluster_id: clusterID, pod_range: settings.podRange.description, node_prefix_length: settings.nodePrefixLength,
                        node_name: assignment.name, pod_cidr: assignment.podCIDR.description,
                        overlay_address: assignment.overlayAddress.description,
                        cluster_keys: keyring.keys.map { $0.key.base64 }, join_signing_seed: joinSigning.seed.base64,
                        members: Data(members).base64EncodedString())
        return Array(try JSONEncoder().encode(wire))
    }

    static func decode(_ bytes: [UInt8]) throws -> JoinGrant {
        do {
            let w = try JSONDecoder().decode(Wire.self, from: Data(bytes))
            let keys = try w.cluster_keys.map { ClusterKey(key: try Key(base64: $0)) }
            guard let primary = keys.first, let members = Data(base64Encoded: w.members) else {
                throw JoinError.malformedMessage("grant holds no cluster key or unreadable members")
            }
            return JoinGrant(clusterID: w.cluster_id,
                             settings: ClusterSettings(podRange: try IPPrefix(w.pod_range), nodePrefixLength: w.node_prefix_length),
                             assignment: NodeAssignment(name: w.node_name, podCIDR: try IPPrefix(w.pod_cidr),
                                                        overlayAddress: try IPAddress(w.overlay_address)),
                             keyring: Keyring(primary: primary, others: Array(keys.dropFirst())),
                             joinSigning: SigningIdentity(seed: try Key(base64: w.join_signing_seed)),
                             members: Array(members))
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

/// Big-endian binary writer for the token and the MAC'd canonical form.
struct ByteWriter {
    var buffer: [UInt8] = []
    mutating func u8(_ v: UInt8) { buffer.append(v) }
    mutating func u16(_ v: UInt16) { buffer += [UInt8(v >> 8), UInt8(v & 0xFF)] }
    mutating func i64(_ v: Int64) {
        let u = UInt64(bitPattern: v)
        for shift in stride(from: 56, through: 0, by: -8) { buffer.append(UInt8(truncatingIfNeeded: u >> UInt64(shift))) }
    }
    mutating func bytes(_ b: [UInt8]) { buffer += b }
    mutating func string8(_ s: String) { u8(UInt8(s.utf8.count)); buffer += Array(s.utf8) }
    mutating func string16(_ s: String) { u16(UInt16(truncatingIfNeeded: s.utf8.count)); buffer += Array(s.utf8) }
    mutating func endpoint(_ e: Endpoint) {
        u8(e.address.isIPv4 ? 4 : 6)
        buffer += e.address.bytes
        u16(e.port)
    }
}

/// Big-endian binary reader that names the field it ran out of bytes in.
struct ByteReader {
    struct Truncated: Error { let field: String }
    let data: [UInt8]
    var offset = 0
    init(_ data: [UInt8]) { self.data = data }
    var isAtEnd: Bool { offset == data.count }
    var remaining: Int { data.count - offset }

    mutating func bytes(_ n: Int, _ field: String) throws -> [UInt8] {
        guard remaining >= n else { throw Truncated(field: field) }
        defer { offset += n }
        return Array(data[offset..<offset + n])
    }
    mutating func u8(_ field: String) throws -> UInt8 { try bytes(1, field)[0] }
    mutating func u16(_ field: String) throws -> UInt16 { let b = try bytes(2, field); return UInt16(b[0]) << 8 | UInt16(b[1]) }
    mutating func i64(_ field: String) throws -> Int64 {
        Int64(bitPattern: try bytes(8, field).reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
    }
    mutating func string8(_ field: String) throws -> String {
        let n = Int(try u8(field))
        guard let s = String(validating: try bytes(n, field), as: UTF8.self) else { throw JoinError.garbled("\(field) is not UTF-8") }
        return s
    }
    mutating func endpoint(_ field: String) throws -> Endpoint {
        let family = try u8(field)
        let length: Int
        switch family {
        case 4: length = 4
        case 6: length = 16
        default: throw JoinError.garbled("\(field) has unknown address family \(family)")
        }
        let address = IPAddress(bytes: try bytes(length, field))!
        return Endpoint(address: address, port: try u16(field))
    }
}

/// Bytes of a lowercase or uppercase hex string; nil for anything else.
func unhex(_ text: String) -> [UInt8]? {
    let chars = Array(text.utf8)
    guard chars.count % 2 == 0 else { return nil }
    func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    for i in stride(from: 0, to: chars.count, by: 2) {
        guard let hi = nibble(chars[i]), let lo = nibble(chars[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
    }
    return out
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
    return String(decoding: out, as: UTF8.self)
}

func base64URLEncode(_ bytes: [UInt8]) -> String {
    var s = Data(bytes).base64EncodedString()
    s = s.replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
    while s.hasSuffix("=") { s.removeLast() }
    return s
}

func base64URLDecode(_ text: String) -> [UInt8]? {
    guard !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else { return nil }
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    return Data(base64Encoded: s).map(Array.init)
}
