import Foundation
import IPNetwork
import Netlink
import Testing
import WireGuard
import WireGuardKernel
import WireMeshCrypto

/// Kernel WireGuard through this project's genetlink client, checked against `wg show dump`.
///
/// Only a kernel with WireGuard can run it: the qemu VM (see the vm scripts). On the host, whose
/// kernel has none, the suite is reported as skipped with the reason; `HostNetlinkTests` covers the
/// missing-module path and `KernelE2ETests` proves the genetlink path in CI (inside qemu).
private let kernelHasWireGuard = (try? KernelBackend()) != nil

@Suite(.serialized, .enabled(if: kernelHasWireGuard,
                             "this kernel has no WireGuard: run inside the qemu VM (KernelE2ETests covers genetlink in CI)"))
struct KernelWireGuardTests {
    private static func backend(_ ns: TestNamespace) -> KernelBackend? {
        guard let b = try? KernelBackend(networkNamespacePath: ns.path) else {
            print("skipped: this kernel has no WireGuard; KernelWireGuardTests run inside the qemu VM")
            return nil
        }
        return b
    }

    private static func key(_ i: Int, tag: UInt8) -> Key {
        var b = [UInt8](repeating: tag, count: 32)
        // Bytes 2 and 3: X25519 clamping rewrites the low bits of byte 0.
        b[2] = UInt8(i & 0xFF)
        b[3] = UInt8(i >> 8)
        return try! Key(bytes: b).publicKey()  // a valid curve point, like a real peer key
    }

    /// Parses `wg show IFACE dump` into peer lines keyed by public key.
    private static func wgDump(_ ns: TestNamespace, _ iface: String) throws -> (
        device: [String], peers: [String: [String]]
    ) {
        let r = try run(["ip", "netns", "exec", ns.name, "wg", "show", iface, "dump"])
        guard r.status == 0 else { throw TestFailure("wg show \(iface) dump: \(r.err)") }
        let lines = r.out.split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        var peers: [String: [String]] = [:]
        for l in lines.dropFirst() { peers[l[0]] = l }
        return (lines.first ?? [], peers)
    }

