import Foundation
import IPNetwork
import Testing
import WireGuard
import WireMeshCrypto

/// Host end-to-end: two network namespaces joined by a veth pair, wireguard-go in each, configured
/// only by the built `wiremesh device set`, checked with the reference `wg show … dump`, and a ping
/// through the tunnel. Every name is unique per test; `Lab.teardown` removes everything.
@Suite(.enabled(if: runningAsRoot, "needs root: creates network namespaces and TUN devices"))
struct UserspaceDeviceE2ETests {
    @Test func twoNodesConfiguredByWiremeshMatchWgAndPingThroughTheTunnel() throws {
        let lab = try Lab()
        defer { lab.teardown() }
        let bin = try wiremeshBinary()
        let nsA = try lab.namespace("a"), nsB = try lab.namespace("b")
        try lab.link(nsA, "192.168.77.1/24", nsB, "192.168.77.2/24")
        let ifA = lab.id + "wa", ifB = lab.id + "wb"
        _ = try lab.wireguardGo(in: nsA, interface: ifA)
        _ = try lab.wireguardGo(in: nsB, interface: ifB)

        let kA = Key.generatePrivate(), kB = Key.generatePrivate(), psk = Key.generatePreshared()
        let x1 = Key.generatePrivate().publicKey(), x2 = Key.generatePrivate().publicKey()
        let pubA = kA.publicKey().base64, pubB = kB.publicKey().base64
        let confA = try lab.file("a.conf", """
            [Interface]
            PrivateKey = \(kA.base64)
            ListenPort = 51820

            [Peer]   # node B
            PublicKey = \(pubB)
            PresharedKey = \(psk.base64)
            Endpoint = 192.168.77.2:51821
            AllowedIPs = 10.99.0.2/32, fd99::2/128

            [Peer]
            PublicKey = \(x1.base64)
            Endpoint = [2001:db8::1]:51820
            AllowedIPs = 10.50.0.0/16
            AllowedIPs = 2001:db8:50::/48
            PersistentKeepalive = 25

            [Peer]
            PublicKey = \(x2.base64)
            AllowedIPs = 10.51.0.0/16
            """)
        let confB = try lab.file("b.conf", """
            [Interface]
            PrivateKey = \(kB.base64)
            ListenPort = 51821
            [Peer]
            PublicKey = \(pubA)
            PresharedKey = \(psk.base64)
            Endpoint = 192.168.77.1:51820
            AllowedIPs = 10.99.0.1/32
            """)
        for (iface, conf) in [(ifA, confA), (ifB, confB)] {
            let r = try run([bin, "device", "set", iface, conf, "--report"])
            #expect(r.status == 0, "device set \(iface): \(r.stderr)")
            #expect(r.stderr.hasPrefix("messages=1 bytes="), "first apply is one UAPI request: \(r.stderr)")
        }

        // The reference tool sees exactly what was asked.
        let wantA = [
            "\(kA.base64)\t\(pubA)\t51820\toff",
            "\(pubB)\t\(psk.base64)\t192.168.77.2:51821\t10.99.0.2/32,fd99::2/128\toff",
            "\(x1.base64)\t(none)\t[2001:db8::1]:51820\t10.50.0.0/16,2001:db8:50::/48\t25",
            "\(x2.base64)\t(none)\t(none)\t10.51.0.0/16\toff",
        ]
        let wantB = [
            "\(kB.base64)\t\(pubB)\t51821\toff",
            "\(pubA)\t\(psk.base64)\t192.168.77.1:51820\t10.99.0.1/32\toff",
        ]
        let dumpA = try run(["wg", "show", ifA, "dump"], check: true).stdout
        #expect(configFields(ofDump: dumpA) == [wantA[0]] + wantA.dropFirst().sorted())
        #expect(configFields(ofDump: try run(["wg", "show", ifB, "dump"], check: true).stdout) == wantB)
        // And wiremesh's own dump agrees with the reference.
        let ownDump = try run([bin, "device", "show", ifA, "--dump"], check: true).stdout
        #expect(configFields(ofDump: ownDump) == configFields(ofDump: dumpA))

        // The JSON and human views read the same device.
        let json = try run([bin, "device", "show", ifB, "--json"], check: true).stdout
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["interface"] as? String == ifB)
        #expect(object["public_key"] as? String == pubB)
        #expect(object["listen_port"] as? Int == 51821)
        let peers = try #require(object["peers"] as? [[String: Any]])
        #expect(peers.count == 1)
        #expect(peers.first?["public_key"] as? String == pubA)
        #expect(peers.first?["endpoint"] as? String == "192.168.77.1:51820")
        #expect(peers.first?["allowed_ips"] as? [String] == ["10.99.0.1/32"])
        #expect(peers.first?["has_preshared_key"] as? Bool == true)
        #expect(!json.contains(kB.base64) && !json.contains(psk.base64), "secrets in --json")
        let human = try run([bin, "device", "show", ifB], check: true).stdout
        #expect(human.hasPrefix("interface: \(ifB)\n  public key: \(pubB)\n  private key: (hidden)\n  listening port: 51821\n"))
        #expect(human.contains("\npeer: \(pubA)\n  preshared key: (hidden)\n  endpoint: 192.168.77.1:51820\n  allowed ips: 10.99.0.1/32\n"))

