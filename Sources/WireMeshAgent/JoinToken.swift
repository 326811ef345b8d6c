import Foundation
import IPNetwork
import WireMeshCrypto

// MARK: - Token string

/// A join token, as printed by `wiremesh token create` and given to `wiremesh join`.
///
/// Text form: `wmj1.` followed by base64url (no padding) of this binary layout:
/// ```
/// u8      format version (1)
/// [8]     token id (random; printed as 16 hex digits by `token list`)
/// [32]    token secret (random)
/// i64 BE  expiry, Unix seconds
/// [16]    fingerprint of the cluster's join-signing public key (BLAKE2b-128)
/// u8+utf8 cluster id
/// u8      number of admitting members' gossip endpoints, then each:
///         u8 family (4 or 6), 4 or 16 address bytes, u16 BE port
/// [4]     checksum: first 4 bytes of BLAKE2b-128 over everything above (catches copy/paste damage
///         before any network traffic)
/// ```
/// The token never carries a cluster key: it only authenticates the join exchange (`JoinExchange`),
/// whose answer is sealed under a key derived from the secret and both sides' nonces.
public struct JoinToken: Sendable, Equatable {
    public static let prefix = "wmj1."
    static let version: UInt8 = 1
    static let idLength = 8
    static let secretLength = 32
    static let fingerprintLength = 16
    static let checksumLength = 4

    /// Random token id (8 bytes); names the token in `token list` / `token revoke`.
    public let id: [UInt8]
    /// Random secret (32 bytes); only its keyed hash is stored by members.
    public let secret: [UInt8]
    /// The cluster the token admits into.
    public let clusterID: String
    /// Gossip endpoints of members that can admit the joiner (tried in order).
    public let endpoints: [Endpoint]
    /// When the token stops being accepted.
    public let expiresAt: Date
    /// Fingerprint of the cluster's join-signing identity (see `JoinToken.fingerprint(of:)`).
    public let joinSigningFingerprint: [UInt8]

    public init(id: [UInt8], secret: [UInt8], clusterID: String, endpoints: [Endpoint], expiresAt: Date,
                joinSigningFingerprint: [UInt8]) {
        precondition(id.count == Self.idLength && secret.count == Self.secretLength
                     && joinSigningFingerprint.count == Self.fingerprintLength)
        self.id = id
        self.secret = secret
        self.clusterID = clusterID
        self.endpoints = endpoints
        // The token holds whole seconds; keep the value equal to what parsing yields.
        self.expiresAt = Date(timeIntervalSince1970: expiresAt.timeIntervalSince1970.rounded(.down))
        self.joinSigningFingerprint = joinSigningFingerprint
    }

    /// The token id as printed by `token list` (16 hex digits).
    public var idText: String { hex(id) }

    /// The fingerprint a token carries for a join-signing public key (BLAKE2b-128 of its bytes).
    public static func fingerprint(of key: IdentityPublicKey) -> [UInt8] {
        KeyDerivation.genericHash(Array("wiremesh-join-signing".utf8) + key.bytes, outputLength: fingerprintLength)
    }

    /// The key both sides derive everything from: BLAKE2b keyed by the secret over the token id.
    /// Members store only this ("hash of the secret"), never the token text.
    public static func tokenKey(id: [UInt8], secret: [UInt8]) -> Key {
        try! Key(bytes: KeyDerivation.genericHash(Array("wiremesh-join-v1".utf8) + id, key: secret))
    }

    /// `tokenKey` for this token.
    public var tokenKey: Key { Self.tokenKey(id: id, secret: secret) }

    /// The printable token.
    public var text: String {
        var w = ByteWriter()
        w.u8(Self.version)
        w.bytes(id)
        w.bytes(secret)
        w.i64(Int64(expiresAt.timeIntervalSince1970))
        w.bytes(joinSigningFingerprint)
        w.string8(clusterID)
        w.u8(UInt8(endpoints.count))
        for e in endpoints { w.endpoint(e) }
        w.bytes(Array(KeyDerivation.genericHash(w.buffer, outputLength: 16).prefix(Self.checksumLength)))
        return Self.prefix + base64URLEncode(w.buffer)
    }

