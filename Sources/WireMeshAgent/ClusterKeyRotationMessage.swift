import Foundation
import WireMeshCrypto

/// A node's request for the cluster keyring, one JSON line on the TCP line port (the join port).
///
/// Used when a member advertises a key this node does not hold (a rotation elsewhere) and when the
/// node comes back after missing a rotation ("join history": its identity is the credential, no
/// token). Signed with the node's identity key; the keyring comes back sealed to `ephemeralKey`, a
/// one-time X25519 key, so a replayed or observed request yields nothing readable.
public struct KeyringRequest: Codable, Sendable, Equatable {
    /// Format version; also what tells this line apart from joins and rotation messages.
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

    /// A signed request; keep `ephemeral` to open the answer.
    public init(clusterID: String, node: String, ephemeral: Key, issuedAt: Int64, identity: SigningIdentity) {
        self.node = node
        self.ephemeralKey = ephemeral.publicKey().base64
        self.issuedAt = issuedAt
        let bytes = Self.signedBytes(clusterID: clusterID, node: node, ephemeralKey: ephemeralKey, issuedAt: issuedAt)
        signature = Data(identity.sign(bytes).bytes).base64EncodedString()
    }

    /// Decodes a line if it is a keyring request (other lines on the port are not).
    public static func decode(line: [UInt8]) -> KeyringRequest? {
        guard line.count < 4096, let r = try? JSONDecoder().decode(KeyringRequest.self, from: Data(line)),
              r.keyringRequest == 1 else { return nil }
        return r
    }

    public func line() -> [UInt8] { ((try? JSONEncoder().encode(self)).map(Array.init) ?? []) + [0x0A] }
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

/// The member's answer to a `KeyringRequest`.
public struct KeyringAnswer: Codable, Sendable, Equatable {
    public var ok: Bool
    /// The answering member's name (the requester verifies `signature` with its identity).
    public var node: String
    /// Why not, for scripts: unknown-member, left, bad-signature, stale, bad-request.
    public var code: String?
    public var error: String?
    /// `crypto_box_seal` of the keyring payload to the request's ephemeral key, base64.
    public var sealed: String?
    /// Ed25519 by the answering member over `signedBytes`, base64.
    public var signature: String?

    static func signedBytes(request: KeyringRequest, sealed: String) -> [UInt8] {
        Array("wiremesh-keyring-answer-v1\n\(request.signature)\n\(sealed)".utf8)
    }

    public func line() -> [UInt8] {
        ((try? JSONEncoder().encode(self)).map(Array.init) ?? Array("{\"ok\":false,\"node\":\"\"}".utf8)) + [0x0A]
    }

    /// What is inside `sealed`.
    struct Payload: Codable {
        struct Entry: Codable { var key: String; var generation: UInt64 }
        var clusterID: String
        /// Primary first.
        var keys: [Entry]
        enum CodingKeys: String, CodingKey { case clusterID = "cluster_id", keys }
    }

    /// The member side: answers only a fresh request signed by the identity this member knows for
    /// that name (a member in its view, alive or dead but not yet reaped, and not left).
    public static func answer(_ request: KeyringRequest, clusterID: String, members: [KnownMember], keyring: Keyring,
                              generations: [ClusterKeyID: UInt64], identity: SigningIdentity, name: String,
                              nowMs: Int64) -> KeyringAnswer {
        func refuse(_ code: String, _ why: String) -> KeyringAnswer {
            KeyringAnswer(ok: false, node: name, code: code, error: why)
        }
        guard let member = members.first(where: { $0.name == request.node }), request.node != name else {
            return refuse("unknown-member", "member '\(name)' does not know a node named '\(request.node)' (removed after being away too long, or never a member)")
        }
        guard let raw = Data(base64Encoded: request.signature), let sig = try? Signature(bytes: Array(raw)),
              member.identity.verify(sig, over: KeyringRequest.signedBytes(clusterID: clusterID, node: request.node,
                                                                           ephemeralKey: request.ephemeralKey, issuedAt: request.issuedAt)) else {
            return refuse("bad-signature", "keyring request for '\(request.node)' is not signed by the identity member '\(name)' knows for it (or names another cluster)")
        }
        guard !member.left else {
            return refuse("left", "node '\(request.node)' left the cluster")
        }
        guard abs(nowMs - request.issuedAt) <= RotationMessage.maxSkewMs else {
            return refuse("stale", "keyring request from '\(request.node)' is \(abs(nowMs - request.issuedAt) / 1000) s off member '\(name)''s clock (replayed, or clocks differ): check NTP")
        }
        guard let ephemeral = try? Key(base64: request.ephemeralKey) else {
            return refuse("bad-request", "keyring request from '\(request.node)' has an unreadable ephemeral key")
        }
        let payload = Payload(clusterID: clusterID, keys: keyring.keys.map {
            Payload.Entry(key: $0.key.base64, generation: generations[$0.id] ?? 0)
        })
        guard let plain = try? JSONEncoder().encode(payload) else { return refuse("bad-request", "cannot encode the keyring") }
        var bytes = Array(plain)
        defer { for i in bytes.indices { bytes[i] = 0 } }
        let sealed = Data(SealedBox.seal(bytes, to: ephemeral)).base64EncodedString()
        let signature = identity.sign(signedBytes(request: request, sealed: sealed))
        return KeyringAnswer(ok: true, node: name, sealed: sealed, signature: Data(signature.bytes).base64EncodedString())
    }

    /// The requester side: checks the answer is from `memberIdentity` for this very request and opens
    /// it. Returns the keys with their generations, the member's primary first.
    public func open(for request: KeyringRequest, ephemeral: Key, memberIdentity: IdentityPublicKey,
                     clusterID: String) throws(KeyringRefusal) -> [(key: ClusterKey, tag: ClusterKeyTag)] {
        guard ok else { throw KeyringRefusal(code: code ?? "refused", message: error ?? "refused without a reason") }
        guard let sealed, let signature, let raw = Data(base64Encoded: signature), let sig = try? Signature(bytes: Array(raw)),
              memberIdentity.verify(sig, over: Self.signedBytes(request: request, sealed: sealed)) else {
            throw KeyringRefusal(code: "bad-answer", message: "keyring answer from '\(node)' is not signed by its identity")
        }
        guard let box = Data(base64Encoded: sealed), let plain = try? SealedBox.open(Array(box), privateKey: ephemeral),
              let payload = try? JSONDecoder().decode(Payload.self, from: Data(plain)) else {
            throw KeyringRefusal(code: "bad-answer", message: "keyring answer from '\(node)' does not open with this request's key")
        }
        guard payload.clusterID == clusterID else {
            throw KeyringRefusal(code: "bad-answer", message: "keyring answer from '\(node)' is for cluster \(payload.clusterID), not \(clusterID)")
        }
        var out: [(key: ClusterKey, tag: ClusterKeyTag)] = []
        for entry in payload.keys {
            guard let key = try? Key(base64: entry.key) else {
                throw KeyringRefusal(code: "bad-answer", message: "keyring answer from '\(node)' holds an unreadable key")
            }
            let cluster = ClusterKey(key: key)
            out.append((cluster, ClusterKeyTag(id: cluster.id, generation: entry.generation)))
        }
        guard !out.isEmpty else { throw KeyringRefusal(code: "bad-answer", message: "keyring answer from '\(node)' holds no key") }
        return out
    }
}

/// Why a keyring request failed, with the member's code.
public struct KeyringRefusal: Error, Equatable, CustomStringConvertible {
    public var code: String
    public var message: String
    public init(code: String, message: String) {
        self.code = code
        self.message = message
    }
    public var description: String { message }
}
