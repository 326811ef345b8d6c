import IPNetwork
import WireGuard
import WireMeshCrypto

/// `wg` configuration files (`wiremesh device set IFACE FILE`).
enum WGConfigTarget {
    static let target = FuzzTarget(
        name: "wg-config",
        summary: "the wg config format: ConfigFile.parse(bytes:) → render → parse",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        let device: Device
        do { device = try ConfigFile.parse(bytes: data, deviceName: "wm0") } catch let e as ConfigFileError {
            require(e.line >= 1, "error on line \(e.line)")
            return
        } catch {
            fatalError("parse threw \(type(of: error)), not ConfigFileError")
        }
        _ = DeviceFormat.dump(device)
        let text = ConfigFile.render(device)
        let again: Device?
        do { again = try ConfigFile.parse(text, deviceName: "wm0") } catch {
            fatalError("rendered config does not parse (\(error)):\n\(text)")
        }
        require(again == device, "config re-rendered parses differently:\n\(text)")
    }

    static func seeds() throws -> [[UInt8]] {
        let key = NetlinkWireGuardTarget.key
        let device = Device(
            name: "wm0", privateKey: key(1), listenPort: 51820, fwmark: 0xca6c,
            peers: [
                Peer(publicKey: key(2), presharedKey: key(3), endpoint: try Endpoint("192.0.2.1:51820"),
                     persistentKeepaliveInterval: 25, allowedIPs: [try IPPrefix("10.244.1.0/24"), try IPPrefix("fd00:1::/64")]),
                Peer(publicKey: key(4), endpoint: try Endpoint("[2001:db8::1]:51820"), allowedIPs: [try IPPrefix("10.244.2.0/24")]),
            ])
        let handwritten = """
            # written by hand: comments, odd case, spacing, CRLF
            [interface]\r
            PrivateKey=\(key(7).base64)  # the key
            listenport = 0
            FwMark = off

            [PEER]
            PublicKey = \(key(8).base64)
            AllowedIPs = 10.0.0.1, 10.0.1.0/24,fd00::1
            AllowedIPs =
            PersistentKeepalive = off
            """
        return [
            Array(ConfigFile.render(device).utf8),
            Array(ConfigFile.render(Device(name: "wm0")).utf8),
            Array(handwritten.utf8),
            Array("[Peer]\nPublicKey = \(key(9).base64)\nEndpoint = 203.0.113.5:1\n".utf8),
        ]
    }
}