        // Tunnel addresses (test setup) and a ping through the tunnel.
        try run(["ip", "-n", nsA, "addr", "add", "10.99.0.1/24", "dev", ifA], check: true)
        try run(["ip", "-n", nsB, "addr", "add", "10.99.0.2/24", "dev", ifB], check: true)
        try run(["ip", "-n", nsA, "link", "set", ifA, "up"], check: true)
        try run(["ip", "-n", nsB, "link", "set", ifB, "up"], check: true)
        #expect(try ping(from: nsA, "10.99.0.2"), "no reply from B through the tunnel")
        #expect(try ping(from: nsB, "10.99.0.1"), "no reply from A through the tunnel")

        // Change one peer's allowed IPs: one peer is sent, with a replace (fd99::2 was removed).
        let changed = try String(contentsOfFile: confA, encoding: .utf8)
            .replacingOccurrences(of: "AllowedIPs = 10.99.0.2/32, fd99::2/128", with: "AllowedIPs = 10.99.0.2/32, 10.98.0.0/24")
        let confA2 = try lab.file("a2.conf", changed)
        let expectedRequest = UAPI.encodeSet(DeviceConfig(peers: [PeerConfig(
            publicKey: kB.publicKey(), replaceAllowedIPs: true,
            allowedIPs: [try IPPrefix("10.99.0.2/32"), try IPPrefix("10.98.0.0/24")])]))
        let r = try run([bin, "device", "set", ifA, confA2, "--report"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr == "messages=1 bytes=\(expectedRequest.count)\n")
        var wantA2 = wantA
        wantA2[1] = "\(pubB)\t\(psk.base64)\t192.168.77.2:51821\t10.98.0.0/24,10.99.0.2/32\toff"
        #expect(configFields(ofDump: try run(["wg", "show", ifA, "dump"], check: true).stdout)
                == [wantA2[0]] + wantA2.dropFirst().sorted())
        #expect(try ping(from: nsA, "10.99.0.2"), "tunnel broken after the allowed-IPs change")

        // Applying the same file again sends nothing.
        let again = try run([bin, "device", "set", ifA, confA2, "--report"])
        #expect(again.status == 0)
        #expect(again.stderr == "messages=0 bytes=0\n")

