import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto

/// The join exchange, as pure functions over explicit inputs (nonces and time are parameters).
///
/// ```
/// joiner (holds the token)                        an authority (holds the authority seed S)
///   Ka  = crypto_kdf(K, 1, "wmjoin01")
///   JoinRequest{id, expiry, uses limit, cluster, name, identity pk, WireGuard pk, requested CIDR?, Nj,
///               mac = crypto_auth(Ka, canonical(request))} ──▶
///                                                   K = JoinToken.derivedKey(S, revocation serial, id, expiry, uses limit);
///                                                   checks: cluster, MAC, not expired, not revoked by any
///                                                   member, uses summed over all members below the limit,
///                                                   Nj not seen here before, identity not evicted;
///                                                   assigns the pod CIDR and signs the node's certificate
///   T   = id ‖ Nj ‖ Nm ‖ identity pk ‖ WireGuard pk
///   Ks  = BLAKE2b(key: K, "wmjseal2" ‖ T)
///   ◀── JoinResponse{Nm, authority pk, sealed = XChaCha20-Poly1305(Ks, grant, ad: "wmj2" ‖ id),
///                    signature = Ed25519_authority("wmj2-resp" ‖ T ‖ sealed)}
///   joiner checks fingerprint(pk) = token's, the signature, opens the grant, and checks the grant's
///   authority is pk, its cluster id is the token's, and its certificate is for this node.
/// ```
/// An observer without the token sees no key (the grant is sealed under a key it cannot derive).
/// Nonces are remembered only by the member that answered. A request replayed to another member is
/// still safe: its answer is sealed under Ks, which needs K and the joiner's nonce, so the replayer
/// learns nothing and gets no membership (it also lacks the node's identity and WireGuard keys);
/// once the real node is a live member every member refuses its name. What a replay can do is make
/// a member count one more use of a limited token (and hold a pod block for a few minutes) while the
/// original join has not been gossiped yet, the same effect as two racing joins.
/// A token thief cannot impersonate the cluster to a joiner: the answer must be signed by the
/// authority key, which ordinary members do not hold either.
public enum JoinExchange {
    /// Length of the joiner's and the member's nonces.
    public static let nonceLength = 24
    static let kdfContext = "wmjoin01"

