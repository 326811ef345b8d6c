import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireGuard

@Suite struct DiffTests {
    /// A device with `n` peers, peer i owning 10.(i/256).(i%256).0/24 and fd00::i/128.
    func device(peers n: Int, keys: [Key]) -> Device {
        var d = Device(name: "wg0", privateKey: fixedKey(1), listenPort: 51820)
        for i in 0..<n {
            d.peers.append(Peer(
                publicKey: keys[i], endpoint: endpoint("192.0.2.\(i % 250 + 1):\(51820 + i % 100)"),
                persistentKeepaliveInterval: 25,
                allowedIPs: [prefix("10.\(i / 256).\(i % 256).0/24"), prefix("fd00::\(String(i, radix: 16))/128")]))
        }
        return d
    }

    func keys(_ n: Int) -> [Key] { (0..<n).map { _ in Key.generatePreshared() } }

    @Test func equalStatesGiveAnEmptyConfig() {
        let ks = keys(50)
        let d = device(peers: 50, keys: ks)
        #expect(diff(actual: d, desired: d).isEmpty)
    }

    @Test func runtimeFieldsAndOrderDoNotCount() {
        let ks = keys(20)
        let desired = device(peers: 20, keys: ks)
        var actual = desired
        actual.peers.reverse()
        for i in actual.peers.indices {
            actual.peers[i].receiveBytes = 1234
            actual.peers[i].lastHandshake = (1_700_000_000, 5)
            actual.peers[i].protocolVersion = 1
            actual.peers[i].allowedIPs.reverse()
        }
        actual.publicKey = fixedKey(1).publicKey()
        #expect(diff(actual: actual, desired: desired).isEmpty)
    }

    @Test func allowedIPsCompareAsMaskedSets() {
        let k = fixedKey(2)
        let actual = Device(name: "wg0", peers: [Peer(publicKey: k, allowedIPs: [prefix("10.0.0.0/24")])])
        let desired = Device(name: "wg0", peers: [Peer(publicKey: k, allowedIPs: [prefix("10.0.0.7/24"), prefix("10.0.0.0/24")])])
        #expect(diff(actual: actual, desired: desired).isEmpty)
    }

    @Test func applyingTheDiffReachesTheDesiredStateAndThenNothingIsLeft() {
        let ks = keys(30)
        let actual = device(peers: 20, keys: ks)
        var desired = device(peers: 30, keys: ks)
        desired.peers.removeFirst(5)                         // 5 removed, 10 added
        desired.peers[0].persistentKeepaliveInterval = 0     // one changed
        desired.listenPort = 4000
        let change = diff(actual: actual, desired: desired)
        let after = apply(change, to: actual)
        #expect(diff(actual: after, desired: desired).isEmpty)
        #expect(!change.replacePeers)
        #expect(change.peers.filter(\.remove).count == 5)
        #expect(change.peers.count == 5 + 10 + 1)
        #expect(change.listenPort == 4000)
        #expect(change.privateKey == nil)
    }

    @Test func onePeerChangeYieldsExactlyOnePeerConfigOnFiveThousandPeers() throws {
        let ks = keys(5000)
        let actual = device(peers: 5000, keys: ks)
        var desired = actual
        desired.peers[1234].endpoint = endpoint("[2001:db8::9]:51820")
        let change = diff(actual: actual, desired: desired)
        #expect(change == DeviceConfig(peers: [PeerConfig(publicKey: ks[1234], endpoint: endpoint("[2001:db8::9]:51820"))]))
    }

