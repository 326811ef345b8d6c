import IPNetwork
import WireMeshCrypto

/// Why a `wg`-format configuration file was rejected: the 1-based line and the problem on it.
public struct ConfigFileError: Error, Equatable, CustomStringConvertible {
    /// 1-based line number the problem was found on.
    public let line: Int
    /// What is wrong, phrased for the person who wrote the file.
    public let problem: String

    public init(line: Int, problem: String) {
        self.line = line
        self.problem = problem
    }

    public var description: String { "line \(line): \(problem)" }
}

/// The `wg` configuration format (`wg setconf`/`wg showconf`, wireguard-tools `src/config.c`).
///
/// Parsing gives the desired state of a device as a `Device`: the `[Interface]` keys
/// PrivateKey/ListenPort/FwMark and, per `[Peer]`, PublicKey/PresharedKey/Endpoint/AllowedIPs/
/// PersistentKeepalive. Like `wg`, whitespace anywhere on a line is ignored, `#` starts a comment,
/// section names and keys are case-insensitive and AllowedIPs may repeat. Unlike `wg`, endpoints
/// must be literal addresses (no DNS at apply time), and a public key listed twice is an error
/// rather than a silent merge.
public enum ConfigFile {
    /// Parses `text` into the desired device state named `name`.
    ///
    /// Absent keys keep the model's defaults: no private key, listen port 0 and fwmark 0, and per
    /// peer no preshared key, no endpoint, keepalive off, no allowed IPs (see `diff` for what those
    /// mean as desired state). Throws `ConfigFileError` for the first bad line.
    public static func parse(_ text: String, deviceName name: String = "") throws -> Device {
        try parse(bytes: Array(text.utf8), deviceName: name)
    }