        // Dropping one peer from the file removes just that peer.
        let withoutX2 = changed.components(separatedBy: "\n[Peer]\nPublicKey = \(x2.base64)")[0]
        let r3 = try run([bin, "device", "set", ifA, try lab.file("a3.conf", withoutX2), "--report"])
        #expect(r3.status == 0, "\(r3.stderr)")
        #expect(r3.stderr.hasPrefix("messages=1 "))
        #expect(configFields(ofDump: try run(["wg", "show", ifA, "dump"], check: true).stdout)
                == [wantA2[0]] + wantA2.dropFirst().dropLast().sorted())
    }

    @Test func badInputFailsOnOneLineAndLeavesTheDeviceAsItWas() throws {
        let lab = try Lab()
        defer { lab.teardown() }
        let bin = try wiremeshBinary()
        let ns = try lab.namespace("a")
        let iface = lab.id + "w"
        _ = try lab.wireguardGo(in: ns, interface: iface)
        let peer = Key.generatePrivate().publicKey().base64
        let good = """
            [Interface]
            PrivateKey = \(Key.generatePrivate().base64)
            ListenPort = 51830
            [Peer]
            PublicKey = \(peer)
            AllowedIPs = 10.60.0.0/24
            """
        let goodPath = try lab.file("good.conf", good)
        #expect(try run([bin, "device", "set", iface, goodPath]).status == 0)
        let before = try run(["wg", "show", iface, "dump"], check: true).stdout

        // Each bad file replaces one line of the good one (and adds a second peer that must not appear).
        let extra = "\n[Peer]\nPublicKey = \(Key.generatePrivate().publicKey().base64)\nAllowedIPs = 10.61.0.0/24\n"
        let cases: [(name: String, text: String, line: Int, problem: String)] = [
            ("malformed-key", good.replacingOccurrences(of: "PublicKey = \(peer)", with: "PublicKey = not-a-key") + extra, 5, "PublicKey: invalid key"),
            ("unknown-key", good.replacingOccurrences(of: "ListenPort = 51830", with: "ListenPort = 51830\nMTU = 1420") + extra, 4, "unknown key 'MTU'"),
            ("bad-cidr", extra + good.replacingOccurrences(of: "10.60.0.0/24", with: "10.60.0.0/40"), 10, "AllowedIPs: invalid CIDR '10.60.0.0/40'"),
            ("bad-endpoint", good + "\nEndpoint = 192.0.2.1:port" + extra, 7, "Endpoint: invalid endpoint '192.0.2.1:port'"),
        ]
        for c in cases {
            let path = try lab.file(c.name + ".conf", c.text)
            let r = try run([bin, "device", "set", iface, path])
            #expect(r.status == 2, "\(c.name): exit \(r.status)")
            #expect(r.stderr.hasPrefix("wiremesh: \(path):\(c.line): \(c.problem)"), "\(c.name): \(r.stderr)")
            #expect(r.stderr.filter { $0 == "\n" }.count == 1, "\(c.name): not one line: \(r.stderr)")
            #expect(try run(["wg", "show", iface, "dump"], check: true).stdout == before, "\(c.name) changed the device")
        }

        // A missing file is bad input too.
        let missing = try run([bin, "device", "set", iface, lab.scratch + "/nope.conf"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("No such file"), "\(missing.stderr)")

        // A device that does not exist: non-zero exit, one line naming it.
        for argv in [[bin, "device", "set", lab.id + "zz", goodPath], [bin, "device", "show", lab.id + "zz"]] {
            let r = try run(argv)
            #expect(r.status == 1, "\(argv): exit \(r.status)")
            #expect(r.stderr.contains("no WireGuard device '\(lab.id)zz'"), "\(r.stderr)")
            #expect(r.stderr.filter { $0 == "\n" }.count == 1)
        }
        #expect(try run(["wg", "show", iface, "dump"], check: true).stdout == before)
    }

    @Test func launcherReportsAMissingBinary() throws {
        let e = #expect(throws: UserspaceLaunchError.self) {
            _ = try UserspaceLauncher(interface: "wmtnobin0", executable: "/nonexistent/wireguard-go-\(UUID().uuidString.prefix(6))")
        }
        #expect(e?.description.contains("cannot start") == true || e?.description.contains("exited early") == true,
                "\(String(describing: e))")
    }
}

/// Pings `address` from inside `ns`, allowing a few attempts for the first handshake.
func ping(from ns: String, _ address: String) throws -> Bool {
    for _ in 0..<3 {
        if try run(["ip", "netns", "exec", ns, "ping", "-c", "2", "-i", "0.3", "-W", "3", address]).status == 0 {
            return true
        }
    }
    return false
}
