// The project's one big-endian byte codec: gossip messages, node records, join tokens, the MAC'd
// join request and the saved member list are all written and read with these two types.
import IPNetwork

/// Why bytes could not be decoded. Decoding never traps: every failure is one of these.
public enum WireDecodeError: Error, Equatable, Sendable {
    /// The input ended before the value did.
    case truncated
    /// A field holds a value the format does not allow (bad length, bad family, bad UTF-8...).
    case malformed(String)
}

/// Appends big-endian fields to a byte buffer (the canonical encoding of the wire format).
public struct ByteWriter: Sendable {
    /// What has been written so far.
    public var bytes: [UInt8] = []

    /// An empty buffer with room for `capacity` bytes.
    public init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { bytes.append(UInt8(v >> 8)); bytes.append(UInt8(v & 0xFF)) }
    public mutating func u32(_ v: UInt32) {
        for s in stride(from: 24, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) }
    }
    public mutating func u64(_ v: UInt64) {
        for s in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) }
    }
    /// LEB128 unsigned varint (1 byte for small incarnations and counts).
    public mutating func varint(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    public mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes.append(contentsOf: b) }
    /// A string of at most 255 UTF-8 bytes with a 1-byte length (callers validate lengths first).
    public mutating func shortString(_ s: String) {
        let u = Array(s.utf8.prefix(255))
        u8(UInt8(u.count)); raw(u)
    }
    /// A string with a 2-byte length: the length wraps past 65535 bytes while every byte is written
    /// (the join request's canonical form; its line is at most 64 KiB, so it never does).
    public mutating func mediumString(_ s: String) {
        u16(UInt16(truncatingIfNeeded: s.utf8.count)); raw(s.utf8)
    }
    /// Family byte (4 or 6), then the address bytes.
    public mutating func address(_ a: IPAddress) {
        u8(a.isIPv4 ? 4 : 6); raw(a.bytes)
    }
    public mutating func endpoint(_ e: Endpoint) { address(e.address); u16(e.port) }
    public mutating func prefix(_ p: IPPrefix) { address(p.address); u8(UInt8(p.length)) }
}

/// Reads big-endian fields from a byte slice; every read checks bounds and throws instead of trapping.
public struct ByteReader: Sendable {
    /// The whole input (nested readers share it and read a window).
    public let bytes: [UInt8]
    /// Where the next read starts.
    public var offset: Int
    /// Where this reader's window ends.
    public let end: Int

    /// A reader over `bytes[offset..<end]`.
    public init(_ bytes: [UInt8], offset: Int = 0, end: Int? = nil) {
        self.bytes = bytes
        self.offset = offset
        self.end = min(end ?? bytes.count, bytes.count)
    }

    /// Bytes left in the window.
    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset >= end }

    public mutating func u8() throws(WireDecodeError) -> UInt8 {
        guard offset < end else { throw .truncated }
        defer { offset += 1 }
        return bytes[offset]
    }
    public mutating func u16() throws(WireDecodeError) -> UInt16 {
        guard remaining >= 2 else { throw .truncated }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }
    public mutating func u32() throws(WireDecodeError) -> UInt32 {
        guard remaining >= 4 else { throw .truncated }
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(bytes[offset + i]) }
        offset += 4
        return v
    }
    public mutating func u64() throws(WireDecodeError) -> UInt64 {
        guard remaining >= 8 else { throw .truncated }
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(bytes[offset + i]) }
        offset += 8
        return v
    }
    /// A minimal LEB128 varint, as `ByteWriter.varint` writes it: a final 0 byte after others (a value
    /// padded with empty groups) is refused, so a value has one encoding (signed records re-encode
    /// to their signed bytes).
    public mutating func varint() throws(WireDecodeError) -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let b = try u8()
            if shift == 63 && b > 1 { throw .malformed("varint overflows 64 bits") }
            if b == 0 && shift > 0 { throw .malformed("varint is not minimal") }
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
            if shift > 63 { throw .malformed("varint longer than 10 bytes") }
        }
    }
    public mutating func raw(_ n: Int) throws(WireDecodeError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }
    public mutating func shortString() throws(WireDecodeError) -> String {
        let n = Int(try u8())
        let b = try raw(n)
        guard let s = String(validating: b, as: UTF8.self) else { throw .malformed("is not UTF-8") }
        return s
    }
    public mutating func address() throws(WireDecodeError) -> IPAddress {
        let family = try u8()
        let n: Int
        switch family {
        case 4: n = 4
        case 6: n = 16
        default: throw .malformed("has unknown address family \(family)")
        }
        guard let a = IPAddress(bytes: try raw(n)) else { throw .malformed("is not an address") }
        return a
    }
    public mutating func endpoint() throws(WireDecodeError) -> Endpoint {
        let a = try address()
        return Endpoint(address: a, port: try u16())
    }
    public mutating func prefix() throws(WireDecodeError) -> IPPrefix {
        let a = try address()
        let len = Int(try u8())
        guard let p = try? IPPrefix(address: a, length: len) else { throw .malformed("has invalid prefix length \(len)") }
        return p
    }
}

