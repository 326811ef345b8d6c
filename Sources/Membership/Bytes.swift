import IPNetwork

/// Why bytes could not be decoded. Decoding never traps: every failure is one of these.
public enum WireDecodeError: Error, Equatable, Sendable {
    /// The input ended before the value did.
    case truncated
    /// A field holds a value the format does not allow (bad length, bad family, bad UTF-8...).
    case malformed(String)
}

/// Appends big-endian fields to a byte buffer (the canonical encoding of the wire format).
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    mutating func u32(_ v: UInt32) {
        for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) }
    }
    mutating func u64(_ v: UInt64) {
        for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
    }
    /// LEB128 unsigned varint (1 byte for small incarnations and counts).
    mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes.append(contentsOf: b) }
    /// A string of at most 255 UTF-8 bytes with a 1-byte length (callers validate lengths first).
    mutating func shortString(_ s: String) {
        let u = Array(s.utf8.prefix(255))
        u8(UInt8(u.count)); raw(u)
    }
    mutating func address(_ a: IPAddress) {
        u8(a.isIPv4 ? 4 : 6); raw(a.bytes)
    }
    mutating func endpoint(_ e: Endpoint) { address(e.address); u16(e.port) }
    mutating func prefix(_ p: IPPrefix) { address(p.address); u8(UInt8(p.length)) }
}

/// Reads big-endian fields from a byte slice; every read checks bounds and throws instead of trapping.
struct ByteReader {
    let bytes: [UInt8]
    var offset: Int
    let end: Int

    init(_ bytes: [UInt8], offset: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.offset = offset
        self.end = min(end ?? bytes.count, bytes.count)
    }

    var remaining: Int { end - offset }
    var isAtEnd: Bool { offset >= end }

    mutating func u8() throws(WireDecodeError) -> UInt8 {
        guard offset < end else { throw .truncated }
        defer { offset += 1 }
        return bytes[offset]
    }
    mutating func u16() throws(WireDecodeError) -> UInt16 {
        guard remaining >= 2 else { throw .truncated }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
    mutating func u32() throws(WireDecodeError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }
    mutating func u64() throws(WireDecodeError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated }
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }
    mutating func varint() throws(WireDecodeError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            if shift == 63 && b > 1 { throw .malformed("varint overflows 64 bits") }
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
            if shift > 63 { throw .malformed("varint longer than 10 bytes") }
        }
    }
    mutating func raw(_ n: Int) throws(WireDecodeError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    mutating func shortString() throws(WireDecodeError) -> String {
        let n = Int(try u8())
        let b = try raw(n)
        guard let s = String(validating: b, as: UTF8.self) else { throw .malformed("string is not UTF-8") }
        return s
    }
    mutating func address() throws(WireDecodeError) -> IPAddress {
        let family = try u8()
        let n: Int
        switch family {
        case 4: n = 4
        case 6: n = 16
        default: throw .malformed("address family \(family)")
        }
        guard let a = IPAddress(bytes: try raw(n)) else { throw .malformed("address") }
        return a
    }
    mutating func endpoint() throws(WireDecodeError) -> Endpoint {
        let a = try address()
        return Endpoint(address: a, port: try u16())
    }
    mutating func prefix() throws(WireDecodeError) -> IPPrefix {
        let a = try address()
        let len = Int(try u8())
        guard let p = try? IPPrefix(address: a, length: len) else { throw .malformed("prefix length \(len)") }
        return p
    }
}

/// A stable 64-bit hash of a node name (FNV-1a, then a splitmix finaliser), identical on every node
/// and every run (Swift's `Hasher` is seeded per process, so it cannot be used on the wire).
func stableNameHash(_ name: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return mix64(h)
}

/// The splitmix64 finaliser: a cheap bijective bit mixer.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// xoshiro256** seeded through splitmix64: the only randomness the core uses, so equal seeds give
/// equal traces.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    /// A generator whose whole output is determined by `seed`.
    public init(seed: UInt64) {
        var x = seed
        func next() -> UInt64 { x = x &+ 0x9E37_79B9_7F4A_7C15; return mix64(x &- 0x9E37_79B9_7F4A_7C15) }
        s = (next(), next(), next(), next())
        if s == (0, 0, 0, 0) { s.0 = 1 }
    }

    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