    @Test func newPeerIsAddedInFullAndNeverWithReplacePeers() {
        let k = fixedKey(2)
        let want = Peer(publicKey: k, presharedKey: fixedKey(3), endpoint: endpoint("192.0.2.1:1"),
                        persistentKeepaliveInterval: 10, allowedIPs: [prefix("10.0.0.1/24"), prefix("10.0.0.0/24")])
        let change = diff(actual: Device(name: "wg0"), desired: Device(name: "wg0", peers: [want]))
        #expect(change == DeviceConfig(peers: [PeerConfig(
            publicKey: k, presharedKey: fixedKey(3), endpoint: endpoint("192.0.2.1:1"),
            persistentKeepaliveInterval: 10, allowedIPs: [prefix("10.0.0.0/24")])]))
    }

    @Test func peersNotDesiredAreRemovedOneByOne() {
        let a = Peer(publicKey: fixedKey(2)), b = Peer(publicKey: fixedKey(3))
        let change = diff(actual: Device(name: "wg0", peers: [a, b]), desired: Device(name: "wg0", peers: [b]))
        #expect(change == DeviceConfig(peers: [PeerConfig(publicKey: fixedKey(2), remove: true)]))
    }

    @Test func addedAllowedIPsAreSentAlone() {
        let k = fixedKey(2)
        let actual = Device(name: "wg0", peers: [Peer(publicKey: k, allowedIPs: [prefix("10.0.0.0/24")])])
        let desired = Device(name: "wg0", peers: [Peer(publicKey: k, allowedIPs: [prefix("10.0.0.0/24"), prefix("10.9.0.0/16")])])
        #expect(diff(actual: actual, desired: desired)
                == DeviceConfig(peers: [PeerConfig(publicKey: k, allowedIPs: [prefix("10.9.0.0/16")])]))
    }

    @Test func removedAllowedIPReplacesThatPeersSetOnly() {
        let ks = keys(3)
        let actual = device(peers: 3, keys: ks)
        var desired = actual
        desired.peers[1].allowedIPs = [prefix("10.0.1.0/24"), prefix("10.200.0.0/16")]  // drop fd00::1, add one
        let change = diff(actual: actual, desired: desired)
        #expect(change == DeviceConfig(peers: [PeerConfig(
            publicKey: ks[1], replaceAllowedIPs: true, allowedIPs: [prefix("10.0.1.0/24"), prefix("10.200.0.0/16")])]))
    }

    @Test func peersWithManyAllowedIPsUseTheSameRules() {
        let k = fixedKey(2)
        let many = (0..<40).map { prefix("10.\($0).0.0/16") }
        let actual = Device(name: "w", peers: [Peer(publicKey: k, allowedIPs: many)])
        #expect(diff(actual: actual, desired: Device(name: "w", peers: [Peer(publicKey: k, allowedIPs: many.reversed())])).isEmpty)
        #expect(diff(actual: actual, desired: Device(name: "w", peers: [Peer(publicKey: k, allowedIPs: many + [prefix("10.99.0.0/16")])]))
                == DeviceConfig(peers: [PeerConfig(publicKey: k, allowedIPs: [prefix("10.99.0.0/16")])]))
        #expect(diff(actual: actual, desired: Device(name: "w", peers: [Peer(publicKey: k, allowedIPs: Array(many.dropFirst()))]))
                == DeviceConfig(peers: [PeerConfig(publicKey: k, replaceAllowedIPs: true, allowedIPs: Array(many.dropFirst()))]))
    }

    @Test func removingEveryAllowedIPReplacesWithNothing() {
        let k = fixedKey(2)
        let actual = Device(name: "wg0", peers: [Peer(publicKey: k, allowedIPs: [prefix("10.0.0.0/24")])])
        let desired = Device(name: "wg0", peers: [Peer(publicKey: k)])
        #expect(diff(actual: actual, desired: desired)
                == DeviceConfig(peers: [PeerConfig(publicKey: k, replaceAllowedIPs: true, allowedIPs: [])]))
    }

    @Test func presharedKeyIsSetChangedAndClearedWithTheZeroKey() {
        let k = fixedKey(2)
        func change(_ have: Key?, _ want: Key?) -> DeviceConfig {
            diff(actual: Device(name: "w", peers: [Peer(publicKey: k, presharedKey: have)]),
                 desired: Device(name: "w", peers: [Peer(publicKey: k, presharedKey: want)]))
        }
        #expect(change(fixedKey(3), nil) == DeviceConfig(peers: [PeerConfig(publicKey: k, presharedKey: .zero)]))
        #expect(change(nil, fixedKey(3)) == DeviceConfig(peers: [PeerConfig(publicKey: k, presharedKey: fixedKey(3))]))
        #expect(change(fixedKey(3), fixedKey(4)) == DeviceConfig(peers: [PeerConfig(publicKey: k, presharedKey: fixedKey(4))]))
        #expect(change(fixedKey(3), fixedKey(3)).isEmpty)
        #expect(change(.zero, nil).isEmpty)
    }

    @Test func keepaliveChangesAndTurnsOff() {
        let k = fixedKey(2)
        let actual = Device(name: "w", peers: [Peer(publicKey: k, persistentKeepaliveInterval: 25)])
        let desired = Device(name: "w", peers: [Peer(publicKey: k)])
        #expect(diff(actual: actual, desired: desired)
                == DeviceConfig(peers: [PeerConfig(publicKey: k, persistentKeepaliveInterval: 0)]))
    }

    @Test func unsetEndpointLeavesTheRoamedOneAlone() {
        let k = fixedKey(2)
        let actual = Device(name: "w", peers: [Peer(publicKey: k, endpoint: endpoint("192.0.2.7:4000"))])
        #expect(diff(actual: actual, desired: Device(name: "w", peers: [Peer(publicKey: k)])).isEmpty)
    }

    @Test func privateKeysCompareClampedLikeTheDeviceStoresThem() {
        // 0x01-filled is not clamped; a device reports it as clamped(0x01…).
        var reported = [UInt8](repeating: 1, count: 32)
        reported[0] = 0
        reported[31] = 0x41
        let actual = Device(name: "w", privateKey: try! Key(bytes: reported))
        #expect(diff(actual: actual, desired: Device(name: "w", privateKey: fixedKey(1))).isEmpty)
        #expect(diff(actual: actual, desired: Device(name: "w", privateKey: fixedKey(2))) == DeviceConfig(privateKey: fixedKey(2)))
    }

    @Test func deviceFieldsOnlyWhenDifferent() {
        let actual = Device(name: "w", privateKey: fixedKey(1), listenPort: 4321, fwmark: 7)
        // Unset private key and port 0 keep what the device has; fwmark is applied as given.
        #expect(diff(actual: actual, desired: Device(name: "w", fwmark: 7)).isEmpty)
        #expect(diff(actual: actual, desired: Device(name: "w")) == DeviceConfig(fwmark: 0))
        #expect(diff(actual: actual, desired: Device(name: "w", privateKey: fixedKey(5), listenPort: 4321, fwmark: 7))
                == DeviceConfig(privateKey: fixedKey(5)))
        #expect(diff(actual: actual, desired: Device(name: "w", listenPort: 1, fwmark: 7)) == DeviceConfig(listenPort: 1))
    }
}

/// What a device does with a config (reference semantics of SET), for round-trip checks.
func apply(_ config: DeviceConfig, to device: Device) -> Device { device.applying(config) }