    /// Why `name` cannot name a node (a record holds 1–63 bytes; names reach logs and terminals, so no
    /// control characters or whitespace), or nil.
    public static func nodeNameProblem(_ name: String) -> String? {
        let n = name.utf8.count
        guard n >= 1, n <= 63 else { return "node name must be 1 to 63 bytes of UTF-8 (it has \(n))" }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0.properties.isWhitespace }) {
            return "node name must not contain control characters or whitespace"
        }
        return nil
    }

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

    /// What the admitting authority knows and hands out.
    public struct MemberContext: Sendable {
        public var clusterID: String
        public var settings: ClusterSettings
        public var keyring: Keyring
        public var authority: SigningIdentity
        /// The authority's newest revocation list (its serial keys the tokens).
        public var revocations: RevocationList?
        /// Last-known members (opaque membership bytes) so the joiner has several seeds.
        public var members: [UInt8]

        public init(clusterID: String, settings: ClusterSettings, keyring: Keyring, authority: SigningIdentity,
                    revocations: RevocationList?, members: [UInt8]) {
            self.clusterID = clusterID
            self.settings = settings
            self.keyring = keyring
            self.authority = authority
            self.revocations = revocations
            self.members = members
        }
    }

    /// The member's answer and what it must remember (`TokenRecords.recordingUse`).
    public struct Admission: Sendable {
        public var response: JoinResponse
        public var assignment: NodeAssignment
        /// The certificate the authority signed for the joiner.
        public var certificate: NodeCertificate
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
    /// Another cluster's token fails here too (its key comes from another authority seed), and so does
    /// a token issued before the latest eviction (its key comes from an older revocation serial).
    @discardableResult
    public static func authenticate(_ request: JoinRequest, authority: SigningIdentity, revocationSerial: UInt32) throws -> Key {
        guard request.version == JoinRequest.currentVersion else {
            throw JoinError.malformedMessage("unsupported join request version \(request.version) (from an older wiremesh or token format): re-create the token with 'wiremesh token create' and join with this version")
        }
        guard request.nonce.count == nonceLength else { throw JoinError.malformedMessage("nonce must be \(nonceLength) bytes") }
        guard let id = Hex.decode(request.tokenID), id.count == JoinToken.idLength, request.tokenID == Hex.encode(id),
              (0...JoinToken.maxUses).contains(request.usesLimit) else {
            throw JoinError.malformedMessage("token id must be 16 lowercase hex digits and uses limit 0-\(JoinToken.maxUses)")
        }
        let key = JoinToken.derivedKey(authoritySeed: authority.seed, revocationSerial: revocationSerial, id: id,
                                       expiresAt: request.expiresAt, usesLimit: request.usesLimit == 0 ? nil : request.usesLimit)
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
        let key = try authenticate(request, authority: member.authority, revocationSerial: member.revocations?.serial ?? 0)
        guard request.clusterID == member.clusterID else {
            throw JoinError.otherCluster(token: request.clusterID, member: member.clusterID)
        }
        if member.revocations?.contains(request.identityPublicKey) == true { throw JoinError.evicted(name: request.nodeName) }
        // Checked before a token use, a block and a certificate are spent on a node that could not run.
        if let problem = nodeNameProblem(request.nodeName) { throw JoinError.invalidRequest(problem) }
        // The MAC pins expiry and limit: the request's values are the token's.
        var view = token ?? ClusterToken(id: request.tokenID, createdAt: nil, expiresAt: .distantPast, usesLimit: nil,
                                         issuedBy: [], revokedBy: [], used: 0)
        view.expiresAt = Date(timeIntervalSince1970: TimeInterval(request.expiresAt))
        view.usesLimit = request.usesLimit == 0 ? nil : request.usesLimit
        try view.checkUsable(at: now)
        let nonceText = Data(request.nonce).base64EncodedString()
        guard !usedNonces.contains(nonceText) else { throw JoinError.replayed(id: request.tokenID) }

        let assignment = try assign(request)
        let issuedAt = UInt64(max(0, (now.timeIntervalSince1970 * 1000).rounded(.down)))
        let certificate = NodeCertificate.issue(
            clusterID: member.clusterID, name: request.nodeName, identity: request.identityPublicKey,
            podCIDRs: assignment.podCIDRs, overlayAddress: assignment.overlayAddress, issuedAt: issuedAt, authority: member.authority)
        let grant = JoinGrant(clusterID: member.clusterID, settings: member.settings, assignment: assignment,
                              keyring: member.keyring, authority: member.authority.publicKey, certificate: certificate,
                              revocations: member.revocations, members: member.members)
        let transcript = transcript(request: request, memberNonce: memberNonce)
        let sealed = ClusterKey(key: sealKey(key, transcript: transcript))
            .seal(try grant.encoded(), associatedData: associatedData(request.tokenID))
        let signature = member.authority.sign(Array("wmj2-resp".utf8) + transcript + sealed)
        let response = JoinResponse(memberNonce: memberNonce, authorityPublicKey: member.authority.publicKey,
                                    sealed: sealed, signature: signature.bytes)
        return Admission(response: response, assignment: assignment, certificate: certificate, nonce: nonceText)
    }

    /// The joiner's check of the member's answer; returns the grant (cluster key, settings, pod CIDR).
    public static func accept(_ response: JoinResponse, for request: JoinRequest, token: JoinToken) throws -> JoinGrant {
        guard response.memberNonce.count == nonceLength else { throw JoinError.malformedMessage("member nonce must be \(nonceLength) bytes") }
        guard KeyDerivation.constantTimeEqual(JoinToken.fingerprint(of: response.authorityPublicKey), token.authorityFingerprint) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "its authority key does not match the token's fingerprint")
        }
        let transcript = transcript(request: request, memberNonce: response.memberNonce)
        guard let signature = try? Signature(bytes: response.signature),
              response.authorityPublicKey.verify(signature, over: Array("wmj2-resp".utf8) + transcript + response.sealed) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the answer is not signed by the cluster's authority key")
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
        guard grant.authority == response.authorityPublicKey else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the granted authority key differs from the one that signed")
        }
        let cert = grant.certificate
        guard grant.assignment.name == request.nodeName, cert.podCIDRs == grant.assignment.podCIDRs,
              cert.overlayAddress == grant.assignment.overlayAddress,
              cert.verify(clusterID: grant.clusterID, name: request.nodeName, identity: request.identityPublicKey, authority: grant.authority) else {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the granted certificate is not the authority's for this node and its pod CIDR")
        }
        if let list = grant.revocations, !list.verify(clusterID: grant.clusterID, authority: grant.authority) {
            throw JoinError.notAMember(cluster: token.clusterID, reason: "the granted revocation list is not signed by the authority")
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

