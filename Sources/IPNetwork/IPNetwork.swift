#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a textual address, prefix or endpoint was rejected.
public enum IPParseError: Error, Equatable, CustomStringConvertible {
    case address(String)
    case prefix(String)
    case endpoint(String)

    public var description: String {
        switch self {
        case .address(let s): return "invalid IP address '\(s)'"
        case .prefix(let s): return "invalid CIDR '\(s)': expected ADDRESS/LENGTH such as 10.244.1.0/24 or fd00::/64"
        case .endpoint(let s): return "invalid endpoint '\(s)': expected HOST:PORT such as 192.0.2.1:51820 or [2001:db8::1]:51820"
        }
    }
}

/// An IPv4 or IPv6 address, stored in network byte order.
public enum IPAddress: Sendable, Hashable, Comparable, CustomStringConvertible {
    case v4(UInt32)
    /// High and low 64 bits, network order numerically (so comparisons sort like the address).
    case v6(UInt64, UInt64)

    /// Parses dotted-quad IPv4 or any RFC 4291 IPv6 text form.
    public init(_ text: String) throws {
        var v4 = in_addr()
        var v6 = in6_addr()
        if text.withCString({ inet_pton(AF_INET, $0, &v4) }) == 1 {
            self = .v4(UInt32(bigEndian: v4.s_addr))
        } else if text.withCString({ inet_pton(AF_INET6, $0, &v6) }) == 1 {
            self = IPAddress(v6Bytes: withUnsafeBytes(of: v6) { Array($0) })
        } else {
            throw IPParseError.address(text)
        }
    }

    /// From 4 or 16 raw bytes (as netlink and sockaddr carry them).
    public init?<B: Collection>(bytes: B) where B.Element == UInt8 {
        let b = Array(bytes)
        switch b.count {
        case 4: self = .v4(b.reduce(0) { $0 << 8 | UInt32($1) })
        case 16: self = IPAddress(v6Bytes: b)
        default: return nil
        }
    }

    private init(v6Bytes b: [UInt8]) {
        let hi = b[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let lo = b[8..<16].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        self = .v6(hi, lo)
    }

    public var isIPv4: Bool { if case .v4 = self { return true } else { return false } }

    /// Worth advertising to other hosts: not loopback (127/8, ::1), unspecified, link-local
    /// (169.254/16, fe80::/10) or multicast.
    public var isRoutableUnicast: Bool {
        switch self {
        case .v4(let a):
            let first = a >> 24
            return a != 0 && first != 127 && a >> 16 != 0xA9FE && !(224...255).contains(first)
        case .v6(let hi, let lo):
            if hi == 0 && (lo == 0 || lo == 1) { return false }
            return hi >> 54 != 0x3FA && hi >> 56 != 0xFF
        }
    }

    /// Address family: AF_INET or AF_INET6.
    public var family: Int32 { isIPv4 ? Int32(AF_INET) : Int32(AF_INET6) }

    /// Bit width: 32 or 128.
    public var bitWidth: Int { isIPv4 ? 32 : 128 }

    /// Raw bytes in network order (4 or 16).
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return (0..<4).map { UInt8(truncatingIfNeeded: a >> (24 - 8 * $0)) }
        case .v6(let hi, let lo):
            return (0..<8).map { UInt8(truncatingIfNeeded: hi >> (56 - 8 * UInt64($0))) }
                + (0..<8).map { UInt8(truncatingIfNeeded: lo >> (56 - 8 * UInt64($0))) }
        }
    }

    public var description: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let raw = bytes
        _ = raw.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buf, socklen_t(buf.count)) }
        return String(cString: buf)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        switch (a, b) {
        case (.v4(let x), .v4(let y)): return x < y
        case (.v6(let h1, let l1), .v6(let h2, let l2)): return (h1, l1) < (h2, l2)
        case (.v4, .v6): return true
        case (.v6, .v4): return false
        }
    }

    /// This address with every bit after the first `length` bits cleared.
    public func masked(to length: Int) -> IPAddress {
        switch self {
        case .v4(let a):
            let mask: UInt32 = length <= 0 ? 0 : (length >= 32 ? .max : ~(UInt32.max >> UInt32(length)))
            return .v4(a & mask)
        case .v6(let hi, let lo):
            let hm: UInt64 = length <= 0 ? 0 : (length >= 64 ? .max : ~(UInt64.max >> UInt64(length)))
            let l2 = length - 64
            let lm: UInt64 = l2 <= 0 ? 0 : (l2 >= 64 ? .max : ~(UInt64.max >> UInt64(l2)))
            return .v6(hi & hm, lo & lm)
        }
    }

    /// The address `offset` positions after this one (wrapping within the family).
    public func adding(_ offset: UInt64) -> IPAddress {
        switch self {
        case .v4(let a): return .v4(a &+ UInt32(truncatingIfNeeded: offset))
        case .v6(let hi, let lo):
            let (nlo, carry) = lo.addingReportingOverflow(offset)
            return .v6(carry ? hi &+ 1 : hi, nlo)
        }
    }
}

