import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireGuard

/// A fixed key whose every byte is `b` (readable goldens).
func fixedKey(_ b: UInt8) -> Key { try! Key(bytes: [UInt8](repeating: b, count: 32)) }

func prefix(_ s: String) -> IPPrefix { try! IPPrefix(s) }
func endpoint(_ s: String) -> Endpoint { try! Endpoint(s) }

@Suite struct ConfigFileTests {
    // Base64 of 32 bytes of 0x01 / 0x02 / 0x03 / 0x04.
    let k1 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
    let k2 = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
    let k3 = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM="
    let k4 = "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="

    @Test func fixedKeysAreWhatTheGoldensSay() {
        #expect(fixedKey(1).base64 == k1)
        #expect(fixedKey(4).base64 == k4)
    }

    @Test func parsesEveryKeyOfBothSections() throws {
        let text = """
            # a comment line
            [Interface]
            PrivateKey = \(k1)
            ListenPort = 51820
            FwMark = 0x2a

            [Peer]
            PublicKey = \(k2)
            PresharedKey = \(k3)
            Endpoint = 192.0.2.1:51820
            AllowedIPs = 10.0.0.0/24, 10.1.0.1/32
            AllowedIPs = fd00::/64   # repeated key appends
            PersistentKeepalive = 25

            [Peer]
            PublicKey = \(k4)
            Endpoint = [2001:db8::1]:443
            PersistentKeepalive = off
            """
        let d = try ConfigFile.parse(text, deviceName: "wg0")
        #expect(d.name == "wg0")
        #expect(d.privateKey == fixedKey(1))
        #expect(d.publicKey == fixedKey(1).publicKey())
        #expect(d.listenPort == 51820)
        #expect(d.fwmark == 42)
        #expect(d.peers.count == 2)
        let p = d.peers[0]
        #expect(p.publicKey == fixedKey(2))
        #expect(p.presharedKey == fixedKey(3))
        #expect(p.endpoint == endpoint("192.0.2.1:51820"))
        #expect(p.allowedIPs == [prefix("10.0.0.0/24"), prefix("10.1.0.1/32"), prefix("fd00::/64")])
        #expect(p.persistentKeepaliveInterval == 25)
        let q = d.peers[1]
        #expect(q.publicKey == fixedKey(4))
        #expect(q.presharedKey == nil)
        #expect(q.endpoint == endpoint("[2001:db8::1]:443"))
        #expect(q.persistentKeepaliveInterval == 0)
        #expect(q.allowedIPs.isEmpty)
    }