    /// Parses a token; every malformation is a `JoinError.garbled` naming what is wrong.
    public init(parsing text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
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
            let secret = try r.bytes(Self.secretLength, "secret")
            let expiry = try r.i64("expiry")
            let fingerprint = try r.bytes(Self.fingerprintLength, "join-signing fingerprint")
            let cluster = try r.string8("cluster id")
            guard !cluster.isEmpty else { throw JoinError.garbled("empty cluster id") }
            let count = Int(try r.u8("endpoint count"))
            var endpoints: [Endpoint] = []
            for _ in 0..<count { endpoints.append(try r.endpoint("member endpoint")) }
            guard endpoints.count > 0 else { throw JoinError.garbled("it names no member endpoint to contact") }
            guard r.isAtEnd else { throw JoinError.garbled("\(r.remaining) unexpected trailing bytes") }
            self.init(id: id, secret: secret, clusterID: cluster, endpoints: endpoints,
                      expiresAt: Date(timeIntervalSince1970: TimeInterval(expiry)), joinSigningFingerprint: fingerprint)
        } catch let e as ByteReader.Truncated {
            throw JoinError.garbled("truncated in the \(e.field)")
        }
    }

    /// Issues a new token and the record the issuing member stores. Pure: randomness is passed in.
    ///
    /// - Parameters:
    ///   - ttl: lifetime in seconds (> 0).
    ///   - uses: how many joins it admits (nil = any number until it expires).
    ///   - random: source of random bytes (secure by default; fixed in tests).
    public static func issue(clusterID: String, endpoints: [Endpoint], joinSigning: IdentityPublicKey, ttl: TimeInterval,
                             uses: Int?, now: Date, random: (Int) -> [UInt8] = secureRandomBytes) throws -> (JoinToken, TokenRecord) {
        guard ttl > 0 else { throw JoinError.invalidRequest("token lifetime must be positive, got \(ttl) s") }
        if let uses, uses < 1 { throw JoinError.invalidRequest("token uses must be at least 1, got \(uses)") }
        guard !endpoints.isEmpty else {
            throw JoinError.invalidRequest("a token needs at least one member endpoint to contact (is the advertise address set?)")
        }
        guard endpoints.count <= 255, clusterID.utf8.count <= 255, !clusterID.isEmpty else {
            throw JoinError.invalidRequest("too many endpoints or an invalid cluster id")
        }
        let token = JoinToken(id: random(idLength), secret: random(secretLength), clusterID: clusterID, endpoints: endpoints,
                              expiresAt: now.addingTimeInterval(ttl), joinSigningFingerprint: fingerprint(of: joinSigning))
        let record = TokenRecord(id: token.idText, secretHash: token.tokenKey.base64, createdAt: now,
                                 expiresAt: token.expiresAt, usesLeft: uses)
        return (token, record)
    }
}

// MARK: - Token records

/// What a member stores about a token it issued (`tokens.json`). Holds the keyed hash of the secret,
/// which verifies and answers join requests; the file is 0600 like every other secret.
public struct TokenRecord: Codable, Sendable, Equatable {
    /// Token id, 16 hex digits.
    public var id: String
    /// `JoinToken.tokenKey`, base64.
    public var secretHash: String
    public var createdAt: Date
    public var expiresAt: Date
    /// Joins still admitted (nil: unlimited until expiry).
    public var usesLeft: Int?
    public var revoked: Bool
    /// Nonces of join requests already admitted (base64), so a replayed request is refused.
    public var usedNonces: [String]

    public init(id: String, secretHash: String, createdAt: Date, expiresAt: Date, usesLeft: Int?,
                revoked: Bool = false, usedNonces: [String] = []) {
        self.id = id
        self.secretHash = secretHash
        self.createdAt = createdAt
        self.expiresAt = expiresAt
        self.usesLeft = usesLeft
        self.revoked = revoked
        self.usedNonces = usedNonces
    }

    enum CodingKeys: String, CodingKey {
        case id, secretHash = "secret_hash", createdAt = "created_at", expiresAt = "expires_at"
        case usesLeft = "uses_left", revoked, usedNonces = "used_nonces"
    }

    /// The state `token list` shows.
    public func state(at now: Date) -> TokenState {
        if revoked { return .revoked }
        if now >= expiresAt { return .expired }
        if let usesLeft, usesLeft <= 0 { return .exhausted }
        return .valid
    }

    /// Checks that the token still admits a join at `now`; throws the error a joiner should see.
    public func checkUsable(at now: Date) throws {
        switch state(at: now) {
        case .revoked: throw JoinError.revoked(id: id)
        case .expired: throw JoinError.expired(id: id, at: expiresAt)
        case .exhausted: throw JoinError.exhausted(id: id)
        case .valid: return
        }
    }
}

/// Whether a token can still admit a node.
public enum TokenState: String, Codable, Sendable {
    case valid, expired, revoked, exhausted
}

/// Pure operations on the token list behind `token revoke` and housekeeping.
public enum TokenRecords {
    /// Marks token `id` revoked; unknown ids are an error naming the id.
    public static func revoke(_ id: String, in records: [TokenRecord]) throws -> [TokenRecord] {
        guard let i = records.firstIndex(where: { $0.id == id.lowercased() }) else { throw JoinError.unknownToken(id: id) }
        var out = records
        out[i].revoked = true
        return out
    }