/// An IP prefix (CIDR), e.g. `10.244.1.0/24`. Kept exactly as given; `network` masks host bits.
public struct IPPrefix: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public init(address: IPAddress, length: Int) throws {
        guard length >= 0, length <= address.bitWidth else {
            throw IPParseError.prefix("\(address)/\(length)")
        }
        self.address = address
        self.length = length
    }

    /// Parses `ADDRESS/LENGTH`; a bare address means a host prefix (/32 or /128), like `wg`.
    public init(_ text: String) throws {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addr = try? IPAddress(String(parts[0])) else {
            throw IPParseError.prefix(text)
        }
        var len = addr.bitWidth
        if parts.count == 2 {
            guard let l = Int(parts[1]), l >= 0, l <= addr.bitWidth, !parts[1].hasPrefix("+") else {
                throw IPParseError.prefix(text)
            }
            len = l
        }
        try self.init(address: addr, length: len)
    }

    /// The same prefix with host bits cleared (what the kernel stores).
    public var network: IPPrefix { try! IPPrefix(address: address.masked(to: length), length: length) }

    /// True when `other` lies entirely inside this prefix.
    public func contains(_ other: IPPrefix) -> Bool {
        other.address.family == address.family && other.length >= length
            && other.address.masked(to: length) == address.masked(to: length)
    }

    /// True when `ip` lies inside this prefix.
    public func contains(_ ip: IPAddress) -> Bool {
        ip.family == address.family && ip.masked(to: length) == address.masked(to: length)
    }

    /// True when the two prefixes share at least one address.
    public func overlaps(_ other: IPPrefix) -> Bool { contains(other) || other.contains(self) }

    /// The first address of the prefix (host bits cleared).
    public var firstAddress: IPAddress { address.masked(to: length) }

    /// The last address of the prefix (host bits set).
    public var lastAddress: IPAddress {
        switch address.masked(to: length) {
        case .v4(let a):
            return .v4(length >= 32 ? a : a | (UInt32.max >> UInt32(length)))
        case .v6(let hi, let lo):
            let hostHi: UInt64 = length >= 64 ? 0 : UInt64.max >> UInt64(length)
            let hostLo: UInt64 = length >= 128 ? 0 : (length <= 64 ? .max : UInt64.max >> UInt64(length - 64))
            return .v6(hi | hostHi, lo | hostLo)
        }
    }

    public var description: String { "\(address)/\(length)" }

    public static func < (a: IPPrefix, b: IPPrefix) -> Bool {
        (a.address, a.length) < (b.address, b.length)
    }
}

/// A UDP endpoint: address and port. IPv6 prints in brackets like `wg`.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// Parses `1.2.3.4:51820` or `[2001:db8::1]:51820` (no DNS: endpoints are literal addresses).
    public init(_ text: String) throws {
        let host: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"),
                  text[text.index(after: close)...].hasPrefix(":") else { throw IPParseError.endpoint(text) }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon else {
                throw IPParseError.endpoint(text)
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let addr = try? IPAddress(String(host)), let port = UInt16(portText), !portText.hasPrefix("+") else {
            throw IPParseError.endpoint(text)
        }
        if !text.hasPrefix("[") && !addr.isIPv4 { throw IPParseError.endpoint(text) }
        self.init(address: addr, port: port)
    }

    public var description: String {
        address.isIPv4 ? "\(address):\(port)" : "[\(address)]:\(port)"
    }
}

/// Prefixes none of which overlap another, each with a value. Finds the entry a candidate overlaps in
/// O(log n): the entries are disjoint ranges sorted by first address, so only the last one starting
/// at or before the candidate's end can reach into it.
public struct DisjointPrefixes<Value> {
    public private(set) var entries: [(prefix: IPPrefix, value: Value)] = []
    private var ranges: [(first: IPAddress, last: IPAddress)] = []

    public init() {}

    public var count: Int { entries.count }

    /// The index of the first entry starting after `address`.
    private func upperBound(_ address: IPAddress) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].first <= address { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The entry sharing an address with `prefix`, if any.
    public func overlapping(_ prefix: IPPrefix) -> (prefix: IPPrefix, value: Value)? {
        let i = upperBound(prefix.lastAddress)
        guard i > 0, ranges[i - 1].last >= prefix.firstAddress else { return nil }
        return entries[i - 1]
    }

    /// Adds `prefix` unless it overlaps an entry; then returns that entry and adds nothing.
    @discardableResult
    public mutating func insert(_ prefix: IPPrefix, _ value: Value) -> (prefix: IPPrefix, value: Value)? {
        if let clash = overlapping(prefix) { return clash }
        let i = upperBound(prefix.lastAddress)
        ranges.insert((prefix.firstAddress, prefix.lastAddress), at: i)
        entries.insert((prefix, value), at: i)
        return nil
    }
}

extension DisjointPrefixes: Sendable where Value: Sendable {}
