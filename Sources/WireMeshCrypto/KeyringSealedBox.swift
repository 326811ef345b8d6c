import CSodium

/// An anonymous sealed box (libsodium `crypto_box_seal`): X25519 to the recipient's public key with
/// a fresh sender key per message. Hands a keyring to a node that proved its identity but holds no
/// current cluster key, encrypted to a one-time key only that request knows.
public enum SealedBox {
    /// Bytes a sealed box adds (`crypto_box_SEALBYTES`, a macro Swift cannot import).
    public static var overhead: Int { Int(crypto_box_sealbytes()) }

    /// Seals `plaintext` to `recipient` (an X25519 public key, e.g. `Key.generatePrivate().publicKey()`).
    public static func seal(_ plaintext: [UInt8], to recipient: Key) -> [UInt8] {
        Sodium.ensure()
        var out = [UInt8](repeating: 0, count: plaintext.count + overhead)
        recipient.withUnsafeBytes { pk in
            _ = crypto_box_seal(&out, plaintext, UInt64(plaintext.count), pk.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return out
    }

    /// Opens a box sealed to `privateKey`'s public key; throws if it was not, or was altered.
    public static func open(_ sealed: [UInt8], privateKey: Key) throws -> [UInt8] {
        Sodium.ensure()
        guard sealed.count >= overhead else { throw SealError.tooShort(sealed.count) }
        let publicKey = privateKey.publicKey()
        var out = [UInt8](repeating: 0, count: sealed.count - overhead)
        let rc = publicKey.withUnsafeBytes { pk in
            privateKey.withUnsafeBytes { sk in
                crypto_box_seal_open(&out, sealed, UInt64(sealed.count),
                                     pk.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                     sk.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        }
        guard rc == 0 else { throw SealError.authenticationFailed }
        return out
    }
}
