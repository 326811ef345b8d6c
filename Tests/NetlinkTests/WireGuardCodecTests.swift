import CMnl
import IPNetwork
import Netlink
import Testing
import WireGuard
import WireGuardKernel
import WireMeshCrypto

private let family: UInt16 = 0x15

private func key(_ byte: UInt8) -> Key { try! Key(bytes: [UInt8](repeating: byte, count: 32)) }

/// A distinct key per index (first two bytes carry it).
private func key(index: Int) -> Key {
    var b = [UInt8](repeating: 0xA5, count: 32)
    b[0] = UInt8(index & 0xFF)
    b[1] = UInt8(index >> 8)
    return try! Key(bytes: b)
}

private func prefixes(_ n: Int, v6Every: Int = 0) -> [IPPrefix] {
    (0..<n).map { i in
        if v6Every > 0 && i % v6Every == 0 {
            return try! IPPrefix(address: .v6(0xfd00_0000_0000_0000 | UInt64(i), 0), length: 64)
        }
        return try! IPPrefix(address: .v4(0x0A00_0000 | UInt32(i) << 8), length: 24)
    }
}

/// PEERS (8) → peer (0) → ALLOWEDIPS (9) → allowed IP (0).
private func wgNestPaths(_ path: [UInt16]) -> Bool {
    path == [8] || path == [8, 0] || path == [8, 0, 9] || path == [8, 0, 9, 0]
}

/// Structural facts about one SET message.
private struct SetMessage {
    var length: Int
    var type: UInt16
    var flags: UInt16
    var top: [AttrNode]
    var peers: [AttrNode] { top.first { $0.type == 8 }?.children ?? [] }
    func has(_ t: UInt16) -> Bool { top.contains { $0.type == t } }

    init(_ m: [UInt8]) {
        length = m.count
        type = UInt16(m[4]) | UInt16(m[5]) << 8
        flags = UInt16(m[6]) | UInt16(m[7]) << 8
        top = attributes(of: m, extra: 4, isNest: wgNestPaths)
    }
}

private func peerKey(_ p: AttrNode) -> [UInt8]? { p.children.first { $0.type == 1 }?.payload }
private func peerFlags(_ p: AttrNode) -> UInt32? {
    p.children.first { $0.type == 3 }.map { $0.payload.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) } }
}
private func allowedCount(_ p: AttrNode) -> Int { p.children.first { $0.type == 9 }?.children.count ?? 0 }

/// Checks the chunking rules shared by every SET: size, IFNAME everywhere, device attributes only
/// first, NLA_F_NESTED on every nest, peer attributes only in a peer's first fragment.
private func checkChunkingRules(
    _ messages: [[UInt8]], config: DeviceConfig, sourceLocation: SourceLocation = #_sourceLocation
) {
    var seenPeers = Set<[UInt8]>()
    var lastKey: [UInt8]?
    for (i, raw) in messages.enumerated() {
        let m = SetMessage(raw)
        #expect(m.length <= 4096, sourceLocation: sourceLocation)
        #expect(m.type == family && m.flags == 0x05, sourceLocation: sourceLocation)
        #expect(raw[16] == 1 && raw[17] == 1, "genl cmd SET, version 1", sourceLocation: sourceLocation)
        let names = m.top.filter { $0.type == 2 }
        #expect(names.count == 1 && names[0].payload == Array("wg7".utf8) + [0], sourceLocation: sourceLocation)
        for t: UInt16 in [3, 5, 6, 7] where i > 0 {
            #expect(!m.has(t), "device attribute \(t) repeated in message \(i)", sourceLocation: sourceLocation)
        }
        func checkNested(_ n: AttrNode, path: [UInt16]) {
            if wgNestPaths(path) {
                #expect(n.nestedFlag, "nest \(path) without NLA_F_NESTED", sourceLocation: sourceLocation)
            }
            for c in n.children { checkNested(c, path: path + [c.type]) }
        }
        for n in m.top { checkNested(n, path: [n.type]) }
        for (j, p) in m.peers.enumerated() {
            let k = peerKey(p)!
            let continuation = seenPeers.contains(k)
            if continuation {
                // Only the peer that was cut at the end of the previous message may continue.
                #expect(j == 0 && lastKey == k, sourceLocation: sourceLocation)
                #expect(
                    p.children.allSatisfy { $0.type == 1 || $0.type == 9 || ($0.type == 3 && peerFlags(p) == 4) },
                    "continuation carries only key, allowed IPs (and UPDATE_ONLY)", sourceLocation: sourceLocation)
            }
            seenPeers.insert(k)
            lastKey = k
        }
    }
    do {
        let first = SetMessage(messages[0])
        #expect(first.has(3) == (config.privateKey != nil), sourceLocation: sourceLocation)
        #expect(first.has(5) == config.replacePeers, sourceLocation: sourceLocation)
    }
}

