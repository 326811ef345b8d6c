import IPNetwork
import WireMeshCrypto

/// The cross-platform userspace configuration protocol (wireguard.com/xplatform) spoken over
/// `/var/run/wireguard/IFACE.sock` by wireguard-go and other userspace implementations.
///
/// Pure text codec, no I/O: `set=1` requests from a `DeviceConfig`, `get=1` replies into a `Device`,
/// and the `errno=N` status line that ends every reply.
public enum UAPI {
    /// The request that reads the whole device.
    public static let getRequest: [UInt8] = Array("get=1\n\n".utf8)

    /// Encodes `config` as one `set=1` request, terminated by the blank line.
    ///
    /// Keys are lowercase hex; device attributes come first, then per peer `public_key` followed by
    /// that peer's fields, as the protocol requires.
    public static func encodeSet(_ config: DeviceConfig) -> [UInt8] {
        var out = "set=1\n"
        out.reserveCapacity(64 + config.peers.count * 160)
        if let k = config.privateKey { out += "private_key=\(k.hex)\n" }
        if let p = config.listenPort { out += "listen_port=\(p)\n" }
        if let m = config.fwmark { out += "fwmark=\(m)\n" }
        if config.replacePeers { out += "replace_peers=true\n" }
        for peer in config.peers {
            out += "public_key="
            out += peer.publicKey.hex
            out += "\n"
            if peer.remove {
                out += "remove=true\n"
                continue
            }
            if peer.updateOnly { out += "update_only=true\n" }
            if let k = peer.presharedKey { out += "preshared_key=\(k.hex)\n" }
            if let e = peer.endpoint { out += "endpoint=\(e)\n" }
            if let s = peer.persistentKeepaliveInterval { out += "persistent_keepalive_interval=\(s)\n" }
            if peer.replaceAllowedIPs { out += "replace_allowed_ips=true\n" }
            for ip in peer.allowedIPs {
                out += "allowed_ip="
                out += ip.description
                out += "\n"
            }
        }
        out += "\n"
        return Array(out.utf8)
    }

    /// The status of a reply: the value of its `errno=` line (0 is success; wireguard-go sends
    /// negative numbers, so callers should use the magnitude).
    public static func parseErrno(_ reply: [UInt8]) throws -> Int32 {
        var result: Int32? = nil
        try forEachLine(reply) { key, value in
            if key.elementsEqual("errno".utf8) {
                guard let n = Int32(String(decoding: value, as: UTF8.self)) else {
                    throw WireGuardError.protocolError("bad errno line in UAPI reply: '\(String(decoding: value, as: UTF8.self))'")
                }
                result = n
            }
        }
        guard let r = result else { throw WireGuardError.protocolError("UAPI reply has no errno line") }
        return r
    }

    /// Decodes the reply to `get=1` into the device named `name`.
    ///
    /// Throws `.rejected` when the reply's errno is not 0, `.protocolError` for malformed lines.
    /// Keys this codec does not know are skipped so newer implementations still work.
    public static func decodeGet(_ reply: [UInt8], deviceName name: String) throws -> Device {
        var device = Device(name: name)
        var peer: Peer? = nil
        var errno: Int32? = nil
        var handshakeSeconds: Int64 = 0, handshakeNanos: Int64 = 0

        func flush() {
            guard var p = peer else { return }
            if handshakeSeconds != 0 || handshakeNanos != 0 {
                p.lastHandshake = (handshakeSeconds, handshakeNanos)
            }
            device.peers.append(p)
            peer = nil
            handshakeSeconds = 0
            handshakeNanos = 0
        }

        try forEachLine(reply) { key, value in
            func text() -> String { String(decoding: value, as: UTF8.self) }
            func bad() -> WireGuardError {
                // A damaged key line may still hold most of a secret: name the line, not its value.
                let field = Field(key)
                let value = field == .privateKey || field == .presharedKey ? "(secret, \(value.count) bytes)" : text()
                return .protocolError("device '\(name)': bad UAPI line '\(String(decoding: key, as: UTF8.self))=\(value)'")
            }
            func number<T: FixedWidthInteger>(_: T.Type) throws -> T {
                guard let n = parseDecimal(value, as: T.self) else { throw bad() }
                return n
            }
            func key32() throws -> Key {
                guard let k = TextParsing.hexKey(value) else { throw bad() }
                return k
            }
            switch Field(key) {
            case .errno:
                guard let n = Int32(text()) else { throw bad() }
                errno = n
            case .publicKey:
                flush()
                peer = Peer(publicKey: try key32())
            case .privateKey where peer == nil:
                let pk = try key32()
                device.privateKey = pk.isZero ? nil : pk
                device.publicKey = device.privateKey?.publicKey()
            case .listenPort where peer == nil:
                device.listenPort = try number(UInt16.self)
            case .fwmark where peer == nil:
                device.fwmark = try number(UInt32.self)
            case .presharedKey:
                guard peer != nil else { throw bad() }
                let psk = try key32()
                peer!.presharedKey = psk.isZero ? nil : psk
            case .endpoint:
                guard peer != nil else { throw bad() }
                if let e = TextParsing.endpoint(value) {
                    peer!.endpoint = e
                } else {
                    do { peer!.endpoint = try Endpoint(text()) } catch { throw bad() }
                }
            case .persistentKeepaliveInterval:
                guard peer != nil else { throw bad() }
                peer!.persistentKeepaliveInterval = try number(UInt16.self)
            case .allowedIP:
                guard peer != nil else { throw bad() }
                if let p = TextParsing.prefix(value) {
                    peer!.allowedIPs.append(p)
                } else {
                    do { peer!.allowedIPs.append(try IPPrefix(text())) } catch { throw bad() }
                }
            case .lastHandshakeSec:
                guard peer != nil else { throw bad() }
                handshakeSeconds = try number(Int64.self)
            case .lastHandshakeNsec:
                guard peer != nil else { throw bad() }
                handshakeNanos = try number(Int64.self)
            case .rxBytes:
                guard peer != nil else { throw bad() }
                peer!.receiveBytes = try number(UInt64.self)
            case .txBytes:
                guard peer != nil else { throw bad() }
                peer!.transmitBytes = try number(UInt64.self)
            case .protocolVersion:
                guard peer != nil else { throw bad() }
                peer!.protocolVersion = try number(UInt32.self)
            default:
                break  // unknown keys, and device keys inside a peer
            }
        }
        flush()
        guard let status = errno else {
            throw WireGuardError.protocolError("device '\(name)': UAPI reply has no errno line")
        }
        if status != 0 {
            throw WireGuardError.rejected(device: name, errno: Int32(clamping: status.magnitude),
                                          message: "reading the device failed")
        }
        return device
    }

