import Foundation
import Membership
import WireMeshCrypto

/// A node's request for the cluster keyring on the TCP line port (`LineRequest.keyring`).
///
/// Used when a member advertises a key this node does not hold (a rotation elsewhere) and when the
/// node comes back after missing a rotation ("join history": its identity is the credential, no
/// token). Signed with the node's identity key; the keyring comes back sealed to `ephemeralKey`, a
/// one-time X25519 key, so a replayed or observed request yields nothing readable.
public struct KeyringRequest: Codable, Sendable, Equatable {
    /// Format version (1); a member refuses others.
    public var keyringRequest: Int = 1
    /// The asking node's member name.
    public var node: String
    /// One-time X25519 public key, base64.
    public var ephemeralKey: String
    /// Milliseconds since the epoch; refused when far from the member's clock.
    public var issuedAt: Int64
    /// Ed25519 over `signedBytes` by the node's identity, base64.
    public var signature: String

    enum CodingKeys: String, CodingKey {
        case keyringRequest = "keyring_request", node, ephemeralKey = "ephemeral_key", issuedAt = "issued_at", signature
    }

    static func signedBytes(clusterID: String, node: String, ephemeralKey: String, issuedAt: Int64) -> [UInt8] {
        Array("wiremesh-keyring-request-v1\n\(clusterID)\n\(node)\n\(ephemeralKey)\n\(issuedAt)".utf8)
    }

    /// True when `identity` signed this request for `clusterID`.
    public func isSigned(by identity: IdentityPublicKey, clusterID: String) -> Bool {
        guard let raw = Data(base64Encoded: signature), let sig = try? Signature(bytes: Array(raw)) else { return false }
        return identity.verify(sig, over: Self.signedBytes(clusterID: clusterID, node: node, ephemeralKey: ephemeralKey, issuedAt: issuedAt))
    }

    /// A signed request; keep `ephemeral` to open the answer.
    public init(clusterID: String, node: String, ephemeral: Key, issuedAt: Int64, identity: SigningIdentity) {
        self.node = node
        self.ephemeralKey = ephemeral.publicKey().base64
        self.issuedAt = issuedAt
        let bytes = Self.signedBytes(clusterID: clusterID, node: node, ephemeralKey: ephemeralKey, issuedAt: issuedAt)
        signature = Data(identity.sign(bytes).bytes).base64EncodedString()
    }
}

/// A member as the answering node knows it: enough to decide whether to hand it the keyring.
public struct KnownMember: Sendable, Equatable {
    public var name: String
    public var identity: IdentityPublicKey
    /// It left gracefully: it must join again with a token.
    public var left: Bool

    public init(name: String, identity: IdentityPublicKey, left: Bool) {
        self.name = name
        self.identity = identity
        self.left = left
    }
}

/// The member's answer to a `KeyringRequest` (`LineReply.keyring`); a refusal is a `KeyringRefusal`.
public struct KeyringAnswer: Codable, Sendable, Equatable {
    /// The answering member's name (the requester verifies `signature` with its identity).
    public var node: String
    /// `crypto_box_seal` of the keyring payload to the request's ephemeral key, base64.
    public var sealed: String
    /// Ed25519 by the answering member over `signedBytes`, base64.
    public var signature: String

    public init(node: String, sealed: String, signature: String) {
        self.node = node
        self.sealed = sealed
        self.signature = signature
    }

    static func signedBytes(request: KeyringRequest, sealed: String) -> [UInt8] {
        Array("wiremesh-keyring-answer-v1\n\(request.signature)\n\(sealed)".utf8)
    }

    /// What is inside `sealed`.
    struct Payload: Codable {
        struct Entry: Codable { var key: String; var generation: UInt64 }
        var clusterID: String
        /// Primary first.
        var keys: [Entry]
        /// The member's newest revocation list (base64 of `RevocationList.encoded`), if any: an
        /// eviction rotates the cluster key, so every member that fetches the new key learns it too.
        var revocations: String?
        enum CodingKeys: String, CodingKey { case clusterID = "cluster_id", keys, revocations }
    }

