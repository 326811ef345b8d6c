import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireGuard

@Suite struct DeviceFormatTests {
    var device: Device {
        Device(name: "wg0", privateKey: fixedKey(1), publicKey: fixedKey(5), listenPort: 51820, fwmark: 0x1234, peers: [
            Peer(publicKey: fixedKey(2), presharedKey: fixedKey(3), endpoint: endpoint("[fd00::1]:51820"),
                 persistentKeepaliveInterval: 25, allowedIPs: [prefix("10.0.0.0/24"), prefix("fd00::/64")],
                 lastHandshake: (1_000, 0), receiveBytes: 1536, transmitBytes: 100, protocolVersion: 1),
            Peer(publicKey: fixedKey(4)),
        ])
    }

    /// Same layout as `wg show wg0 dump` printed for this state (checked against wireguard-tools 1.0.20210914).
    @Test func dumpIsTheWgShowDumpFormat() {
        let b = { (n: UInt8) in fixedKey(n).base64 }
        #expect(DeviceFormat.dump(device) == """
            \(b(1))\t\(b(5))\t51820\t0x1234
            \(b(2))\t\(b(3))\t[fd00::1]:51820\t10.0.0.0/24,fd00::/64\t1000\t1536\t100\t25
            \(b(4))\t(none)\t(none)\t(none)\t0\t0\t0\toff

            """)
        #expect(DeviceFormat.dump(Device(name: "x")) == "(none)\t(none)\t0\toff\n")
    }

    @Test func humanIsTheWgShowLayout() {
        #expect(DeviceFormat.human(device, now: 1_000 + 3_725) == """
            interface: wg0
              public key: \(fixedKey(5).base64)
              private key: (hidden)
              listening port: 51820
              fwmark: 0x1234

            peer: \(fixedKey(2).base64)
              preshared key: (hidden)
              endpoint: [fd00::1]:51820
              allowed ips: 10.0.0.0/24, fd00::/64
              latest handshake: 1 hour, 2 minutes, 5 seconds ago
              transfer: 1.50 KiB received, 100 B sent
              persistent keepalive: every 25 seconds

            peer: \(fixedKey(4).base64)
              allowed ips: (none)

            """)
    }

    /// Spotted while writing the netlink-wireguard fuzz target: a kernel handshake time far from
    /// `now` (any Int64 comes out of the GET reply) trapped on `now - seconds`.
    @Test func handshakeTimesFarFromNowDoNotTrap() {
        let peers = [Peer(publicKey: fixedKey(2), lastHandshake: (.min, 0)), Peer(publicKey: fixedKey(3), lastHandshake: (.max, 0))]
        let text = DeviceFormat.human(Device(name: "wg0", peers: peers), now: 1_000)
        #expect(text.contains("latest handshake: 292471208677 years, 195 days, 15 hours, 30 minutes, 7 seconds ago"))
        #expect(text.contains("latest handshake: Now"))
        #expect(DeviceFormat.human(Device(name: "wg0", peers: [peers[1]]), now: -2).contains("latest handshake: Now"))
    }

    @Test func jsonIsStableAndHasNoSecrets() {
        let j = DeviceFormat.json(device)
        #expect(!j.contains(fixedKey(1).base64))
        #expect(!j.contains(fixedKey(3).base64))
        let peers = [fixedKey(2), fixedKey(4)].map(\.base64).sorted()
        #expect(j.hasPrefix("{\"interface\":\"wg0\",\"public_key\":\"\(fixedKey(5).base64)\",\"listen_port\":51820,\"fwmark\":4660,\"has_private_key\":true,\"peers\":[{\"public_key\":\"\(peers[0])\""))
        #expect(j.contains("{\"public_key\":\"\(fixedKey(2).base64)\",\"endpoint\":\"[fd00::1]:51820\",\"allowed_ips\":[\"10.0.0.0/24\",\"fd00::/64\"],\"persistent_keepalive\":25,\"latest_handshake\":1000,\"rx_bytes\":1536,\"tx_bytes\":100,\"has_preshared_key\":true,\"protocol_version\":1}"))
        #expect(j.contains("{\"public_key\":\"\(fixedKey(4).base64)\",\"endpoint\":null,\"allowed_ips\":[],"))
        var shuffled = device
        shuffled.peers.reverse()
        #expect(DeviceFormat.json(shuffled) == j)
    }

    @Test func durationsAndSizes() {
        #expect(DeviceFormat.duration(1) == "1 second")
        #expect(DeviceFormat.duration(86_400 + 60) == "1 day, 1 minute")
        #expect(DeviceFormat.ago(0) == "Now")
        #expect(DeviceFormat.bytes(1023) == "1023 B")
        #expect(DeviceFormat.bytes(1024) == "1.00 KiB")
        #expect(DeviceFormat.bytes(5 * 1_048_576 + 524_288) == "5.50 MiB")
        #expect(DeviceFormat.quote("a\"b\\\n") == "\"a\\\"b\\\\\\u000a\"")
    }
}