    /// The keys of a `get=1` reply, recognised from bytes without building Strings.
    enum Field {
        case errno, privateKey, listenPort, fwmark, publicKey, presharedKey, endpoint
        case persistentKeepaliveInterval, allowedIP, lastHandshakeSec, lastHandshakeNsec
        case rxBytes, txBytes, protocolVersion

        init?(_ k: ArraySlice<UInt8>) {
            func is_(_ s: StaticString) -> Bool { TextParsing.equalsLowercase(k, s) }
            switch k.count {
            case 5 where is_("errno"): self = .errno
            case 6 where is_("fwmark"): self = .fwmark
            case 8 where is_("endpoint"): self = .endpoint
            case 8 where is_("rx_bytes"): self = .rxBytes
            case 8 where is_("tx_bytes"): self = .txBytes
            case 10 where is_("public_key"): self = .publicKey
            case 10 where is_("allowed_ip"): self = .allowedIP
            case 11 where is_("private_key"): self = .privateKey
            case 11 where is_("listen_port"): self = .listenPort
            case 13 where is_("preshared_key"): self = .presharedKey
            case 16 where is_("protocol_version"): self = .protocolVersion
            case 23 where is_("last_handshake_time_sec"): self = .lastHandshakeSec
            case 24 where is_("last_handshake_time_nsec"): self = .lastHandshakeNsec
            case 29 where is_("persistent_keepalive_interval"): self = .persistentKeepaliveInterval
            default: return nil
            }
        }
    }

    /// Calls `body` with the key and value bytes of every `key=value` line up to the first blank line.
    static func forEachLine(_ bytes: [UInt8], _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) throws -> Void) throws {
        var start = 0
        var i = 0
        let n = bytes.count
        while i < n {
            if bytes[i] == UInt8(ascii: "\n") {
                if i == start { return }  // blank line: end of this reply
                let line = bytes[start..<i]
                guard let eq = line.firstIndex(of: UInt8(ascii: "=")) else {
                    throw WireGuardError.protocolError("UAPI line without '=': '\(String(decoding: line, as: UTF8.self))'")
                }
                try body(bytes[start..<eq], bytes[(eq + 1)..<i])
                start = i + 1
            }
            i += 1
        }
        if start < n {
            throw WireGuardError.protocolError("UAPI reply ends in the middle of a line")
        }
    }

    /// Parses unsigned decimal digits without building a String (hot on 5000-peer replies).
    static func parseDecimal<T: FixedWidthInteger>(_ digits: ArraySlice<UInt8>, as: T.Type) -> T? {
        guard !digits.isEmpty, digits.count <= 20 else { return nil }
        var value: T = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (s, o2) = m.addingReportingOverflow(T(d - UInt8(ascii: "0")))
            if o1 || o2 { return nil }
            value = s
        }
        return value
    }
}
