import IPNetwork
import MeshPlan
import Testing
import WireGuard
import WireMeshCrypto

/// The writes the reconciler sends, from the device as read and the device as planned.
@Suite struct DeviceWritesTests {
    let ownKey = Key.generatePrivate()
    let a = Key.generatePrivate().publicKey()
    let b = Key.generatePrivate().publicKey()
    let podA = try! IPPrefix("10.244.1.0/24")
    let podB = try! IPPrefix("10.244.2.0/24")
    let endpoint = try! Endpoint("192.0.2.1:51820")

    func device(_ peers: [Peer], key: Key? = nil) -> Device {
        Device(name: "wm0", privateKey: key ?? ownKey, listenPort: 51820, peers: peers)
    }

    @Test func nothingDiffersNothingIsWritten() {
        let d = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA])])
        #expect(MeshPlanner.deviceWrites(actual: d, desired: d, kick: 25).isEmpty)
    }

    @Test func aPrefixMovingBetweenEntriesIsAddedToTheNewOneBeforeTheOldOneLosesIt() {
        // Whatever the key order, the gain comes first: the prefix never has no owner.
        for _ in 0..<20 {
            let old = Key.generatePrivate().publicKey(), new = Key.generatePrivate().publicKey()
            let actual = device([Peer(publicKey: old, endpoint: endpoint, allowedIPs: [podA])])
            let desired = device([Peer(publicKey: old, endpoint: endpoint, allowedIPs: []),
                                  Peer(publicKey: new, endpoint: endpoint, persistentKeepaliveInterval: 25, allowedIPs: [podA])])
            let writes = MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: 25)
            #expect(writes.count == 1, "keepalive on: no separate kick")
            #expect(writes[0].peers.map(\.publicKey) == [new, old])
            #expect(writes[0].peers[1].replaceAllowedIPs && writes[0].peers[1].allowedIPs.isEmpty)
            // Applied in that order, the device ends as planned.
            #expect(actual.applying(writes[0]).peers.first { $0.publicKey == new }?.allowedIPs == [podA])
        }
    }

    @Test func aRemovedPeerGoesAfterThePeerThatTakesItsPrefix() {
        let actual = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA])])
        let desired = device([Peer(publicKey: b, endpoint: endpoint, persistentKeepaliveInterval: 25, allowedIPs: [podA])])
        let writes = MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: 25)
        #expect(writes.count == 1)
        #expect(writes[0].peers.map(\.publicKey) == [b, a])
        #expect(writes[0].peers[1].remove)
    }

    @Test func aNewPeerWithoutKeepaliveGetsAHandshakeKick() {
        let actual = device([])
        let desired = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA]),
                              Peer(publicKey: b, allowedIPs: [podB])])  // no endpoint: nothing to send to
        let writes = MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: 25)
        #expect(writes.count == 3)
        #expect(writes[1].peers == [PeerConfig(publicKey: a, updateOnly: true, persistentKeepaliveInterval: 1)])
        #expect(writes[2].peers == [PeerConfig(publicKey: a, updateOnly: true, persistentKeepaliveInterval: 0)])
        var after = actual
        for w in writes { after = after.applying(w) }
        #expect(after.peers.first { $0.publicKey == a }?.persistentKeepaliveInterval == 0)
    }

    @Test func aNewPrivateKeyIsWrittenAloneWithAKickToEveryRoutingPeer() {
        let next = Key.generatePrivate()
        let actual = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA]),
                             Peer(publicKey: b, endpoint: endpoint, allowedIPs: [])])
        // The plan also wants a peer change: it waits for the next pass.
        let desired = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA, podB])], key: next)
        let writes = MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: 25)
        #expect(writes == [MeshPlanner.keySwitchConfig(privateKey: next, peers: actual.peers, kick: 25)])
        #expect(writes[0].privateKey == next)
        #expect(Set(writes[0].peers.map(\.publicKey)) == [a], "the empty entry b is left alone")
        // The next pass, from the device as it is now, applies the rest and puts keepalive back.
        let switched = actual.applying(writes[0])
        let rest = MeshPlanner.deviceWrites(actual: switched, desired: desired, kick: 25)
        #expect(rest.count == 1 && rest[0].privateKey == nil)
        var final = switched
        for w in rest { final = final.applying(w) }
        #expect(final.peers.map(\.publicKey) == [a])
        #expect(final.peers[0].allowedIPs == [podA, podB] && final.peers[0].persistentKeepaliveInterval == 0)
    }

    @Test func aDeviceWithoutKeyGetsItInTheOrdinaryChange() {
        let actual = Device(name: "wm0")
        let desired = device([Peer(publicKey: a, persistentKeepaliveInterval: 25, allowedIPs: [podA])])
        let writes = MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: 25)
        #expect(writes.count == 1 && writes[0].privateKey == ownKey && writes[0].peers.count == 1)
    }

    @Test func beforeGossipIsUpTheDevicePeersStayAndAdmittedPeersNeverTakeAPlannedPrefix() {
        let actual = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA])])
        let plan = device([])
        let down = MeshPlanner.desiredDevice(plan: plan, actual: actual, overrides: DeviceOverrides(gossipUp: false))
        #expect(down.peers == actual.peers)
        let planned = device([Peer(publicKey: a, endpoint: endpoint, allowedIPs: [podA])])
        let clashing = Peer(publicKey: b, allowedIPs: [try! IPPrefix("10.244.1.128/25")])
        let fine = Peer(publicKey: b, allowedIPs: [podB])
        #expect(MeshPlanner.desiredDevice(plan: planned, actual: actual, overrides: DeviceOverrides(gossipUp: true, admitted: [clashing])).peers == planned.peers)
        #expect(MeshPlanner.desiredDevice(plan: planned, actual: actual, overrides: DeviceOverrides(gossipUp: true, admitted: [fine])).peers == planned.peers + [fine])
    }
}