    @Test func thousandPeersApplyReadBackAndDeltaRemove() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        guard let backend = Self.backend(ns) else { return }
        let rt = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: ns.path))
        try rt.createLink(name: "wmk0", kind: "wireguard", mtu: 1420)
        try rt.addAddress(try IPPrefix("10.200.0.1/16"), interface: "wmk0")
        try rt.setLink(name: "wmk0", up: true)
        #expect(try rt.link(named: "wmk0").kind == "wireguard")

        let privateKey = Key.generatePrivate()
        let psk = Key.generatePreshared()
        let peers = (0..<1000).map { i in
            PeerConfig(
                publicKey: Self.key(i, tag: 0x42),
                presharedKey: i % 3 == 0 ? psk : nil,
                endpoint: i % 2 == 0
                    ? Endpoint(address: .v4(0xC633_6400 | UInt32(i & 0xFF)), port: UInt16(10000 + i))
                    : Endpoint(address: .v6(0x2001_0db8_0000_0000, UInt64(i)), port: 51820),
                persistentKeepaliveInterval: i % 5 == 0 ? 25 : nil,
                allowedIPs: [
                    try! IPPrefix(address: .v4(0x0A00_0000 | UInt32(i) << 8), length: 24),
                    try! IPPrefix(address: .v4(0xAC10_0000 | UInt32(i)), length: 32),
                    try! IPPrefix(address: .v6(0xfd00_0000_0000_0000 | UInt64(i) << 16, 0), length: 64),
                ])
        }
        let report = try backend.configure(
            device: "wmk0",
            DeviceConfig(
                privateKey: privateKey, listenPort: 51999, fwmark: 0x51, replacePeers: true, peers: peers))
        #expect(report.messages > 10)

        let device = try backend.device(named: "wmk0")
        #expect(device.privateKey == privateKey && device.publicKey == privateKey.publicKey())
        #expect(device.listenPort == 51999 && device.fwmark == 0x51)
        #expect(device.peers.count == 1000)
        let byKey = Dictionary(uniqueKeysWithValues: device.peers.map { ($0.publicKey, $0) })
        for p in peers {
            let got = try #require(byKey[p.publicKey])
            #expect(Set(got.allowedIPs) == Set(p.allowedIPs))
            #expect(got.endpoint == p.endpoint)
            #expect(got.presharedKey == p.presharedKey)
            #expect(got.persistentKeepaliveInterval == (p.persistentKeepaliveInterval ?? 0))
        }

        // The reference tool sees exactly the same.
        let dump = try Self.wgDump(ns, "wmk0")
        #expect(dump.device == [privateKey.base64, privateKey.publicKey().base64, "51999", "0x51"])
        #expect(dump.peers.count == 1000)
        for p in device.peers {
            let line = try #require(dump.peers[p.publicKey.base64])
            #expect(line[1] == (p.presharedKey?.base64 ?? "(none)"))
            #expect(line[2] == (p.endpoint?.description ?? "(none)"))
            #expect(Set(line[3].split(separator: ",").map(String.init)) == Set(p.allowedIPs.map(\.description)))
            #expect(line[7] == (p.persistentKeepaliveInterval == 0 ? "off" : "\(p.persistentKeepaliveInterval)"))
        }

        // A delta removing one peer is one small message and leaves the other 999 alone.
        let gone = peers[500].publicKey
        let delta = try backend.configure(
            device: "wmk0", DeviceConfig(peers: [PeerConfig(publicKey: gone, remove: true)]))
        #expect(delta.messages == 1 && delta.bytes < 100)
        let after = try Self.wgDump(ns, "wmk0")
        #expect(after.peers.count == 999 && after.peers[gone.base64] == nil)
        #expect(after.peers.keys.allSatisfy { dump.peers[$0] != nil })

        // UPDATE_ONLY never creates a peer.
        _ = try backend.configure(
            device: "wmk0",
            DeviceConfig(peers: [
                PeerConfig(publicKey: gone, updateOnly: true, allowedIPs: prefixesForUpdateOnly)
            ]))
        #expect(try Self.wgDump(ns, "wmk0").peers[gone.base64] == nil)
    }

    private var prefixesForUpdateOnly: [IPPrefix] {
        (0..<400).map { try! IPPrefix(address: .v4(0x6400_0000 | UInt32($0) << 8), length: 24) }
    }

    @Test func oversizedAllowedIPListIsSplitAndReplacedWhole() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        guard let backend = Self.backend(ns) else { return }
        let rt = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: ns.path))
        try rt.createLink(name: "wmk1", kind: "wireguard")
        let peer = Self.key(1, tag: 0x77)
        let first = (0..<600).map { try! IPPrefix(address: .v4(0x0B00_0000 | UInt32($0) << 8), length: 24) }
        let second = (0..<300).map {
            try! IPPrefix(address: .v6(0xfd77_0000_0000_0000 | UInt64($0) << 16, 0), length: 64)
        }
        let r1 = try backend.configure(
            device: "wmk1", DeviceConfig(peers: [PeerConfig(publicKey: peer, allowedIPs: first)]))
        #expect(r1.messages > 2)
        #expect(Set(try backend.device(named: "wmk1").peers.first?.allowedIPs ?? []) == Set(first))
        // REPLACE_ALLOWEDIPS in the first fragment only: the result is exactly the new list.
        _ = try backend.configure(
            device: "wmk1",
            DeviceConfig(peers: [
                PeerConfig(publicKey: peer, replaceAllowedIPs: true, allowedIPs: second)
            ]))
        let d = try backend.device(named: "wmk1")
        #expect(d.peers.count == 1)
        #expect(Set(d.peers[0].allowedIPs) == Set(second))
        let dump = try Self.wgDump(ns, "wmk1")
        #expect(dump.peers[peer.base64]?[3].split(separator: ",").count == 300)
    }

    @Test func errorsNameTheDevice() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        guard let backend = Self.backend(ns) else { return }
        #expect {
            _ = try backend.device(named: "wmnone")
        } throws: { e in
            guard case WireGuardError.noSuchDevice("wmnone") = e else { return false }
            return true
        }
        #expect {
            try backend.configure(device: "lo", DeviceConfig(listenPort: 1))
        } throws: { e in
            guard case WireGuardError.noSuchDevice("lo") = e else { return false }
            return true
        }
    }
}
