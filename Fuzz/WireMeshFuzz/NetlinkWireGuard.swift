import CMnl
import IPNetwork
import Netlink
import WireGuard
import WireGuardKernel
import WireMeshCrypto

/// The kernel's WG_CMD_GET_DEVICE dump (one or more genetlink messages, peers possibly split across
/// them) decoded into a `Device`, then shown the ways `wiremesh device show` shows it.
enum NetlinkWireGuardTarget {
    static let target = FuzzTarget(
        name: "netlink-wireguard",
        summary: "WireGuard genetlink GET replies: WireGuardNetlinkCodec.decodeDevice (+ DeviceFormat)",
        run: run, seeds: seeds)

    static let family: UInt16 = 0x1c

    static func run(_ data: [UInt8]) {
        let messages = splitNetlinkMessages(data)
        let device: Device
        do { device = try WireGuardNetlinkCodec.decodeDevice(messages) } catch let e as WireGuardError {
            _ = e.description
            return
        } catch {
            fatalError("decodeDevice threw \(type(of: error)), not WireGuardError")
        }
        _ = DeviceFormat.dump(device)
        _ = DeviceFormat.human(device, now: 1_800_000_000)
        _ = DeviceFormat.json(device)

        // Encoding what was read as a SET (chunked like wireguard-tools) and decoding those messages
        // gives the same configuration back: the split and the join of peers agree.
        let config = DeviceConfig(
            privateKey: device.privateKey, listenPort: device.listenPort, fwmark: device.fwmark,
            peers: device.peers.map {
                PeerConfig(publicKey: $0.publicKey, presharedKey: $0.presharedKey, endpoint: $0.endpoint,
                           persistentKeepaliveInterval: $0.persistentKeepaliveInterval, allowedIPs: $0.allowedIPs)
            })
        let set = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wm0", config: config)
        var expected = Device(name: "wm0", privateKey: device.privateKey, listenPort: device.listenPort, fwmark: device.fwmark)
        expected.peers = device.peers.map {
            Peer(publicKey: $0.publicKey, presharedKey: $0.presharedKey, endpoint: $0.endpoint,
                 persistentKeepaliveInterval: $0.persistentKeepaliveInterval, allowedIPs: $0.allowedIPs)
        }
        let again = try? WireGuardNetlinkCodec.decodeDevice(set)
        require(again == expected, "device re-encoded in \(set.count) SET messages decodes differently")
        require(set.allSatisfy { $0.count <= WireGuardNetlinkCodec.maxMessageSize }, "SET message over one page")
    }

    static func key(_ byte: UInt8) -> Key { try! Key(bytes: [UInt8](repeating: byte, count: 32)) }

    /// A GET reply message as the kernel sends it: device attributes, then peers with the read-only
    /// attributes (handshake time, counters, protocol version) SET never carries.
    static func getReply(_ device: Device) -> [UInt8] {
        func t<E: RawRepresentable>(_ e: E) -> UInt16 where E.RawValue: BinaryInteger { UInt16(e.rawValue) }
        let b = GenericNetlink.message(
            family: family, command: UInt8(WG_CMD_GET_DEVICE.rawValue), version: 1, flags: UInt16(NLM_F_MULTI))
        b.putU32(t(WGDEVICE_A_IFINDEX), 9)
        b.putString(t(WGDEVICE_A_IFNAME), device.name)
        if let k = device.privateKey { _ = k.withUnsafeBytes { b.put(t(WGDEVICE_A_PRIVATE_KEY), $0) } }
        if let k = device.publicKey { _ = k.withUnsafeBytes { b.put(t(WGDEVICE_A_PUBLIC_KEY), $0) } }
        b.putU16(t(WGDEVICE_A_LISTEN_PORT), device.listenPort)
        b.putU32(t(WGDEVICE_A_FWMARK), device.fwmark)
        let peers = b.beginNest(t(WGDEVICE_A_PEERS))!
        for p in device.peers {
            let nest = b.beginNest(0)!
            _ = p.publicKey.withUnsafeBytes { b.put(t(WGPEER_A_PUBLIC_KEY), $0) }
            _ = (p.presharedKey ?? .zero).withUnsafeBytes { b.put(t(WGPEER_A_PRESHARED_KEY), $0) }
            let hs = p.lastHandshake ?? (0, 0)
            b.put(t(WGPEER_A_LAST_HANDSHAKE_TIME), value: (hs.seconds, hs.nanoseconds))
            b.putU16(t(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL), p.persistentKeepaliveInterval)
            b.putU64(t(WGPEER_A_RX_BYTES), p.receiveBytes)
            b.putU64(t(WGPEER_A_TX_BYTES), p.transmitBytes)
            b.putU32(t(WGPEER_A_PROTOCOL_VERSION), p.protocolVersion)
            let ips = b.beginNest(t(WGPEER_A_ALLOWEDIPS))!
            for ip in p.allowedIPs {
                let n = b.beginNest(0)!
                switch ip.address {
                case .v4(let a):
                    b.putU16(t(WGALLOWEDIP_A_FAMILY), UInt16(AF_INET))
                    b.put(t(WGALLOWEDIP_A_IPADDR), value: a.bigEndian)
                case .v6(let hi, let lo):
                    b.putU16(t(WGALLOWEDIP_A_FAMILY), UInt16(AF_INET6))
                    b.put(t(WGALLOWEDIP_A_IPADDR), value: (hi.bigEndian, lo.bigEndian))
                }
                b.putU8(t(WGALLOWEDIP_A_CIDR_MASK), UInt8(ip.length))
                b.endNest(n)
            }
            b.endNest(ips)
            b.endNest(nest)
        }
        b.endNest(peers)
        return b.bytes
    }

    static func seeds() throws -> [[UInt8]] {
        let peers = [
            Peer(publicKey: key(2), presharedKey: key(3), endpoint: try Endpoint("192.0.2.1:51820"),
                 persistentKeepaliveInterval: 25, allowedIPs: [try IPPrefix("10.244.1.0/24"), try IPPrefix("10.245.0.1/32")],
                 lastHandshake: (1_700_000_000, 123), receiveBytes: 2000, transmitBytes: 1000, protocolVersion: 1),
            Peer(publicKey: key(4), endpoint: try Endpoint("[fd00::1]:51820"), allowedIPs: [try IPPrefix("fd00:1::/64")]),
        ]
        let device = Device(name: "wm0", privateKey: key(1), publicKey: key(1).publicKey(), listenPort: 51820,
                            fwmark: 0x1234, peers: peers)
        let done = NetlinkRouteTarget.doneMessage(code: 0)
        // A peer with more allowed IPs than one small message holds: the SET continues it.
        let many = (0..<40).map { try! IPPrefix("10.\($0).0.0/16") }
        let big = DeviceConfig(privateKey: key(1), listenPort: 51820, peers: [
            PeerConfig(publicKey: key(5), endpoint: try Endpoint("198.51.100.7:4000"), persistentKeepaliveInterval: 0, allowedIPs: many),
            PeerConfig(publicKey: key(6), allowedIPs: [try IPPrefix("10.250.0.0/24")]),
        ])
        let split = WireGuardNetlinkCodec.setDeviceMessages(family: family, device: "wm0", config: big, maxMessageSize: 512)
        return [
            getReply(device) + done,
            getReply(Device(name: "wm1")) + done,
            split.reduce([], +),
        ]
    }
}