/// Every allowed IP of every peer, in the order the messages carry them.
private func carriedAllowedIPs(_ messages: [[UInt8]]) -> [[UInt8]: Int] {
    var counts: [[UInt8]: Int] = [:]
    for raw in messages { for p in SetMessage(raw).peers { counts[peerKey(p)!, default: 0] += allowedCount(p) } }
    return counts
}

/// Turns SET messages into what a GET dump looks like (same layout, GET command), to check that
/// the decoder reads back what the encoder wrote.
private func asDump(_ messages: [[UInt8]]) -> [[UInt8]] {
    messages.map {
        var m = $0
        m[16] = UInt8(WG_CMD_GET_DEVICE.rawValue)
        return m
    }
}

@Suite struct WireGuardCodecTests {
    @Test func singlePeerSetGolden() throws {
        let config = DeviceConfig(
            privateKey: key(0x01), listenPort: 51820, fwmark: 0x42, replacePeers: true,
            peers: [
                PeerConfig(
                    publicKey: key(0x02), presharedKey: key(0x03),
                    endpoint: try Endpoint("192.0.2.1:51820"), persistentKeepaliveInterval: 25,
                    replaceAllowedIPs: true, allowedIPs: [try IPPrefix("10.0.0.0/24")])
            ])
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg0", config: config)
        let k = { (b: String) in String(repeating: b, count: 32) }
        let expected = bytes(
            """
            ec000000 1500 0500 00000000 00000000
            01010000
            08000200 77673000
            24000300 \(k("01"))
            06000600 6cca0000
            08000700 42000000
            08000500 01000000
            94000880
              90000080
                24000100 \(k("02"))
                08000300 02000000
                24000200 \(k("03"))
                14000400 0200ca6c c0000201 00000000 00000000
                06000500 19000000
                20000980
                  1c000080 06000100 02000000 08000200 0a000000 05000300 18000000
            """)
        #expect(messages.count == 1)
        #expect(hex(messages[0]) == hex(expected))
    }

    @Test func removalAndIPv6EndpointEncoding() throws {
        let config = DeviceConfig(peers: [
            PeerConfig(publicKey: key(0x04), remove: true, allowedIPs: [try IPPrefix("10.0.0.0/8")]),
            PeerConfig(publicKey: key(0x05), endpoint: try Endpoint("[2001:db8::1]:51820")),
        ])
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg0", config: config)
        #expect(messages.count == 1)
        let m = SetMessage(messages[0])
        #expect(!m.has(3) && !m.has(5) && !m.has(6) && !m.has(7))
        let removed = m.peers[0]
        #expect(peerFlags(removed) == 1)  // REMOVE_ME
        #expect(removed.children.map(\.type) == [1, 3])  // nothing else for a removed peer
        let v6 = m.peers[1].children.first { $0.type == 4 }!.payload
        #expect(hex(v6) == hex(bytes("0a00ca6c 00000000 20010db8000000000000000000000001 00000000")))
        #expect(peerFlags(m.peers[1]) == nil)
    }