    /// Drops records that cannot admit anyone any more and ended more than `retention` ago
    /// (kept a while so `token list` can still show why a join failed).
    public static func pruned(_ records: [TokenRecord], now: Date, retention: TimeInterval = 7 * 86400) -> [TokenRecord] {
        records.filter { $0.state(at: now) == .valid || now.timeIntervalSince($0.expiresAt) < retention }
    }
}

// MARK: - Errors

/// Why a token or a join exchange was refused. Each message names the token and what to do.
public enum JoinError: Error, Equatable, CustomStringConvertible {
    case garbled(String)
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
        case .expired(let id, let at):
            return "join token \(id) expired at \(StateStore.timestamp(at)): create a new one with 'wiremesh token create'"
        case .revoked(let id):
            return "join token \(id) was revoked: create a new one with 'wiremesh token create'"
        case .unknownToken(let id):
            return "join token \(id) is unknown to this member: it was not created in this cluster or has been pruned; create a new one with 'wiremesh token create'"
        case .otherCluster(let token, let member):
            return "join token is for cluster \(token), but the member belongs to cluster \(member): use a token created in cluster \(token)'s members, or point the token at them"
        case .exhausted(let id):
            return "join token \(id) has no uses left: create a new one with 'wiremesh token create --uses N'"
        case .authenticationFailed(let id):
            return "join request for token \(id) failed authentication: the token secret does not match (damaged or forged token)"
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
        case .garbled?: code = "garbled"
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
/// joiner                                           admitting member
///   K   = BLAKE2b(key: secret, "wiremesh-join-v1" ‖ id)      (member stores K as the token's hash)
///   Ka  = crypto_kdf(K, 1, "wmjoin01")
///   JoinRequest{id, cluster, name, identity pk, WireGuard pk, requested CIDR?, Nj,
///               mac = crypto_auth(Ka, canonical(request))} ──▶
///                                                   checks: cluster, known id, MAC, not revoked,
///                                                   not expired, uses left, Nj not seen before;
///                                                   assigns the pod CIDR
///   T   = id ‖ Nj ‖ Nm ‖ identity pk ‖ WireGuard pk
///   Ks  = BLAKE2b(key: K, "wmjseal1" ‖ T)
///   ◀── JoinResponse{Nm, join-signing pk, sealed = XChaCha20-Poly1305(Ks, grant, ad: "wmj1" ‖ id),
///                    signature = Ed25519_joinSigning("wmj1-resp" ‖ T ‖ sealed)}
///   joiner checks fingerprint(pk) = token's, the signature, opens the grant, and checks the grant's
///   join-signing seed matches pk and its cluster id matches the token's.
/// ```
/// An observer without the token sees no key (the grant is sealed under a key it cannot derive);
/// a replayed request is refused by the nonce record, and a replayed response does not open
/// because Ks depends on the joiner's fresh nonce. A token thief who is not a member cannot
/// impersonate the cluster to a joiner: the answer must be signed by the join-signing key.
public enum JoinExchange {
    public static let nonceLength = 24
    static let kdfContext = "wmjoin01"

