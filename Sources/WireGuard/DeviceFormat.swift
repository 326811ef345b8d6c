/// Text views of a `Device` for operators and scripts: the `wg show` layout, the exact
/// `wg show IFACE dump` format (so tests can compare with the reference tool), and a stable JSON object.
///
/// Pure functions; the current time is a parameter so output is reproducible.
public enum DeviceFormat {
    /// Exactly what `wg show IFACE dump` prints: a tab-separated device line (private key, public
    /// key, listen port, fwmark) and one line per peer (public key, preshared key, endpoint,
    /// allowed IPs, latest handshake, rx, tx, keepalive), in the device's peer order.
    public static func dump(_ device: Device) -> String {
        var out = ""
        out.reserveCapacity(128 + device.peers.count * 200)
        out += device.privateKey?.base64 ?? "(none)"
        out += "\t"
        out += device.publicKey?.base64 ?? "(none)"
        out += "\t\(device.listenPort)\t"
        out += device.fwmark == 0 ? "off" : "0x" + String(device.fwmark, radix: 16)
        out += "\n"
        for p in device.peers {
            out += p.publicKey.base64
            out += "\t"
            out += p.presharedKey.flatMap { $0.isZero ? nil : $0.base64 } ?? "(none)"
            out += "\t"
            out += p.endpoint?.description ?? "(none)"
            out += "\t"
            out += p.allowedIPs.isEmpty ? "(none)" : p.allowedIPs.map(\.description).joined(separator: ",")
            out += "\t\(p.lastHandshake?.seconds ?? 0)\t\(p.receiveBytes)\t\(p.transmitBytes)\t"
            out += p.persistentKeepaliveInterval == 0 ? "off" : String(p.persistentKeepaliveInterval)
            out += "\n"
        }
        return out
    }

    /// The human layout of `wg show IFACE`: secrets hidden, peers with the most recent handshake
    /// first. `now` is seconds since the epoch, for "latest handshake: … ago".
    public static func human(_ device: Device, now: Int64) -> String {
        var out = "interface: \(device.name)\n"
        if let k = device.publicKey { out += "  public key: \(k.base64)\n" }
        if device.privateKey != nil { out += "  private key: (hidden)\n" }
        if device.listenPort != 0 { out += "  listening port: \(device.listenPort)\n" }
        if device.fwmark != 0 { out += "  fwmark: 0x\(String(device.fwmark, radix: 16))\n" }
        let peers = device.peers.enumerated().sorted { a, b in
            let x = a.element.lastHandshake?.seconds ?? 0, y = b.element.lastHandshake?.seconds ?? 0
            return x != y ? x > y : a.offset < b.offset
        }.map(\.element)
        for p in peers {
            out += "\npeer: \(p.publicKey.base64)\n"
            if let psk = p.presharedKey, !psk.isZero { out += "  preshared key: (hidden)\n" }
            if let e = p.endpoint { out += "  endpoint: \(e)\n" }
            out += "  allowed ips: "
            out += p.allowedIPs.isEmpty ? "(none)" : p.allowedIPs.map(\.description).joined(separator: ", ")
            out += "\n"
            if let hs = p.lastHandshake, hs.seconds != 0 {
                // The device's time is not trusted to be near `now`: the difference must not trap.
                let (elapsed, overflow) = now.subtractingReportingOverflow(hs.seconds)
                out += "  latest handshake: \(ago(overflow ? (hs.seconds < 0 ? .max : .min) : elapsed))\n"
            }
            if p.receiveBytes != 0 || p.transmitBytes != 0 {
                out += "  transfer: \(bytes(p.receiveBytes)) received, \(bytes(p.transmitBytes)) sent\n"
            }
            if p.persistentKeepaliveInterval != 0 {
                out += "  persistent keepalive: every \(duration(Int64(p.persistentKeepaliveInterval)))\n"
            }
        }
        return out
    }

    /// A stable JSON object (fixed key order, peers sorted by public key, no secrets):
    /// `{"interface","public_key","listen_port","fwmark","has_private_key","peers":[{"public_key",
    /// "endpoint","allowed_ips","persistent_keepalive","latest_handshake","rx_bytes","tx_bytes",
    /// "has_preshared_key","protocol_version"}]}`. Absent values are `null`; 0 means off or never.
    public static func json(_ device: Device) -> String {
        var out = "{\"interface\":\(quote(device.name)),"
        out += "\"public_key\":\(device.publicKey.map { quote($0.base64) } ?? "null"),"
        out += "\"listen_port\":\(device.listenPort),\"fwmark\":\(device.fwmark),"
        out += "\"has_private_key\":\(device.privateKey != nil),\"peers\":["
        let peers = device.peers.map { ($0.publicKey.base64, $0) }.sorted { $0.0 < $1.0 }
        for (i, (key, p)) in peers.enumerated() {
            if i > 0 { out += "," }
            out += "{\"public_key\":\(quote(key)),"
            out += "\"endpoint\":\(p.endpoint.map { quote($0.description) } ?? "null"),"
            out += "\"allowed_ips\":[" + p.allowedIPs.map { quote($0.description) }.joined(separator: ",") + "],"
            out += "\"persistent_keepalive\":\(p.persistentKeepaliveInterval),"
            out += "\"latest_handshake\":\(p.lastHandshake?.seconds ?? 0),"
            out += "\"rx_bytes\":\(p.receiveBytes),\"tx_bytes\":\(p.transmitBytes),"
            out += "\"has_preshared_key\":\(p.presharedKey.map { !$0.isZero } ?? false),"
            out += "\"protocol_version\":\(p.protocolVersion)}"
        }
        out += "]}"
        return out
    }

    /// JSON string literal; names and keys are ASCII but quote defensively.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case _ where u.value < 0x20:
                let hex = String(u.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }

    /// "1 day, 2 hours, 3 minutes, 4 seconds" with zero parts left out, like `wg show`.
    public static func duration(_ seconds: Int64) -> String {
        if seconds <= 0 { return "0 seconds" }
        let parts: [(Int64, String)] = [
            (seconds / 31_536_000, "year"), (seconds % 31_536_000 / 86_400, "day"),
            (seconds % 86_400 / 3_600, "hour"), (seconds % 3_600 / 60, "minute"), (seconds % 60, "second"),
        ]
        return parts.filter { $0.0 != 0 }.map { "\($0.0) \($0.1)\($0.0 == 1 ? "" : "s")" }
            .joined(separator: ", ")
    }

    static func ago(_ seconds: Int64) -> String {
        seconds <= 0 ? "Now" : duration(seconds) + " ago"
    }

    /// "1.50 KiB" etc., like `wg show`'s transfer line.
    public static func bytes(_ n: UInt64) -> String {
        let units: [(Double, String)] = [(1_099_511_627_776, "TiB"), (1_073_741_824, "GiB"), (1_048_576, "MiB"), (1_024, "KiB")]
        for (size, unit) in units where Double(n) >= size {
            let v = (Double(n) / size * 100).rounded() / 100
            return "\(formatTwoDecimals(v)) \(unit)"
        }
        return "\(n) B"
    }

    private static func formatTwoDecimals(_ v: Double) -> String {
        let cents = Int64((v * 100).rounded())
        let frac = cents % 100
        return "\(cents / 100).\(frac < 10 ? "0" : "")\(frac)"
    }
}
