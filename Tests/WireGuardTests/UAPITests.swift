import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireGuard

@Suite struct UAPITests {
    let h1 = String(repeating: "01", count: 32)
    let h2 = String(repeating: "02", count: 32)
    let h3 = String(repeating: "03", count: 32)
    let h0 = String(repeating: "00", count: 32)

    func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func encodesEveryFieldInProtocolOrder() {
        let config = DeviceConfig(
            privateKey: fixedKey(1), listenPort: 51820, fwmark: 42, replacePeers: true,
            peers: [
                PeerConfig(publicKey: fixedKey(2), updateOnly: true, presharedKey: .zero,
                           endpoint: endpoint("[2001:db8::1]:51820"), persistentKeepaliveInterval: 0,
                           replaceAllowedIPs: true, allowedIPs: [prefix("10.0.0.0/24"), prefix("fd00::/64")]),
                PeerConfig(publicKey: fixedKey(3), remove: true, endpoint: endpoint("192.0.2.1:1")),
            ])
        #expect(text(UAPI.encodeSet(config)) == """
            set=1
            private_key=\(h1)
            listen_port=51820
            fwmark=42
            replace_peers=true
            public_key=\(h2)
            update_only=true
            preshared_key=\(h0)
            endpoint=[2001:db8::1]:51820
            persistent_keepalive_interval=0
            replace_allowed_ips=true
            allowed_ip=10.0.0.0/24
            allowed_ip=fd00::/64
            public_key=\(h3)
            remove=true


            """)
    }

    @Test func encodesOnlyWhatIsSet() {
        let config = DeviceConfig(peers: [PeerConfig(publicKey: fixedKey(2), endpoint: endpoint("192.0.2.1:51820"))])
        #expect(text(UAPI.encodeSet(config)) == "set=1\npublic_key=\(h2)\nendpoint=192.0.2.1:51820\n\n")
        #expect(text(UAPI.encodeSet(DeviceConfig())) == "set=1\n\n")
    }

    /// A reply captured from wireguard-go v0.0.20220316 (Debian 12), keys replaced.
    var capturedGet: String {
        """
        private_key=\(h1)
        listen_port=45958
        fwmark=4660
        public_key=\(h2)
        preshared_key=\(h3)
        protocol_version=1
        endpoint=[fd00::1]:51820
        last_handshake_time_sec=1700000000
        last_handshake_time_nsec=123
        tx_bytes=1000
        rx_bytes=2000
        persistent_keepalive_interval=25
        allowed_ip=10.0.0.0/24
        allowed_ip=10.1.0.1/32
        allowed_ip=fd00::/64
        public_key=\(String(repeating: "04", count: 32))
        preshared_key=\(h0)
        protocol_version=1
        last_handshake_time_sec=0
        last_handshake_time_nsec=0
        tx_bytes=0
        rx_bytes=0
        persistent_keepalive_interval=0
        errno=0


        """
    }

    @Test func decodesACapturedGetReply() throws {
        let d = try UAPI.decodeGet(Array(capturedGet.utf8), deviceName: "wg0")
        #expect(d.name == "wg0")
        #expect(d.privateKey == fixedKey(1))
        #expect(d.publicKey == fixedKey(1).publicKey())
        #expect(d.listenPort == 45958)
        #expect(d.fwmark == 4660)
        #expect(d.peers.count == 2)
        let p = d.peers[0]
        #expect(p.publicKey == fixedKey(2))
        #expect(p.presharedKey == fixedKey(3))
        #expect(p.endpoint == endpoint("[fd00::1]:51820"))
        #expect(p.lastHandshake?.seconds == 1_700_000_000)
        #expect(p.lastHandshake?.nanoseconds == 123)
        #expect(p.transmitBytes == 1000)
        #expect(p.receiveBytes == 2000)
        #expect(p.persistentKeepaliveInterval == 25)
        #expect(p.protocolVersion == 1)
        #expect(p.allowedIPs == [prefix("10.0.0.0/24"), prefix("10.1.0.1/32"), prefix("fd00::/64")])
        let q = d.peers[1]
        #expect(q.publicKey == fixedKey(4))
        #expect(q.presharedKey == nil)
        #expect(q.endpoint == nil)
        #expect(q.lastHandshake == nil)
        #expect(q.allowedIPs.isEmpty)
    }

    @Test func emptyDeviceHasNoKeys() throws {
        let d = try UAPI.decodeGet(Array("listen_port=0\nerrno=0\n\n".utf8), deviceName: "wg1")
        #expect(d == Device(name: "wg1"))
    }

    @Test func unknownKeysAreSkipped() throws {
        let d = try UAPI.decodeGet(Array("listen_port=5\nfuture_thing=1\nerrno=0\n\n".utf8), deviceName: "w")
        #expect(d.listenPort == 5)
    }

    @Test func nonZeroErrnoIsARejection() throws {
        let e = try #require(throws: WireGuardError.self) {
            try UAPI.decodeGet(Array("errno=-22\n\n".utf8), deviceName: "w")
        }
        guard case .rejected(let dev, let code, _) = e else { Issue.record("got \(e)"); return }
        #expect(dev == "w")
        #expect(code == 22)
        #expect(try UAPI.parseErrno(Array("errno=-22\n\n".utf8)) == -22)
        #expect(try UAPI.parseErrno(Array("errno=0\n\n".utf8)) == 0)
    }

    @Test(arguments: [
        "listen_port=0\n\n",                                  // no errno
        "listen_port=abc\nerrno=0\n\n",                       // bad number
        "listen_port=70000\nerrno=0\n\n",                     // out of range
        "private_key=zz\nerrno=0\n\n",                        // bad hex key
        "allowed_ip=10.0.0.0/24\nerrno=0\n\n",                // allowed_ip before any peer
        "public_key=\(String(repeating: "02", count: 32))\nallowed_ip=10.0.0.0/99\nerrno=0\n\n",
        "public_key=\(String(repeating: "02", count: 32))\nendpoint=nowhere\nerrno=0\n\n",
        "garbage\nerrno=0\n\n",                               // no '='
        "errno=0",                                            // cut off
    ])
    func malformedRepliesAreProtocolErrors(reply: String) {
        let e = #expect(throws: WireGuardError.self) { try UAPI.decodeGet(Array(reply.utf8), deviceName: "w") }
        if case .protocolError = e {} else { Issue.record("expected protocolError, got \(String(describing: e))") }
    }

    /// A private or preshared key line one digit short is still most of the secret: the error names
    /// the line and its length, never the digits.
    @Test func aDamagedKeyLineIsNotQuotedInTheError() {
        let secret = String(repeating: "7c", count: 31) + "7"
        for reply in ["private_key=\(secret)\nerrno=0\n\n",
                      "public_key=\(String(repeating: "02", count: 32))\npreshared_key=\(secret)\nerrno=0\n\n"] {
            let e = #expect(throws: WireGuardError.self) { try UAPI.decodeGet(Array(reply.utf8), deviceName: "w") }
            let text = e.map { "\($0)" } ?? ""
            #expect(text.contains("_key=(secret, 63 bytes)"), "\(text)")
            #expect(!text.contains("7c7c"), "\(text)")
        }
    }

    @Test func decodeOfEncodeRoundTripsADevice() throws {
        // A device described as a full config, served back like a get reply, reads as the same device.
        var peers: [Peer] = []
        for i in 0..<100 {
            let psk: Key? = i % 2 == 0 ? Key.generatePreshared() : nil
            let ep: Endpoint = i % 3 == 0 ? endpoint("[2001:db8::\(i)]:\(1000 + i)") : endpoint("192.0.2.\(i):1")
            let ips: [IPPrefix] = [prefix("10.\(i).0.0/16"), prefix("fd00:\(i)::/32")]
            peers.append(Peer(publicKey: Key.generatePreshared(), presharedKey: psk, endpoint: ep,
                              persistentKeepaliveInterval: UInt16(i), allowedIPs: ips))
        }
        let d = Device(name: "wg0", privateKey: fixedKey(1), publicKey: fixedKey(1).publicKey(), listenPort: 9, fwmark: 3, peers: peers)
        var reply = "private_key=\(h1)\nlisten_port=9\nfwmark=3\n"
        for p in peers {
            reply += "public_key=\(p.publicKey.hex)\npreshared_key=\((p.presharedKey ?? .zero).hex)\n"
            reply += "endpoint=\(p.endpoint!)\npersistent_keepalive_interval=\(p.persistentKeepaliveInterval)\n"
            reply += p.allowedIPs.map { "allowed_ip=\($0)\n" }.joined()
        }
        reply += "errno=0\n\n"
        #expect(try UAPI.decodeGet(Array(reply.utf8), deviceName: "wg0") == d)
    }
}
