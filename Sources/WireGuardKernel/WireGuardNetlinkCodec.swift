import CMnl
import IPNetwork
import Netlink
import WireGuard
import WireMeshCrypto

#if canImport(Glibc)
    import Glibc
#endif

/// Pure encoder/decoder for the kernel's `wireguard` generic netlink family (uapi/linux/wireguard.h).
///
/// SET is split the way wireguard-tools splits it (src/ipc-linux.h), because the kernel takes at
/// most one page per request: every message ≤ `maxMessageSize` bytes and names the device; device
/// attributes and REPLACE_PEERS travel only in the first message; a peer's flags, preshared key,
/// endpoint and keepalive only in its first fragment; when a peer's allowed IPs do not fit, the
/// next message repeats the peer with just its public key and carries on with the remaining ones.
/// Every nest carries NLA_F_NESTED.
public enum WireGuardNetlinkCodec {
    /// The generic netlink family name.
    public static let familyName = WG_GENL_NAME
    /// Family version spoken.
    public static let familyVersion = UInt8(WG_GENL_VERSION)
    /// Largest SET message: one page, like wireguard-tools.
    public static let maxMessageSize = 4096

    private static func t<E: RawRepresentable>(_ e: E) -> UInt16 where E.RawValue: BinaryInteger { UInt16(e.rawValue) }

    /// The WG_CMD_SET_DEVICE messages applying `config` to device `name`, in sending order.
    /// Always at least one message (an empty config still checks the device exists).
    public static func setDeviceMessages(
        family: UInt16, device name: String, config: DeviceConfig,
        maxMessageSize: Int = maxMessageSize
    ) -> [[UInt8]] {
        var messages: [[UInt8]] = []
        let peers = config.peers
        var peerIndex = 0
        // Position inside peers[peerIndex]: whether its first fragment is out, next allowed IP.
        var peerStarted = false
        var allowedIndex = 0
        var first = true
        repeat {
            let b = GenericNetlink.message(
                family: family, command: UInt8(WG_CMD_SET_DEVICE.rawValue),
                version: familyVersion, flags: UInt16(NLM_F_REQUEST | NLM_F_ACK),
                capacity: maxMessageSize)
            b.putString(t(WGDEVICE_A_IFNAME), name)
            if first {
                if let key = config.privateKey { _ = key.withUnsafeBytes { b.put(t(WGDEVICE_A_PRIVATE_KEY), $0) } }
                if let port = config.listenPort { b.putU16(t(WGDEVICE_A_LISTEN_PORT), port) }
                if let mark = config.fwmark { b.putU32(t(WGDEVICE_A_FWMARK), mark) }
                if config.replacePeers { b.putU32(t(WGDEVICE_A_FLAGS), WGDEVICE_F_REPLACE_PEERS.rawValue) }
                first = false
            }
            if peerIndex < peers.count, let peersNest = b.beginNest(t(WGDEVICE_A_PEERS)) {
                peerLoop: while peerIndex < peers.count {
                    let peer = peers[peerIndex]
                    guard let peerNest = b.beginNest(0) else { break }
                    var fits = peer.publicKey.withUnsafeBytes { b.put(t(WGPEER_A_PUBLIC_KEY), $0) }
                    var flags: UInt32 = 0
                    if !peerStarted {
                        if peer.remove { flags |= WGPEER_F_REMOVE_ME.rawValue }
                        if peer.replaceAllowedIPs && !peer.remove { flags |= WGPEER_F_REPLACE_ALLOWEDIPS.rawValue }
                    }
                    // UPDATE_ONLY goes in every fragment: a continuation without it would create the
                    // peer the first fragment deliberately skipped.
                    if peer.updateOnly { flags |= WGPEER_F_UPDATE_ONLY.rawValue }
                    if fits && flags != 0 { fits = b.putU32(t(WGPEER_A_FLAGS), flags) }
                    if fits && !peerStarted && !peer.remove {
                        if let psk = peer.presharedKey {
                            fits = psk.withUnsafeBytes { b.put(t(WGPEER_A_PRESHARED_KEY), $0) }
                        }
                        if fits, let endpoint = peer.endpoint { fits = putEndpoint(b, endpoint) }
                        if fits, let keepalive = peer.persistentKeepaliveInterval {
                            fits = b.putU16(t(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL), keepalive)
                        }
                    }
                    guard fits else {
                        // Not even the peer's own attributes fit: the whole fragment moves on.
                        b.cancelNest(peerNest)
                        break
                    }
                    peerStarted = true
                    let allowed = peer.remove ? [] : peer.allowedIPs
                    if allowedIndex < allowed.count, let listNest = b.beginNest(t(WGPEER_A_ALLOWEDIPS)) {
                        while allowedIndex < allowed.count {
                            guard let ipNest = b.beginNest(0) else { break }
                            guard putAllowedIP(b, allowed[allowedIndex]) else {
                                b.cancelNest(ipNest)
                                break
                            }
                            b.endNest(ipNest)
                            allowedIndex += 1
                        }
                        if b.isEmpty(listNest) { b.cancelNest(listNest) } else { b.endNest(listNest) }
                    }
                    b.endNest(peerNest)
                    if allowedIndex < allowed.count { break peerLoop }
                    peerIndex += 1
                    peerStarted = false
                    allowedIndex = 0
                }
                if b.isEmpty(peersNest) { b.cancelNest(peersNest) } else { b.endNest(peersNest) }
            }
            messages.append(b.bytes)
        } while peerIndex < peers.count
        return messages
    }