    /// The member side: answers only a fresh request signed by the identity this member knows for
    /// that name (a member in its view, alive or dead but not yet reaped, and not left).
    ///
    /// Until the signature checks out the requester may be anyone: an unknown name and a bad signature
    /// get the same refusal, naming neither the member nor the cluster, so a stranger cannot probe
    /// which names exist.
    public static func answer(_ request: KeyringRequest, clusterID: String, members: [KnownMember], keyring: Keyring,
                              generations: [ClusterKeyID: UInt64], identity: SigningIdentity, name: String,
                              nowMs: Int64, revocations: RevocationList? = nil) throws(KeyringRefusal) -> KeyringAnswer {
        func refuse(_ code: KeyringRefusal.Code, _ why: String) -> KeyringRefusal {
            KeyringRefusal(code: code, message: why)
        }
        guard request.keyringRequest == 1 else {
            throw refuse(.badRequest, "keyring request of version \(request.keyringRequest): this member speaks version 1")
        }
        guard let member = members.first(where: { $0.name == request.node }), request.node != name,
              let raw = Data(base64Encoded: request.signature), let sig = try? Signature(bytes: Array(raw)),
              member.identity.verify(sig, over: KeyringRequest.signedBytes(clusterID: clusterID, node: request.node,
                                                                           ephemeralKey: request.ephemeralKey, issuedAt: request.issuedAt)) else {
            throw refuse(.unknownMember, "the answering member knows no node of that name with the identity that signed the request "
                         + "(removed after being away too long, never a member, or a member of another cluster)")
        }
        guard !member.left else {
            throw refuse(.left, "node '\(request.node)' left the cluster")
        }
        let skew = RotationMessage.skewMs(issuedAt: request.issuedAt, nowMs: nowMs)
        guard skew <= RotationMessage.maxSkewMs else {
            throw refuse(.stale, "keyring request from '\(request.node)' is \(skew / 1000) s off member '\(name)''s clock (replayed, or clocks differ): check NTP")
        }
        guard let ephemeral = try? Key(base64: request.ephemeralKey) else {
            throw refuse(.badRequest, "keyring request from '\(request.node)' has an unreadable ephemeral key")
        }
        let payload = Payload(clusterID: clusterID, keys: keyring.keys.map {
            Payload.Entry(key: $0.key.base64, generation: generations[$0.id] ?? 0)
        }, revocations: revocations.map { Data($0.encoded).base64EncodedString() })
        guard let plain = try? JSONEncoder().encode(payload) else { throw refuse(.badRequest, "cannot encode the keyring") }
        var bytes = Array(plain)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        let sealed = Data(SealedBox.seal(bytes, to: ephemeral)).base64EncodedString()
        let signature = identity.sign(signedBytes(request: request, sealed: sealed))
        return KeyringAnswer(node: name, sealed: sealed, signature: Data(signature.bytes).base64EncodedString())
    }

    /// The requester side: checks the answer is from `memberIdentity` for this very request and opens
    /// it. Returns the keys with their generations, the member's primary first.
    public func open(for request: KeyringRequest, ephemeral: Key, memberIdentity: IdentityPublicKey,
                     clusterID: String) throws(KeyringRefusal) -> [(key: ClusterKey, tag: ClusterKeyTag)] {
        try openAll(for: request, ephemeral: ephemeral, memberIdentity: memberIdentity, clusterID: clusterID).keys
    }

    /// `open`, plus the revocation list the member sent (unverified: check it against the authority).
    public func openAll(for request: KeyringRequest, ephemeral: Key, memberIdentity: IdentityPublicKey,
                        clusterID: String) throws(KeyringRefusal) -> (keys: [(key: ClusterKey, tag: ClusterKeyTag)], revocations: RevocationList?) {
        guard let raw = Data(base64Encoded: signature), let sig = try? Signature(bytes: Array(raw)),
              memberIdentity.verify(sig, over: Self.signedBytes(request: request, sealed: sealed)) else {
            throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' is not signed by its identity")
        }
        guard let box = Data(base64Encoded: sealed), let plain = try? SealedBox.open(Array(box), privateKey: ephemeral),
              let payload = try? JSONDecoder().decode(Payload.self, from: Data(plain)) else {
            throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' does not open with this request's key")
        }
        guard payload.clusterID == clusterID else {
            throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' is for cluster \(payload.clusterID), not \(clusterID)")
        }
        var out: [(key: ClusterKey, tag: ClusterKeyTag)] = []
        for entry in payload.keys {
            guard let key = try? Key(base64: entry.key) else {
                throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' holds an unreadable key")
            }
            let cluster = ClusterKey(key: key)
            out.append((cluster, ClusterKeyTag(id: cluster.id, generation: entry.generation)))
        }
        guard !out.isEmpty else { throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' holds no key") }
        var revocations: RevocationList?
        if let text = payload.revocations {
            guard let bytes = Data(base64Encoded: text), let list = try? RevocationList(decoding: Array(bytes)) else {
                throw KeyringRefusal(code: .badAnswer, message: "keyring answer from '\(node)' holds an unreadable revocation list")
            }
            revocations = list
        }
        return (out, revocations)
    }
}

/// Why a keyring request failed: the member's refusal, or what the requester found wrong.
public struct KeyringRefusal: Error, Codable, Sendable, Equatable, CustomStringConvertible {
    /// Stable codes (the raw values go on the wire).
    public enum Code: String, Codable, Sendable {
        /// The member does not know the name with the identity that signed (removed after being away
        /// too long, never a member, another cluster, or a forged request: one answer for all of them).
        case unknownMember = "unknown-member"
        /// The node left the cluster: it must join again with a token.
        case left
        /// The node was evicted by the cluster authority (told only to a request it signed).
        case evicted
        case stale
        case badRequest = "bad-request"
        /// Requester side: the answer is unsigned, unopenable or of another cluster.
        case badAnswer = "bad-answer"
        /// Requester side: no answer at all.
        case unreachable
    }

    public var code: Code
    public var message: String
    public init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }

    /// The member no longer knows this node as a member: only a new join brings it back.
    public var isForgotten: Bool { code == .unknownMember || code == .left || code == .evicted }
}
