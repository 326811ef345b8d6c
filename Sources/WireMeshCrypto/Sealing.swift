import CSodium

/// Why a sealed datagram could not be opened.
public enum SealError: Error, Equatable, CustomStringConvertible {
    case tooShort(Int)
    case authenticationFailed

    public var description: String {
        switch self {
        case .tooShort(let n): return "sealed message too short (\(n) bytes)"
        case .authenticationFailed: return "sealed message failed authentication (wrong cluster key or tampered)"
        }
    }
}

/// A symmetric cluster key: XChaCha20-Poly1305 (IETF) with a random 24-byte nonce per message.
///
/// Layout of a sealed message: nonce (24) ‖ ciphertext ‖ tag (16).
public struct ClusterKey: Sendable, Hashable {
    public static let nonceLength = 24
    public static let tagLength = 16
    /// Bytes a sealed message adds to its plaintext.
    public static let overhead = nonceLength + tagLength

    public let key: Key

    public init(key: Key) { self.key = key }

    /// A fresh random cluster key.
    public static func generate() -> ClusterKey { ClusterKey(key: .generatePreshared()) }

    /// A short, non-secret fingerprint that names the key (BLAKE2b of the key, 8 bytes).
    public var fingerprint: [UInt8] {
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: 8)
        let ctx = Array("wm-kid".utf8)
        key.withUnsafeBytes { k in
            _ = crypto_generichash(&out, 8, ctx, UInt64(ctx.count), k.baseAddress!.assumingMemoryBound(to: UInt8.self), 32)
        }
        return out
    }

    /// Seals `plaintext`, binding `associatedData` (e.g. the cluster id) into the tag.
    public func seal(_ plaintext: [UInt8], associatedData: [UInt8]) -> [UInt8] {
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: Self.nonceLength + plaintext.count + Self.tagLength)
        randombytes_buf(&out, Self.nonceLength)
        var clen: UInt64 = 0
        out.withUnsafeMutableBufferPointer { o in
            key.withUnsafeBytes { k in
                _ = crypto_aead_xchacha20poly1305_ietf_encrypt(
                    o.baseAddress! + Self.nonceLength, &clen,
                    plaintext, UInt64(plaintext.count),
                    associatedData, UInt64(associatedData.count),
                    nil, o.baseAddress!, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        return out
    }

    /// Opens a sealed message or throws; never returns unauthenticated bytes.
    public func open<S: Collection>(_ sealed: S, associatedData: [UInt8]) throws -> [UInt8] where S.Element == UInt8 {
        Sodium.ensure()
        let input = Array(sealed)
        guard input.count >= Self.overhead else { throw SealError.tooShort(input.count) }
        var out = [UInt8](repeating: 0, count: input.count - Self.overhead)
        var mlen: UInt64 = 0
        let rc = input.withUnsafeBufferPointer { i in
            key.withUnsafeBytes { k in
                crypto_aead_xchacha20poly1305_ietf_decrypt(
                    &out, &mlen, nil,
                    i.baseAddress! + Self.nonceLength, UInt64(input.count - Self.nonceLength),
                    associatedData, UInt64(associatedData.count),
                    i.baseAddress!, k.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard rc == 0 else { throw SealError.authenticationFailed }
        return out
    }
}