    private static func putAllowedIP(_ b: NetlinkMessageBuilder, _ prefix: IPPrefix) -> Bool {
        switch prefix.address {
        case .v4(let a):
            return b.putU16(t(WGALLOWEDIP_A_FAMILY), UInt16(AF_INET))
                && b.put(t(WGALLOWEDIP_A_IPADDR), value: a.bigEndian)
                && b.putU8(t(WGALLOWEDIP_A_CIDR_MASK), UInt8(prefix.length))
        case .v6(let hi, let lo):
            return b.putU16(t(WGALLOWEDIP_A_FAMILY), UInt16(AF_INET6))
                && b.put(t(WGALLOWEDIP_A_IPADDR), value: (hi.bigEndian, lo.bigEndian))
                && b.putU8(t(WGALLOWEDIP_A_CIDR_MASK), UInt8(prefix.length))
        }
    }

    private static func putEndpoint(_ b: NetlinkMessageBuilder, _ endpoint: Endpoint) -> Bool {
        switch endpoint.address {
        case .v4(let a):
            var sin = sockaddr_in()
            sin.sin_family = sa_family_t(AF_INET)
            sin.sin_port = endpoint.port.bigEndian
            sin.sin_addr.s_addr = a.bigEndian
            return b.put(t(WGPEER_A_ENDPOINT), value: sin)
        case .v6(let hi, let lo):
            var sin6 = sockaddr_in6()
            sin6.sin6_family = sa_family_t(AF_INET6)
            sin6.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &sin6.sin6_addr) { dst in
                withUnsafeBytes(of: (hi.bigEndian, lo.bigEndian)) { dst.copyMemory(from: $0) }
            }
            return b.put(t(WGPEER_A_ENDPOINT), value: sin6)
        }
    }

    /// The WG_CMD_GET_DEVICE dump request for device `name`.
    public static func getDeviceRequest(family: UInt16, device name: String) -> [UInt8] {
        let b = GenericNetlink.message(
            family: family, command: UInt8(WG_CMD_GET_DEVICE.rawValue),
            version: familyVersion, flags: UInt16(NLM_F_REQUEST | NLM_F_DUMP))
        b.putString(t(WGDEVICE_A_IFNAME), name)
        return b.bytes
    }

    /// Decodes the messages of a GET dump into one device. The kernel splits a device over several
    /// messages and may split one peer too (the continuation repeats the public key and carries only
    /// more allowed IPs); fragments of the same peer are joined.
    public static func decodeDevice(_ messages: [[UInt8]]) throws -> Device {
        var device = Device(name: "")
        var failure: String?
        for message in messages {
            message.withUnsafeBytes { raw in
                guard failure == nil, let view = NetlinkMessageView(raw), view.type >= UInt16(NLMSG_MIN_TYPE) else {
                    return
                }
                view.forEachAttribute(afterExtraHeader: MemoryLayout<genlmsghdr>.size) { attr in
                    switch attr.type {
                    case t(WGDEVICE_A_IFNAME): device.name = attr.string
                    case t(WGDEVICE_A_PRIVATE_KEY): device.privateKey = nonZeroKey(attr.payload)
                    case t(WGDEVICE_A_PUBLIC_KEY): device.publicKey = nonZeroKey(attr.payload)
                    case t(WGDEVICE_A_LISTEN_PORT): device.listenPort = attr.u16 ?? 0
                    case t(WGDEVICE_A_FWMARK): device.fwmark = attr.u32 ?? 0
                    case t(WGDEVICE_A_PEERS):
                        attr.forEachNested { peerAttr in
                            guard failure == nil else { return }
                            do {
                                let (peer, isContinuation) = try decodePeer(peerAttr)
                                if let last = device.peers.indices.last, device.peers[last].publicKey == peer.publicKey
                                {
                                    if isContinuation {
                                        device.peers[last].allowedIPs += peer.allowedIPs
                                        return
                                    }
                                }
                                device.peers.append(peer)
                            } catch {
                                failure = "\(error)"
                            }
                        }
                    default: break
                    }
                }
            }
        }
        if let failure { throw WireGuardError.protocolError(failure) }
        return device
    }

    private struct PeerDecodeError: Error, CustomStringConvertible {
        let description: String
    }

    /// One peer nest; `isContinuation` when it carries nothing but the public key and allowed IPs.
    private static func decodePeer(_ nest: NetlinkAttribute) throws -> (Peer, Bool) {
        var key: Key?
        var peer = Peer(publicKey: .zero)
        var onlyKeyAndIPs = true
        var badIP = false
        nest.forEachNested { a in
            switch a.type {
            case t(WGPEER_A_PUBLIC_KEY): key = try? Key(bytes: a.payload)
            case t(WGPEER_A_ALLOWEDIPS):
                a.forEachNested { ipNest in
                    if let p = decodeAllowedIP(ipNest) { peer.allowedIPs.append(p) } else { badIP = true }
                }
            default:
                onlyKeyAndIPs = false
                switch a.type {
                case t(WGPEER_A_PRESHARED_KEY): peer.presharedKey = nonZeroKey(a.payload)
                case t(WGPEER_A_ENDPOINT): peer.endpoint = decodeEndpoint(a.payload)
                case t(WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL): peer.persistentKeepaliveInterval = a.u16 ?? 0
                case t(WGPEER_A_LAST_HANDSHAKE_TIME):
                    if a.payload.count == 16 {
                        let s = a.payload.loadUnaligned(as: Int64.self)
                        let ns = a.payload.loadUnaligned(fromByteOffset: 8, as: Int64.self)
                        peer.lastHandshake = (s == 0 && ns == 0) ? nil : (s, ns)
                    }
                case t(WGPEER_A_RX_BYTES): peer.receiveBytes = a.u64 ?? 0
                case t(WGPEER_A_TX_BYTES): peer.transmitBytes = a.u64 ?? 0
                case t(WGPEER_A_PROTOCOL_VERSION): peer.protocolVersion = a.u32 ?? 0
                default: break
                }
            }
        }
        guard let key else { throw PeerDecodeError(description: "peer without a valid public key in GET reply") }
        if badIP { throw PeerDecodeError(description: "malformed allowed IP for peer \(key.base64)") }
        peer.publicKey = key
        return (peer, onlyKeyAndIPs)
    }

    private static func decodeAllowedIP(_ nest: NetlinkAttribute) -> IPPrefix? {
        var family: UInt16?
        var address: IPAddress?
        var cidr: UInt8?
        nest.forEachNested { a in
            switch a.type {
            case t(WGALLOWEDIP_A_FAMILY): family = a.u16
            case t(WGALLOWEDIP_A_IPADDR): address = loadAddress(a.payload)
            case t(WGALLOWEDIP_A_CIDR_MASK): cidr = a.u8
            default: break
            }
        }
        guard let family, let address, let cidr, Int32(family) == address.family else { return nil }
        return try? IPPrefix(address: address, length: Int(cidr))
    }

    private static func decodeEndpoint(_ payload: UnsafeRawBufferPointer) -> Endpoint? {
        // Family and port: 4 bytes (a 2- or 3-byte payload read past its end: found by fuzzing).
        guard payload.count >= 4 else { return nil }
        let family = Int32(payload.loadUnaligned(as: sa_family_t.self))
        let port = UInt16(bigEndian: payload.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        if family == AF_INET, payload.count == MemoryLayout<sockaddr_in>.size {
            return loadAddress(UnsafeRawBufferPointer(rebasing: payload[4..<8])).map {
                Endpoint(address: $0, port: port)
            }
        }
        if family == AF_INET6, payload.count == MemoryLayout<sockaddr_in6>.size {
            return loadAddress(UnsafeRawBufferPointer(rebasing: payload[8..<24])).map {
                Endpoint(address: $0, port: port)
            }
        }
        return nil
    }

    /// An IPv4 or IPv6 address from 4 or 16 network-order bytes, without intermediate arrays
    /// (a 5000-peer dump holds tens of thousands of them).
    private static func loadAddress(_ p: UnsafeRawBufferPointer) -> IPAddress? {
        switch p.count {
        case 4: return .v4(UInt32(bigEndian: p.loadUnaligned(as: UInt32.self)))
        case 16:
            return .v6(
                UInt64(bigEndian: p.loadUnaligned(as: UInt64.self)),
                UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        default: return nil
        }
    }

    /// A key from a 32-byte payload; nil when the size is wrong or every byte is zero (the
    /// kernel's way of saying "none").
    private static func nonZeroKey(_ p: UnsafeRawBufferPointer) -> Key? {
        guard p.count == Key.length, p.contains(where: { $0 != 0 }) else { return nil }
        return try? Key(bytes: p)
    }
}