    /// Builds the joiner's signed-by-MAC request.
    public static func makeRequest(token: JoinToken, nodeName: String, identity: IdentityPublicKey, wireGuardPublicKey: Key,
                                   requestedPodCIDR: IPPrefix? = nil, nonce: [UInt8]) -> JoinRequest {
        precondition(nonce.count == nonceLength)
        var request = JoinRequest(tokenID: token.idText, clusterID: token.clusterID, nodeName: nodeName,
                                  identityPublicKey: identity, wireGuardPublicKey: wireGuardPublicKey,
                                  requestedPodCIDR: requestedPodCIDR, nonce: nonce, mac: [])
        request.mac = KeyDerivation.authenticate(request.canonicalBytes, key: authKey(token.tokenKey))
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

    /// The member's answer plus the token record to persist (one use consumed, nonce remembered).
    public struct Admission: Sendable {
        public var response: JoinResponse
        public var updatedRecord: TokenRecord
        public var assignment: NodeAssignment
    }

    /// Checks `request` against the member's token records and, if admitted, seals the grant.
    ///
    /// - Parameters:
    ///   - assign: picks the joiner's pod CIDR and overlay address (IPAM); its error rejects the join.
    ///   - memberNonce: 24 fresh random bytes.
    /// - Throws: `JoinError` (or the `assign` error); send it back as a `JoinRejection`.
    public static func admit(_ request: JoinRequest, records: [TokenRecord], member: MemberContext, now: Date,
                             memberNonce: [UInt8], assign: (JoinRequest) throws -> NodeAssignment) throws -> Admission {
        guard memberNonce.count == nonceLength else { throw JoinError.invalidRequest("member nonce must be \(nonceLength) bytes") }
        guard request.version == JoinRequest.currentVersion else {
            throw JoinError.malformedMessage("unsupported join request version \(request.version)")
        }
        guard request.nonce.count == nonceLength else { throw JoinError.malformedMessage("nonce must be \(nonceLength) bytes") }
        guard request.clusterID == member.clusterID else {
            throw JoinError.otherCluster(token: request.clusterID, member: member.clusterID)
        }
        guard let record = records.first(where: { $0.id == request.tokenID }) else {
            throw JoinError.unknownToken(id: request.tokenID)
        }
        guard let tokenKey = try? Key(base64: record.secretHash) else {
            throw JoinError.malformedMessage("stored record of token \(record.id) has an unreadable secret hash")
        }
        guard KeyDerivation.verify(tag: request.mac, for: request.canonicalBytes, key: authKey(tokenKey)) else {
            throw JoinError.authenticationFailed(id: request.tokenID)
        }
        try record.checkUsable(at: now)
        let nonceText = Data(request.nonce).base64EncodedString()
        guard !record.usedNonces.contains(nonceText) else { throw JoinError.replayed(id: request.tokenID) }

        let assignment = try assign(request)
        let grant = JoinGrant(clusterID: member.clusterID, settings: member.settings, assignment: assignment,
                              keyring: member.keyring, joinSigning: member.joinSigning, members: member.members)
        let transcript = transcript(request: request, memberNonce: memberNonce)
        let sealed = ClusterKey(key: sealKey(tokenKey, transcript: transcript))
            .seal(try grant.encoded(), associatedData: associatedData(request.tokenID))
        let signature = member.joinSigning.sign(Array("wmj1-resp".utf8) + transcript + sealed)
        let response = JoinResponse(memberNonce: memberNonce, joinSigningPublicKey: member.joinSigning.publicKey,
                                    sealed: sealed, signature: signature.bytes)
        var updated = record
        if let uses = updated.usesLeft { updated.usesLeft = uses - 1 }
        updated.usedNonces.append(nonceText)
        return Admission(response: response, updatedRecord: updated, assignment: assignment)
    }

    /// The joiner's check of the member's answer; returns the grant (cluster key, settings, pod CIDR).
    public static func accept(_ response: JoinResponse, for request: JoinRequest, token: JoinToken) throws -> JoinGrant {
        guard response.memberNonce.count == nonceLength else { throw JoinError.malformedMessage("member nonce must be \(nonceLength) bytes") }
        guard KeyDerivation.constantTimeEqual(JoinToken.fingerprint(of: response.joinSigningPublicKey), token.joinSigningFingerprint) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "its join-signing key does not match the token's fingerprint")
        }
        let transcript = transcript(request: request, memberNonce: response.memberNonce)
        guard let signature = try? Signature(bytes: response.signature),
              response.joinSigningPublicKey.verify(signature, over: Array("wmj1-resp".utf8) + transcript + response.sealed) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the answer is not signed by the cluster's join-signing key")
        }
        let plaintext: [UInt8]
        do {
            plaintext = try ClusterKey(key: sealKey(token.tokenKey, transcript: transcript))
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
        try! Key(bytes: KeyDerivation.genericHash(Array("wmjseal1".utf8) + transcript, key: tokenKey.bytes))
    }

    static func transcript(request: JoinRequest, memberNonce: [UInt8]) -> [UInt8] {
        Array(request.tokenID.utf8) + request.nonce + memberNonce + request.identityPublicKey.bytes + request.wireGuardPublicKey.bytes
    }

    static func associatedData(_ tokenID: String) -> [UInt8] { Array("wmj1".utf8) + Array(tokenID.utf8) }
}

/// The joiner's request (sent as one JSON object).
public struct JoinRequest: Sendable, Equatable {
    static let currentVersion = 1
    public var version: Int = JoinRequest.currentVersion
    public var tokenID: String
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
        w.bytes(Array("wmj1-req".utf8))
        w.u8(UInt8(truncatingIfNeeded: version))
        w.string16(tokenID)
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
        case version, tokenID = "token_id", clusterID = "cluster_id", nodeName = "node_name"
        case identityPublicKey = "identity_public_key", wireGuardPublicKey = "wireguard_public_key"
        case requestedPodCIDR = "requested_pod_cidr", nonce, mac
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        tokenID = try c.decode(String.self, forKey: .tokenID)
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
