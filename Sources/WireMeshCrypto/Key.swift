import ByteCodec
import CSodium

/// Makes sure libsodium is initialised exactly once before any call into it.
enum Sodium {
    static let ready: Bool = {
        precondition(sodium_init() >= 0, "libsodium failed to initialise")
        return true
    }()

    static func ensure() { _ = ready }
}

/// Errors a person reads when a key given to wiremesh is malformed.
public enum KeyError: Error, Equatable, CustomStringConvertible {
    case invalidBase64(String)
    case invalidLength(expected: Int, got: Int)
    case invalidHex(String)

    public var description: String {
        switch self {
        // The text is never shown, not even in part: it may be a private key with one character wrong.
        case .invalidBase64(let s):
            return "invalid key (\(s.count) characters): expected 44 characters of base64 (as printed by 'wiremesh genkey' or 'wg genkey')"
        case .invalidLength(let expected, let got):
            return "invalid key: expected \(expected) bytes, got \(got)"
        case .invalidHex(let s):
            return "invalid hex key (\(s.count) characters): expected 64 hexadecimal characters"
        }
    }
}

/// Immutable byte storage that zeroes itself when the last reference goes away,
/// so private keys do not linger in freed memory.
final class SecretBytes: @unchecked Sendable {
    let pointer: UnsafeMutableRawBufferPointer

    init(count: Int) {
        pointer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 8)
        pointer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    deinit {
        sodium_memzero(pointer.baseAddress, pointer.count)
        pointer.deallocate()
    }
}

/// A 32-byte WireGuard key: private, public or preshared (like wgctrl's `wgtypes.Key`).
///
/// Compared in constant time; printed as base64 exactly like `wg`; zeroed in memory when dropped.
public struct Key: Sendable, Hashable, CustomStringConvertible {
    public static let length = 32
    let storage: SecretBytes

    /// Wraps exactly 32 bytes.
    public init<Bytes: Collection>(bytes: Bytes) throws where Bytes.Element == UInt8 {
        guard bytes.count == Key.length else {
            throw KeyError.invalidLength(expected: Key.length, got: bytes.count)
        }
        storage = SecretBytes(count: Key.length)
        let target = UnsafeMutableRawBufferPointer(storage.pointer)
        // One copy of contiguous bytes; the element-wise generic copy is slow across modules.
        if bytes.withContiguousStorageIfAvailable({ target.copyMemory(from: UnsafeRawBufferPointer($0)) }) == nil {
            target.copyBytes(from: bytes)
        }
    }

    init(filling fill: (UnsafeMutableRawBufferPointer) -> Void) {
        storage = SecretBytes(count: Key.length)
        fill(storage.pointer)
    }

    /// Parses the base64 form `wg` prints (44 characters, one `=` of padding).
    public init(base64 text: String) throws {
        let trimmed = text.trimmingWhitespace()
        // ASCII only: libsodium 1.0.18's decoder reads a byte ≥ 0x80 as a negative char, which its
        // constant-time range checks take for '+' or '/' (so "…F8ն…" decoded as the key of "…F8+/…":
        // two texts for one key, found by fuzzing the rotation message).
        guard trimmed.utf8.count == 44, trimmed.utf8.allSatisfy({ $0 < 0x80 }), trimmed.hasSuffix("="), !trimmed.hasSuffix("==") else {
            throw KeyError.invalidBase64(trimmed)
        }
        var out = [UInt8](repeating: 0, count: 33)
        var binLen = 0
        let rc = trimmed.withCString { src in
            sodium_base642bin(&out, out.count, src, trimmed.utf8.count, nil, &binLen, nil,
                              sodium_base64_VARIANT_ORIGINAL)
        }
        guard rc == 0, binLen == Key.length else { throw KeyError.invalidBase64(trimmed) }
        try self.init(bytes: out[0..<Key.length])
        sodium_memzero(&out, out.count)
    }

    /// Parses the 64-character lowercase/uppercase hex form the UAPI protocol uses.
    public init(hex text: String) throws {
        guard text.utf8.count == 64, var out = Hex.decode(text) else { throw KeyError.invalidHex(text) }
        defer { sodium_memzero(&out, out.count) }
        try self.init(bytes: out)
    }

    /// The all-zero key (what the kernel reports for "no preshared key").
    public static var zero: Key { Key { _ in } }

    public var isZero: Bool { sodium_is_zero(storage.pointer.baseAddress, Key.length) == 1 }

    /// The raw bytes (a copy).
    public var bytes: [UInt8] { Array(storage.pointer) }

    /// Calls `body` with the raw bytes without copying them.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(storage.pointer))
    }

    /// Base64, as `wg` prints keys.
    public var base64: String {
        var out = [CChar](repeating: 0, count: 45)
        sodium_bin2base64(&out, out.count, storage.pointer.baseAddress?.assumingMemoryBound(to: UInt8.self),
                          Key.length, sodium_base64_VARIANT_ORIGINAL)
        return String(cString: out)
    }

    /// Lowercase hex, as the UAPI protocol carries keys.
    public var hex: String { Hex.encode(storage.pointer) }

    /// A one-way fingerprint, never the key's bytes: callers cannot be trusted to know whether they
    /// hold a public or a private key, and even a prefix of a private key is a leak.
    public var description: String {
        "Key(#\(Hex.encode(KeyDerivation.genericHash(Array("wiremesh-key-fingerprint".utf8) + Array(storage.pointer), outputLength: 16).prefix(4))))"
    }

    public static func == (lhs: Key, rhs: Key) -> Bool {
        sodium_memcmp(lhs.storage.pointer.baseAddress, rhs.storage.pointer.baseAddress, Key.length) == 0
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes: UnsafeRawBufferPointer(storage.pointer))
    }

    // MARK: WireGuard key operations

    /// A new private key, clamped like `wg genkey` (RFC 7748 §5).
    public static func generatePrivate() -> Key {
        Sodium.ensure()
        return Key { buf in
            randombytes_buf(buf.baseAddress!, Key.length)
            buf[0] &= 248
            buf[31] = (buf[31] & 127) | 64
        }
    }

    /// A new random preshared key, like `wg genpsk`.
    public static func generatePreshared() -> Key {
        Sodium.ensure()
        return Key { buf in randombytes_buf(buf.baseAddress!, Key.length) }
    }

    /// The X25519 public key for this private key, like `wg pubkey` (clamps internally).
    public func publicKey() -> Key {
        Sodium.ensure()
        return Key { out in
            _ = crypto_scalarmult_curve25519_base(
                out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                storage.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
    }

    /// X25519(self, point): the raw Diffie-Hellman function, for the RFC 7748 vectors.
    public func sharedSecret(with point: Key) -> Key? {
        Sodium.ensure()
        var ok = true
        let k = Key { out in
            ok = crypto_scalarmult_curve25519(
                out.baseAddress!.assumingMemoryBound(to: UInt8.self),
                storage.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self),
                point.storage.pointer.baseAddress!.assumingMemoryBound(to: UInt8.self)) == 0
        }
        return ok ? k : nil
    }
}

/// Cryptographically secure random bytes.
public func secureRandomBytes(_ count: Int) -> [UInt8] {
    Sodium.ensure()
    var out = [UInt8](repeating: 0, count: count)
    randombytes_buf(&out, count)
    return out
}

/// A uniformly random integer in `0..<upperBound` from libsodium.
public func secureRandom(below upperBound: UInt32) -> UInt32 {
    Sodium.ensure()
    return randombytes_uniform(upperBound)
}


extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