    @Test func keysAndSectionsAreCaseInsensitiveAndWhitespaceIsIgnored() throws {
        let text = "[INTERFACE]\r\n\tlistenport=7\r\n[peer]\n  PUBLICKEY =\(k2)\nallowed ips = 10.0.0.1 , 10.0.0.2/32\nfwmark_is_not_here=1\n"
        // The last line is an unknown key: everything before it parsed fine.
        #expect(throws: ConfigFileError(line: 6, problem: "unknown key 'fwmark_is_not_here' in [Peer]: expected PublicKey, PresharedKey, Endpoint, AllowedIPs or PersistentKeepalive")) {
            try ConfigFile.parse(text)
        }
        let ok = try ConfigFile.parse(String(text.dropLast("fwmark_is_not_here=1\n".count)))
        #expect(ok.listenPort == 7)
        #expect(ok.peers.first?.allowedIPs == [prefix("10.0.0.1/32"), prefix("10.0.0.2/32")])
    }

    @Test func fwmarkAcceptsOffDecimalAndHex() throws {
        for (v, want) in [("off", UInt32(0)), ("0", 0), ("4660", 4660), ("0x1234", 0x1234), ("0XFFFFFFFF", .max)] {
            #expect(try ConfigFile.parse("[Interface]\nFwMark = \(v)\n").fwmark == want)
        }
    }

    @Test func emptyFileAndEmptyAllowedIPsAreFine() throws {
        #expect(try ConfigFile.parse("").peers.isEmpty)
        let d = try ConfigFile.parse("[Peer]\nPublicKey = \(k2)\nAllowedIPs =\n")
        #expect(d.peers.first?.allowedIPs == [])
    }

    /// Every rejection names the line and the problem.
    @Test(arguments: [
        ("[Interface]\nPrivateKey = abc\n", 2, "PrivateKey: invalid key (3 characters)"),
        ("[Interface]\nListenPort = 70000\n", 2, "ListenPort: invalid port '70000'"),
        ("[Interface]\nListenPort = -1\n", 2, "ListenPort: invalid port '-1'"),
        ("[Interface]\nFwMark = 0xZZ\n", 2, "FwMark: invalid fwmark '0xZZ'"),
        ("[Interface]\nMTU = 1420\n", 2, "unknown key 'MTU' in [Interface]"),
        ("[Interface]\nAddress = 10.0.0.1/24\n", 2, "unknown key 'Address' in [Interface]"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAllowedIPs = 10.0.0.0/33\n", 3, "AllowedIPs: invalid CIDR '10.0.0.0/33'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAllowedIPs = 10.0.0.0/24,,10.1.0.0/24\n", 3, "AllowedIPs: invalid CIDR ''"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAllowedIPs = 300.0.0.0/8\n", 3, "AllowedIPs: invalid CIDR '300.0.0.0/8'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nEndpoint = example.com:51820\n", 3, "Endpoint: invalid endpoint 'example.com:51820'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nEndpoint = 192.0.2.1\n", 3, "Endpoint: invalid endpoint '192.0.2.1'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nEndpoint = 2001:db8::1:51820\n", 3, "Endpoint: invalid endpoint '2001:db8::1:51820'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nEndpoint = 192.0.2.1:70000\n", 3, "Endpoint: invalid endpoint '192.0.2.1:70000'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nPersistentKeepalive = forever\n", 3, "PersistentKeepalive: invalid interval 'forever'"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nPresharedKey = AQEB\n", 3, "PresharedKey: invalid key (4 characters)"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE\n", 2, "PublicKey: invalid key"),
        ("[Peer]\nAllowedIPs = 10.0.0.0/24\n", 1, "[Peer] has no PublicKey"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\n[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n", 5, "PublicKey: duplicate peer AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=: already defined at line 2"),
        ("[Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nPublicKey = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n", 3, "PublicKey: this [Peer] already has a PublicKey"),
        ("ListenPort = 1\n", 1, "'ListenPort' outside a section"),
        ("[Interface]\n[Interface]\n", 2, "second [Interface] section"),
        ("[Peers]\n", 1, "unknown section '[Peers]'"),
        ("[Interface]\nListenPort 51820\n", 2, "expected 'Key = Value'"),
    ])
    func rejectsBadInputNamingLineAndProblem(text: String, line: Int, problem: String) throws {
        let error = try #require(throws: ConfigFileError.self) { try ConfigFile.parse(text) }
        #expect(error.line == line)
        #expect(error.problem.hasPrefix(problem), "got: \(error.problem)")
        #expect(!error.description.contains("\n"))
    }

    @Test func renderMatchesWgShowconfLayoutAndParsesBack() throws {
        var d = Device(name: "wg0", privateKey: fixedKey(1), listenPort: 51820, fwmark: 0x2a)
        d.publicKey = fixedKey(1).publicKey()
        d.peers = [
            Peer(publicKey: fixedKey(2), presharedKey: fixedKey(3), endpoint: endpoint("[2001:db8::1]:51820"),
                 persistentKeepaliveInterval: 25, allowedIPs: [prefix("10.0.0.0/24"), prefix("fd00::/64")]),
            Peer(publicKey: fixedKey(4)),
        ]
        let text = ConfigFile.render(d)
        #expect(text == """
            [Interface]
            ListenPort = 51820
            FwMark = 0x2a
            PrivateKey = \(k1)

            [Peer]
            PublicKey = \(k2)
            PresharedKey = \(k3)
            AllowedIPs = 10.0.0.0/24, fd00::/64
            Endpoint = [2001:db8::1]:51820
            PersistentKeepalive = 25

            [Peer]
            PublicKey = \(k4)

            """)
        #expect(try ConfigFile.parse(text, deviceName: "wg0") == d)
    }

    @Test func parsesFiveThousandPeers() throws {
        var text = "[Interface]\nPrivateKey = \(k1)\n"
        var keys: [Key] = []
        for i in 0..<5000 {
            let k = Key.generatePreshared()
            keys.append(k)
            text += "[Peer]\nPublicKey = \(k.base64)\nAllowedIPs = 10.\(i / 256).\(i % 256).0/24, fd00::\(i)/128\n"
        }
        let d = try ConfigFile.parse(text)
        #expect(d.peers.map(\.publicKey) == keys)
        #expect(d.peers[4999].allowedIPs == [prefix("10.19.135.0/24"), prefix("fd00::4999/128")])
    }
}