    /// Parses the raw bytes of a file (no String round trip for files of thousands of peers);
    /// same rules as `parse(_:deviceName:)`.
    public static func parse(bytes: [UInt8], deviceName name: String = "") throws -> Device {
        var device = Device(name: name)
        var section = Section.none
        var peer: Peer? = nil
        var peerLine = 0
        var seen: [Key: Int] = [:]
        var sawInterface = false

        func finishPeer() throws {
            guard let p = peer else { return }
            // Kept only when a PublicKey line was seen; the placeholder key is the zero key.
            if p.publicKey.isZero {
                throw ConfigFileError(line: peerLine, problem: "[Peer] has no PublicKey: every peer needs one")
            }
            device.peers.append(p)
            peer = nil
        }

        var lineNumber = 0
        var utf8 = bytes
        if utf8.last != UInt8(ascii: "\n") { utf8.append(UInt8(ascii: "\n")) }
        var start = 0
        var cleaned: [UInt8] = []
        cleaned.reserveCapacity(256)
        for i in utf8.indices where utf8[i] == UInt8(ascii: "\n") {
            lineNumber += 1
            cleaned.removeAll(keepingCapacity: true)
            // Drop comments and every whitespace byte, like wireguard-tools.
            for b in utf8[start..<i] {
                if b == UInt8(ascii: "#") { break }
                if b == 0x20 || b == 0x09 || b == 0x0d || b == 0x0b || b == 0x0c { continue }
                cleaned.append(b)
            }
            start = i + 1
            if cleaned.isEmpty { continue }
            let line = cleaned[...]

            if line.first == UInt8(ascii: "[") {
                if TextParsing.equalsLowercase(line, "[interface]") {
                    try finishPeer()
                    if sawInterface {
                        throw ConfigFileError(line: lineNumber, problem: "second [Interface] section: a file describes one device")
                    }
                    sawInterface = true
                    section = .interface
                } else if TextParsing.equalsLowercase(line, "[peer]") {
                    try finishPeer()
                    section = .peer
                    peer = Peer(publicKey: .zero)
                    peerLine = lineNumber
                } else {
                    throw ConfigFileError(line: lineNumber, problem: "unknown section '\(string(line))': expected [Interface] or [Peer]")
                }
                continue
            }

            guard let eq = line.firstIndex(of: UInt8(ascii: "=")) else {
                throw ConfigFileError(line: lineNumber, problem: "expected 'Key = Value', got '\(string(line))'")
            }
            let key = line[..<eq]
            let value = line[(eq + 1)...]

            func fail(_ problem: String) -> ConfigFileError {
                ConfigFileError(line: lineNumber, problem: "\(string(key)): \(problem)")
            }
            /// The fast byte parser, else the String one for the authoritative error.
            func parsed<T>(_ fast: (ArraySlice<UInt8>) -> T?, _ slow: (String) throws -> T,
                           _ problem: (String, Error) -> String) throws -> T {
                if let v = fast(value) { return v }
                do { return try slow(string(value)) } catch { throw fail(problem(string(value), error)) }
            }
            func key32() throws -> Key {
                try parsed(TextParsing.base64Key, { try Key(base64: $0) }, { _, e in "\(e)" })
            }

            switch section {
            case .none:
                throw ConfigFileError(line: lineNumber, problem: "'\(string(key))' outside a section: put it under [Interface] or [Peer]")
            case .interface:
                if TextParsing.equalsLowercase(key, "privatekey") {
                    device.privateKey = try key32()
                    device.publicKey = device.privateKey?.publicKey()
                } else if TextParsing.equalsLowercase(key, "listenport") {
                    guard let port = UAPI.parseDecimal(value, as: UInt16.self) else {
                        throw fail("invalid port '\(string(value))': expected a number 0-65535")
                    }
                    device.listenPort = port
                } else if TextParsing.equalsLowercase(key, "fwmark") {
                    guard let mark = parseFwMark(string(value)) else {
                        throw fail("invalid fwmark '\(string(value))': expected 'off', a number or 0x-hex up to 32 bits")
                    }
                    device.fwmark = mark
                } else {
                    throw ConfigFileError(line: lineNumber, problem: "unknown key '\(string(key))' in [Interface]: expected PrivateKey, ListenPort or FwMark")
                }
            case .peer:
                if TextParsing.equalsLowercase(key, "publickey") {
                    let k = try key32()
                    if !peer!.publicKey.isZero {
                        throw fail("this [Peer] already has a PublicKey (line \(peerLine) starts it)")
                    }
                    if let first = seen.updateValue(lineNumber, forKey: k) {
                        throw fail("duplicate peer \(string(value)): already defined at line \(first)")
                    }
                    peer!.publicKey = k
                } else if TextParsing.equalsLowercase(key, "presharedkey") {
                    let k = try key32()
                    peer!.presharedKey = k.isZero ? nil : k
                } else if TextParsing.equalsLowercase(key, "endpoint") {
                    peer!.endpoint = try parsed(TextParsing.endpoint, { try Endpoint($0) }, { v, _ in
                        "invalid endpoint '\(v)': expected a literal IPv4 ADDRESS:PORT or [IPv6]:PORT such as 192.0.2.1:51820 or [2001:db8::1]:51820"
                    })
                } else if TextParsing.equalsLowercase(key, "allowedips") {
                    if value.isEmpty { continue }  // "AllowedIPs =" means none
                    for item in value.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                        if let p = TextParsing.prefix(item) {
                            peer!.allowedIPs.append(p)
                            continue
                        }
                        do { peer!.allowedIPs.append(try IPPrefix(string(item))) } catch {
                            throw fail("invalid CIDR '\(string(item))': expected ADDRESS/LENGTH such as 10.244.1.0/24 or fd00::/64")
                        }
                    }
                } else if TextParsing.equalsLowercase(key, "persistentkeepalive") {
                    if TextParsing.equalsLowercase(value, "off") {
                        peer!.persistentKeepaliveInterval = 0
                    } else if let s = UAPI.parseDecimal(value, as: UInt16.self) {
                        peer!.persistentKeepaliveInterval = s
                    } else {
                        throw fail("invalid interval '\(string(value))': expected 'off' or seconds 0-65535")
                    }
                } else {
                    throw ConfigFileError(line: lineNumber, problem: "unknown key '\(string(key))' in [Peer]: expected PublicKey, PresharedKey, Endpoint, AllowedIPs or PersistentKeepalive")
                }
            }
        }
        try finishPeer()
        return device
    }

    /// Prints `device` in the format `wg showconf` uses; `parse` reads it back to the same state.
    public static func render(_ device: Device) -> String {
        var out = "[Interface]\n"
        if device.listenPort != 0 { out += "ListenPort = \(device.listenPort)\n" }
        if device.fwmark != 0 { out += "FwMark = 0x\(String(device.fwmark, radix: 16))\n" }
        if let k = device.privateKey { out += "PrivateKey = \(k.base64)\n" }
        for p in device.peers {
            out += "\n[Peer]\nPublicKey = \(p.publicKey.base64)\n"
            if let psk = p.presharedKey, !psk.isZero { out += "PresharedKey = \(psk.base64)\n" }
            if !p.allowedIPs.isEmpty {
                out += "AllowedIPs = " + p.allowedIPs.map(\.description).joined(separator: ", ") + "\n"
            }
            if let e = p.endpoint { out += "Endpoint = \(e)\n" }
            if p.persistentKeepaliveInterval != 0 {
                out += "PersistentKeepalive = \(p.persistentKeepaliveInterval)\n"
            }
        }
        return out
    }

    private enum Section { case none, interface, peer }

    private static func string(_ bytes: ArraySlice<UInt8>) -> String { String(decoding: bytes, as: UTF8.self) }

    /// "off", decimal, or 0x-prefixed hex (what `wg` accepts in practice).
    static func parseFwMark(_ value: String) -> UInt32? {
        let v = value.lowercased()
        if v == "off" { return 0 }
        if v.hasPrefix("0x") {
            let digits = v.dropFirst(2)
            return digits.isEmpty ? nil : UInt32(digits, radix: 16)
        }
        if v.hasPrefix("+") { return nil }
        return UInt32(v)
    }
}
