import CSodium

/// An Ed25519 public key that identifies a node; it verifies the node's signed records.
public struct IdentityPublicKey: Sendable, Hashable, CustomStringConvertible {
    public static let length = 32
    /// The raw 32 bytes.
    public let bytes: [UInt8]

    public init<Bytes: Collection>(bytes: Bytes) throws where Bytes.Element == UInt8 {
        guard bytes.count == Self.length else {
            throw KeyError.invalidLength(expected: Self.length, got: bytes.count)
        }
        self.bytes = Array(bytes)
    }

    /// Parses the base64 form printed by `description`.
    public init(base64 text: String) throws {
        let key = try Key(base64: text)
        self.bytes = key.bytes
    }

    /// True when `signature` is this key's Ed25519 signature over `message`.
    public func verify<M: Collection>(_ signature: Signature, over message: M) -> Bool where M.Element == UInt8 {
        Sodium.ensure()
        let msg = Array(message)
        return signature.bytes.withUnsafeBufferPointer { sig in
            bytes.withUnsafeBufferPointer { pk in
                crypto_sign_verify_detached(sig.baseAddress!, msg, UInt64(msg.count), pk.baseAddress!) == 0
            }
        }
    }

    public var base64: String { (try? Key(bytes: bytes).base64) ?? "" }
    public var description: String { base64 }
}

/// A detached Ed25519 signature (64 bytes).
public struct Signature: Sendable, Hashable {
    public static let length = 64
    public let bytes: [UInt8]

    public init<Bytes: Collection>(bytes: Bytes) throws where Bytes.Element == UInt8 {
        guard bytes.count == Self.length else {
            throw KeyError.invalidLength(expected: Self.length, got: bytes.count)
        }
        self.bytes = Array(bytes)
    }
}

/// A node's signing identity: the Ed25519 key pair that signs its node records.
///
/// The 32-byte seed is the secret that gets persisted; the key pair is derived from it.
public struct SigningIdentity: Sendable {
    /// The secret seed (persist it 0600).
    public let seed: Key
    /// The public half other nodes verify with.
    public let publicKey: IdentityPublicKey
    private let secret: SecretBytes

    /// Derives the identity from a 32-byte seed.
    public init(seed: Key) {
        Sodium.ensure()
        self.seed = seed
        let sk = SecretBytes(count: Int(crypto_sign_SECRETKEYBYTES))
        var pk = [UInt8](repeating: 0, count: Int(crypto_sign_PUBLICKEYBYTES))
        seed.withUnsafeBytes { s in
            _ = crypto_sign_seed_keypair(&pk, sk.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                         s.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        self.secret = sk
        self.publicKey = try! IdentityPublicKey(bytes: pk)
    }

    /// A fresh random identity.
    public static func generate() -> SigningIdentity {
        SigningIdentity(seed: Key.generatePreshared())
    }

    /// Signs `message` (detached Ed25519).
    public func sign<M: Collection>(_ message: M) -> Signature where M.Element == UInt8 {
        var sig = [UInt8](repeating: 0, count: Signature.length)
        let msg = Array(message)
        _ = crypto_sign_detached(&sig, nil, msg, UInt64(msg.count),
                                 secret.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self))
        return try! Signature(bytes: sig)
    }
}
