#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ByteCodec
import IPNetwork
import WireMeshCrypto

// Byte-level parsers for the hot paths (config files and UAPI replies of thousands of peers).
// Each one accepts a subset of what the String-based parsers in IPNetwork/WireMeshCrypto accept
// and returns nil otherwise; callers then fall back to those parsers, which stay the single
// authority on what is valid and on the error message.

enum TextParsing {
    /// Dotted-quad IPv4 exactly as inet_pton(3) accepts it (no leading zeros, each octet ≤ 255).
    static func ipv4(_ s: ArraySlice<UInt8>) -> UInt32? {
        var value: UInt32 = 0, octet: UInt32 = 0, digits = 0, dots = 0
        for c in s {
            if c == UInt8(ascii: ".") {
                guard digits > 0, dots < 3 else { return nil }
                value = value << 8 | octet
                octet = 0; digits = 0; dots += 1
            } else if c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") {
                if digits > 0 && octet == 0 { return nil }  // leading zero
                octet = octet * 10 + UInt32(c - UInt8(ascii: "0"))
                digits += 1
                guard octet <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, dots == 3 else { return nil }
        return value << 8 | octet
    }

    /// An IPv4 or IPv6 address (IPv6 through inet_pton on a stack copy, no String).
    static func address(_ s: ArraySlice<UInt8>) -> IPAddress? {
        if let v4 = ipv4(s) { return .v4(v4) }
        guard s.count < 64, s.contains(UInt8(ascii: ":")) else { return nil }
        var buf = [CChar](repeating: 0, count: 64)
        for (i, c) in s.enumerated() { buf[i] = CChar(bitPattern: c) }
        var raw = in6_addr()
        guard inet_pton(AF_INET6, buf, &raw) == 1 else { return nil }
        return withUnsafeBytes(of: raw) { IPAddress(bytes: $0) }
    }

    /// `ADDRESS/LENGTH` or a bare address (host prefix), like `IPPrefix(String)`.
    static func prefix(_ s: ArraySlice<UInt8>) -> IPPrefix? {
        let slash = s.firstIndex(of: UInt8(ascii: "/"))
        guard let addr = address(s[s.startIndex..<(slash ?? s.endIndex)]) else { return nil }
        var length = addr.bitWidth
        if let slash {
            let digits = s[(slash + 1)...]
            guard digits.count <= 3, let n = UAPI.parseDecimal(digits, as: Int.self), n <= addr.bitWidth else { return nil }
            length = n
        }
        return try? IPPrefix(address: addr, length: length)
    }

    /// `A.B.C.D:PORT` or `[IPv6]:PORT`, like `Endpoint(String)`.
    static func endpoint(_ s: ArraySlice<UInt8>) -> Endpoint? {
        guard let colon = s.lastIndex(of: UInt8(ascii: ":")) else { return nil }
        let portDigits = s[(colon + 1)...]
        guard portDigits.count <= 5, let port = UAPI.parseDecimal(portDigits, as: UInt16.self) else { return nil }
        let host = s[s.startIndex..<colon]
        if host.first == UInt8(ascii: "[") {
            guard host.count > 2, host.last == UInt8(ascii: "]"),
                  let a = address(host.dropFirst().dropLast()), !a.isIPv4 else { return nil }
            return Endpoint(address: a, port: port)
        }
        guard let v4 = ipv4(host) else { return nil }
        return Endpoint(address: .v4(v4), port: port)
    }

    /// 64 hex digits (either case) as a key.
    static func hexKey(_ s: ArraySlice<UInt8>) -> Key? {
        guard s.count == 64, var out = Hex.decode(utf8: s) else { return nil }
        defer { for i in out.indices { out[i] = 0 } }
        return try? Key(bytes: out)
    }

    /// The 44-character padded base64 `wg` prints (canonical: unused trailing bits zero).
    static func base64Key(_ s: ArraySlice<UInt8>) -> Key? {
        guard s.count == 44, s.last == UInt8(ascii: "="), s[s.endIndex - 2] != UInt8(ascii: "=") else { return nil }
        var out = [UInt8](repeating: 0, count: 33)
        defer { for i in out.indices { out[i] = 0 } }
        var acc: UInt32 = 0, bits = 0, n = 0
        for c in s.dropLast() {
            guard let v = base64Digit(c) else { return nil }
            acc = acc << 6 | UInt32(v)
            bits += 6
            if bits >= 8 {
                bits -= 8
                out[n] = UInt8(truncatingIfNeeded: acc >> UInt32(bits))
                n += 1
            }
        }
        // 43 digits = 258 bits: 32 bytes and 2 leftover bits, which must be zero.
        guard n == 32, acc & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return try? Key(bytes: out[0..<32])
    }

    private static func base64Digit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return c - UInt8(ascii: "A")
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return c - UInt8(ascii: "a") + 26
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0") + 52
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return nil
        }
    }

    /// ASCII case-insensitive equality with a lowercase literal.
    static func equalsLowercase(_ s: ArraySlice<UInt8>, _ lower: StaticString) -> Bool {
        guard s.count == lower.utf8CodeUnitCount else { return false }
        var p = lower.utf8Start
        for c in s {
            let l = (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z")) ? c + 32 : c
            if l != p.pointee { return false }
            p += 1
        }
        return true
    }
}
