import CSodium

/// Hashing, key derivation and message authentication over libsodium, for protocols (such as the
/// join exchange) that derive several independent keys from one shared secret.
public enum KeyDerivation {
    /// Length of a crypto_auth tag (HMAC-SHA-512-256).
    public static let macLength = Int(crypto_auth_BYTES)

    /// BLAKE2b (`crypto_generichash`) of `message`, optionally keyed, `outputLength` bytes (16...64).
    ///
    /// A keyed hash is a PRF: it is how a key is bound to per-exchange values such as nonces.
    public static func genericHash(_ message: [UInt8], key: [UInt8] = [], outputLength: Int = 32) -> [UInt8] {
        Sodium.ensure()
        precondition(outputLength >= Int(crypto_generichash_BYTES_MIN) && outputLength <= Int(crypto_generichash_BYTES_MAX),
                     "generic hash output length out of range")
        precondition(key.isEmpty || (key.count >= Int(crypto_generichash_KEYBYTES_MIN)
                                     && key.count <= Int(crypto_generichash_KEYBYTES_MAX)),
                     "generic hash key length out of range")
        var out = [UInt8](repeating: 0, count: outputLength)
        _ = key.withUnsafeBufferPointer { k in
            crypto_generichash(&out, outputLength, message, UInt64(message.count),
                               key.isEmpty ? nil : k.baseAddress, key.count)
        }
        return out
    }

    /// A 32-byte subkey of `master` (`crypto_kdf_derive_from_key`): different `id`/`context` pairs
    /// give independent keys, so one secret can key a MAC and a cipher without reuse.
    ///
    /// `context` must be exactly 8 ASCII characters (libsodium's rule), e.g. `"wmjoin01"`.
    public static func deriveSubkey(from master: Key, id: UInt64, context: String) -> Key {
        Sodium.ensure()
        let ctx = Array(context.utf8)
        precondition(ctx.count == Int(crypto_kdf_CONTEXTBYTES), "kdf context must be exactly 8 bytes")
        var cctx = ctx.map { CChar(bitPattern: $0) }
        cctx.append(0)
        return Key(filling: { out in
            master.withUnsafeBytes { m in
                _ = crypto_kdf_derive_from_key(out.baseAddress!.assumingMemoryBound(to: UInt8.self), 32, id, cctx,
                                               m.baseAddress!.assumingMemoryBound(to: UInt8.self))
            }
        })
    }

    /// The crypto_auth tag (HMAC-SHA-512-256) of `message` under `key`.
    public static func authenticate(_ message: [UInt8], key: Key) -> [UInt8] {
        Sodium.ensure()
        var tag = [UInt8](repeating: 0, count: macLength)
        key.withUnsafeBytes { k in
            _ = crypto_auth(&tag, message, UInt64(message.count), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return tag
    }

    /// True when `tag` is the crypto_auth tag of `message` under `key` (constant-time comparison).
    public static func verify(tag: [UInt8], for message: [UInt8], key: Key) -> Bool {
        Sodium.ensure()
        guard tag.count == macLength else { return false }
        return key.withUnsafeBytes { k in
            crypto_auth_verify(tag, message, UInt64(message.count), k.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
    }

    /// Compares two byte strings in constant time (for their common length); different lengths are unequal.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        Sodium.ensure()
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return sodium_memcmp(a, b, a.count) == 0
    }
}