    @Test func onePeerWith300AllowedIPsSplitsAcrossMessages() throws {
        let peer = PeerConfig(
            publicKey: key(0x09), presharedKey: key(0x0A), endpoint: try Endpoint("192.0.2.9:1"),
            persistentKeepaliveInterval: 5, replaceAllowedIPs: true,
            allowedIPs: prefixes(300, v6Every: 7))
        let config = DeviceConfig(privateKey: key(0x08), listenPort: 1, replacePeers: true, peers: [peer])
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg7", config: config)
        #expect(messages.count >= 3)
        checkChunkingRules(messages, config: config)
        #expect(carriedAllowedIPs(messages)[key(0x09).bytes] == 300)
        // Flags, PSK, endpoint, keepalive only in the first fragment.
        for (i, raw) in messages.enumerated() {
            let p = SetMessage(raw).peers
            #expect(p.count == 1)
            let types = Set(p[0].children.map(\.type))
            #expect(types.isSuperset(of: [2, 3, 4, 5]) == (i == 0))
            #expect(types.isDisjoint(with: [2, 3, 4, 5]) == (i > 0))
        }
        // Messages are filled: all but the last within one allowed IP of the limit.
        for raw in messages.dropLast() { #expect(raw.count > 4096 - 48) }
        let decoded = try WireGuardNetlinkCodec.decodeDevice(asDump(messages))
        #expect(decoded.peers.count == 1)
        #expect(decoded.peers[0].allowedIPs == peer.allowedIPs)
        #expect(decoded.peers[0].presharedKey == key(0x0A))
        #expect(decoded.peers[0].persistentKeepaliveInterval == 5)
    }

    @Test func twoHundredPeersSplitAcrossMessages() throws {
        let peers = (0..<200).map { i in
            PeerConfig(
                publicKey: key(index: i), endpoint: Endpoint(address: .v4(0xC000_0200 | UInt32(i)), port: 51820),
                persistentKeepaliveInterval: 25,
                allowedIPs: [
                    try! IPPrefix(address: .v4(0x0AF4_0000 | UInt32(i) << 8), length: 24),
                    try! IPPrefix(address: .v6(0xfd00_0000_0000_0000 | UInt64(i), 0), length: 64),
                ])
        }
        let config = DeviceConfig(privateKey: key(0x01), listenPort: 51820, peers: peers)
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg7", config: config)
        #expect(messages.count > 1)
        checkChunkingRules(messages, config: config)
        #expect(messages.dropFirst().allSatisfy { !SetMessage($0).has(3) && !SetMessage($0).has(6) })
        let counts = carriedAllowedIPs(messages)
        #expect(counts.count == 200 && counts.values.allSatisfy { $0 == 2 })
        let decoded = try WireGuardNetlinkCodec.decodeDevice(asDump(messages))
        #expect(decoded.peers.map(\.publicKey) == peers.map(\.publicKey))
        #expect(decoded.peers.map(\.allowedIPs) == peers.map(\.allowedIPs))
        #expect(decoded.peers.map(\.endpoint) == peers.map(\.endpoint))
        #expect(decoded.listenPort == 51820 && decoded.privateKey == key(0x01))
    }

    @Test func thousandPeersTimesThreeAllowedIPsRoundTrip() throws {
        let peers = (0..<1000).map { i in
            PeerConfig(
                publicKey: key(index: i), updateOnly: i % 97 == 0, replaceAllowedIPs: true,
                allowedIPs: prefixes(3).map { try! IPPrefix(address: $0.address.adding(UInt64(i) << 16), length: 24) })
        }
        let config = DeviceConfig(replacePeers: true, peers: peers)
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg7", config: config)
        checkChunkingRules(messages, config: config)
        let decoded = try WireGuardNetlinkCodec.decodeDevice(asDump(messages))
        #expect(decoded.peers.count == 1000)
        #expect(decoded.peers.map(\.allowedIPs) == peers.map(\.allowedIPs))
        // UPDATE_ONLY (4) travels with every fragment of the peers that asked for it, nothing else does.
        for raw in messages {
            for p in SetMessage(raw).peers {
                let idx = Int(peerKey(p)![0]) | Int(peerKey(p)![1]) << 8
                #expect(((peerFlags(p) ?? 0) & 4 != 0) == (idx % 97 == 0))
            }
        }
    }

    @Test func peerWithManyAllowedIPsAfterOthersContinuesInNextMessage() throws {
        // Small peers fill most of the first message, then a big one must be cut and continued.
        var peers = (0..<20).map { PeerConfig(publicKey: key(index: $0), allowedIPs: prefixes(1)) }
        peers.append(
            PeerConfig(publicKey: key(0xEE), presharedKey: .zero, replaceAllowedIPs: true, allowedIPs: prefixes(500)))
        peers.append(PeerConfig(publicKey: key(0xEF), allowedIPs: prefixes(2)))
        let config = DeviceConfig(peers: peers)
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg7", config: config)
        checkChunkingRules(messages, config: config)
        let first = SetMessage(messages[0]).peers
        #expect(first.count == 21)
        #expect(peerFlags(first[20]) == 2)  // REPLACE_ALLOWEDIPS only here
        #expect(allowedCount(first[20]) > 0)
        let decoded = try WireGuardNetlinkCodec.decodeDevice(asDump(messages))
        #expect(decoded.peers.count == 22)
        #expect(decoded.peers[20].allowedIPs.count == 500)
        #expect(decoded.peers[20].presharedKey == nil)  // zero PSK reads back as none
        #expect(decoded.peers[21].allowedIPs == prefixes(2))
    }

    @Test func emptyConfigStillNamesTheDevice() {
        let messages = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wg0", config: DeviceConfig())
        #expect(messages.count == 1)
        #expect(hex(messages[0]) == hex(bytes("1c000000 1500 0500 00000000 00000000 01010000 08000200 77673000")))
    }

    @Test func getRequestGolden() {
        let m = WireGuardNetlinkCodec.getDeviceRequest(family: family, device: "wg0")
        #expect(hex(m) == hex(bytes("1c000000 1500 0103 00000000 00000000 00010000 08000200 77673000")))
    }

    /// A GET dump the way the kernel writes it: device attributes in the first message only, a peer
    /// cut after two allowed IPs and continued (public key + allowed IPs) in the second message.
    @Test func decodesMultiMessageDumpWithSplitPeer() throws {
        func allowed(_ b: NetlinkMessageBuilder, _ list: [IPPrefix]) {
            let n = b.beginNest(9)!
            for p in list {
                let ip = b.beginNest(0)!
                b.putU16(1, UInt16(p.address.family))
                b.put(2, bytes: p.address.bytes)
                b.putU8(3, UInt8(p.length))
                b.endNest(ip)
            }
            b.endNest(n)
        }
        let m1 = GenericNetlink.message(family: family, command: 0, version: 1, flags: 2)
        m1.putU32(1, 12)  // IFINDEX
        m1.putString(2, "wg0")
        key(0x11).withUnsafeBytes { _ = m1.put(3, $0) }  // private key
        key(0x12).withUnsafeBytes { _ = m1.put(4, $0) }  // public key
        m1.putU16(6, 51820)
        m1.putU32(7, 0)
        var peers = m1.beginNest(8)!
        var p = m1.beginNest(0)!
        key(0x21).withUnsafeBytes { _ = m1.put(1, $0) }
        m1.put(2, bytes: [UInt8](repeating: 0, count: 32))  // no PSK: all zeros
        m1.put(6, value: (Int64(1_700_000_000), Int64(123)))
        m1.putU16(5, 25)
        m1.putU64(7, 1000)  // rx
        m1.putU64(8, 2000)  // tx
        m1.putU32(10, 1)
        var sin6 = bytes("0a00ca6c 00000000 20010db8000000000000000000000002 00000000")
        m1.put(4, bytes: sin6)
        allowed(m1, [try IPPrefix("10.1.0.0/24"), try IPPrefix("fd01::/64")])
        m1.endNest(p)
        m1.endNest(peers)
        let m2 = GenericNetlink.message(family: family, command: 0, version: 1, flags: 2)
        peers = m2.beginNest(8)!
        p = m2.beginNest(0)!
        key(0x21).withUnsafeBytes { _ = m2.put(1, $0) }
        allowed(m2, [try IPPrefix("10.2.0.0/24")])
        m2.endNest(p)
        p = m2.beginNest(0)!
        key(0x22).withUnsafeBytes { _ = m2.put(1, $0) }
        key(0x33).withUnsafeBytes { _ = m2.put(2, $0) }
        m2.put(6, value: (Int64(0), Int64(0)))
        sin6 = bytes("0200ca6c c6336401 00000000 00000000")
        m2.put(4, bytes: sin6)
        m2.endNest(p)
        m2.endNest(peers)

        let d = try WireGuardNetlinkCodec.decodeDevice([m1.bytes, m2.bytes])
        #expect(d.name == "wg0" && d.listenPort == 51820 && d.fwmark == 0)
        #expect(d.privateKey == key(0x11) && d.publicKey == key(0x12))
        #expect(d.peers.count == 2)
        let a = d.peers[0]
        #expect(a.publicKey == key(0x21) && a.presharedKey == nil)
        #expect(a.allowedIPs == [try IPPrefix("10.1.0.0/24"), try IPPrefix("fd01::/64"), try IPPrefix("10.2.0.0/24")])
        #expect(a.lastHandshake?.seconds == 1_700_000_000 && a.lastHandshake?.nanoseconds == 123)
        #expect(a.receiveBytes == 1000 && a.transmitBytes == 2000 && a.protocolVersion == 1)
        #expect(a.persistentKeepaliveInterval == 25)
        #expect(a.endpoint == (try Endpoint("[2001:db8::2]:51820")))
        let b = d.peers[1]
        #expect(b.publicKey == key(0x22) && b.presharedKey == key(0x33) && b.lastHandshake == nil)
        #expect(b.endpoint == (try Endpoint("198.51.100.1:51820")))
        #expect(b.allowedIPs.isEmpty)
    }

    /// Fuzzing (netlink-wireguard): an endpoint of 2 or 3 bytes read the port past the payload.
    @Test func endpointShorterThanFamilyAndPortIsIgnored() throws {
        for size in 0...5 {
            let m = GenericNetlink.message(family: family, command: 0, version: 1, flags: 2)
            let peers = m.beginNest(8)!
            let p = m.beginNest(0)!
            key(0x21).withUnsafeBytes { _ = m.put(1, $0) }
            m.put(4, bytes: Array([0x02, 0x00, 0xca, 0x6c, 0xc6].prefix(size)))  // AF_INET, port 51820, ...
            m.endNest(p)
            m.endNest(peers)
            let d = try WireGuardNetlinkCodec.decodeDevice([m.bytes])
            #expect(d.peers.map(\.publicKey) == [key(0x21)])
            #expect(d.peers.first?.endpoint == nil)
        }
    }

    @Test func malformedPeerIsAProtocolError() {
        let m = GenericNetlink.message(family: family, command: 0, version: 1, flags: 2)
        let peers = m.beginNest(8)!
        let p = m.beginNest(0)!
        m.putU16(5, 25)  // keepalive but no public key
        m.endNest(p)
        m.endNest(peers)
        #expect(throws: WireGuardError.self) { try WireGuardNetlinkCodec.decodeDevice([m.bytes]) }
    }
}
