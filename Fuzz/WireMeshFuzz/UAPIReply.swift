import IPNetwork
import WireGuard
import WireMeshCrypto

/// Replies of a userspace WireGuard (wireguard-go) on its UAPI socket.
enum UAPITarget {
    static let target = FuzzTarget(
        name: "uapi",
        summary: "UAPI get=1 replies: UAPI.decodeGet, UAPI.parseErrno (+ DeviceFormat)",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        do { _ = try UAPI.parseErrno(data) } catch let e as WireGuardError { _ = e.description } catch {
            fatalError("parseErrno threw \(type(of: error)), not WireGuardError")
        }
        let device: Device
        do { device = try UAPI.decodeGet(data, deviceName: "wm0") } catch let e as WireGuardError {
            _ = e.description
            return
        } catch {
            fatalError("decodeGet threw \(type(of: error)), not WireGuardError")
        }
        _ = DeviceFormat.dump(device)
        _ = DeviceFormat.human(device, now: 1_800_000_000)
        _ = DeviceFormat.json(device)
        // decode → encode → decode: what was read is written back as wireguard-go writes it.
        let reply = getReply(device)
        let again = try? UAPI.decodeGet(reply, deviceName: "wm0")
        require(again == device, "device re-encoded as a get reply decodes differently:\n\(String(decoding: reply, as: UTF8.self))")
        // A set request for it is well-formed text: one key=value per line, blank line last.
        let set = UAPI.encodeSet(DeviceConfig(
            privateKey: device.privateKey, listenPort: device.listenPort, fwmark: device.fwmark,
            peers: device.peers.map {
                PeerConfig(publicKey: $0.publicKey, presharedKey: $0.presharedKey, endpoint: $0.endpoint,
                           persistentKeepaliveInterval: $0.persistentKeepaliveInterval, allowedIPs: $0.allowedIPs)
            }))
        let lines = String(decoding: set, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        require(lines.suffix(2) == ["", ""] && lines.dropLast(2).allSatisfy { $0.contains("=") && !$0.isEmpty },
                "set request is not key=value lines ending in a blank line")
    }

    /// The get reply wireguard-go writes for `device` (device/uapi.go IpcGetOperation order).
    static func getReply(_ device: Device, errno: Int = 0) -> [UInt8] {
        var out = ""
        if let k = device.privateKey { out += "private_key=\(k.hex)\n" }
        if device.listenPort != 0 { out += "listen_port=\(device.listenPort)\n" }
        if device.fwmark != 0 { out += "fwmark=\(device.fwmark)\n" }
        for p in device.peers {
            out += "public_key=\(p.publicKey.hex)\n"
            out += "preshared_key=\((p.presharedKey ?? .zero).hex)\n"
            out += "protocol_version=\(p.protocolVersion)\n"
            if let e = p.endpoint { out += "endpoint=\(e)\n" }
            out += "last_handshake_time_sec=\(p.lastHandshake?.seconds ?? 0)\n"
            out += "last_handshake_time_nsec=\(p.lastHandshake?.nanoseconds ?? 0)\n"
            out += "tx_bytes=\(p.transmitBytes)\nrx_bytes=\(p.receiveBytes)\n"
            out += "persistent_keepalive_interval=\(p.persistentKeepaliveInterval)\n"
            for ip in p.allowedIPs { out += "allowed_ip=\(ip)\n" }
        }
        out += "errno=\(errno)\n\n"
        return Array(out.utf8)
    }

    static func seeds() throws -> [[UInt8]] {
        let key = NetlinkWireGuardTarget.key
        let device = Device(
            name: "wm0", privateKey: key(1), publicKey: key(1).publicKey(), listenPort: 45958, fwmark: 4660,
            peers: [
                Peer(publicKey: key(2), presharedKey: key(3), endpoint: try Endpoint("[fd00::1]:51820"),
                     persistentKeepaliveInterval: 25,
                     allowedIPs: [try IPPrefix("10.0.0.0/24"), try IPPrefix("10.1.0.1/32"), try IPPrefix("fd00::/64")],
                     lastHandshake: (1_700_000_000, 123), receiveBytes: 2000, transmitBytes: 1000, protocolVersion: 1),
                Peer(publicKey: key(4), endpoint: try Endpoint("192.0.2.9:3000"), protocolVersion: 1),
            ])
        return [
            getReply(device),
            getReply(Device(name: "wm0")),
            Array("errno=-2\n\n".utf8),
            // Keys in upper case and one this codec does not know, as a newer implementation may send.
            Array("private_key=\(String(repeating: "AB", count: 32))\nlisten_port=1\nfuture_key=x\nerrno=0\n\n".utf8),
        ]
    }
}
