import IPNetwork
import Membership
import MeshPlan
import Testing
import WireGuard
import WireMeshCrypto

/// A member "a" (pod 10.244.1.0/24) with the given current and pending key.
private func rotating(key: Key, pending: Key? = nil, status: MemberStatus = .alive(incarnation: 0)) throws -> Member {
    let identity = SigningIdentity.generate()
    let record = NodeRecord(name: "a", identity: identity.publicKey, version: 5, wireguardKey: key,
                            pendingWireguardKey: pending, wireguardEndpoints: [try Endpoint("192.0.2.1:51820")],
                            gossipAddress: try Endpoint("192.0.2.1:7946"), podCIDRs: [try IPPrefix("10.244.1.0/24")],
                            overlayAddress: try IPAddress("10.244.1.1"))
    return Member(record: try SignedNodeRecord(signing: record, with: identity), status: status, since: Instant(nanoseconds: 0))
}

private func local() throws -> (NodeRecord, Key) {
    let key = Key.generatePrivate()
    let record = NodeRecord(name: "local", identity: SigningIdentity.generate().publicKey, wireguardKey: key.publicKey(),
                            gossipAddress: try Endpoint("192.0.2.9:7946"), podCIDRs: [try IPPrefix("10.244.0.0/24")])
    return (record, key)
}

private let noKeepalive = MeshSettings(interface: "wm0", interfaceIndex: 7, listenPort: 51820, persistentKeepalive: 0,
                                       clusterCIDRs: [try! IPPrefix("10.244.0.0/16")])

private func peer(_ plan: DesiredMesh, _ key: Key) -> Peer? { plan.device.peers.first { $0.publicKey == key } }

@Suite struct RotationPlanTests {
    let old = Key.generatePrivate().publicKey()
    let new = Key.generatePrivate().publicKey()
    let pod = try! IPPrefix("10.244.1.0/24")

    @Test func pendingKeyAloneChangesNothingByDefault() throws {
        let (me, key) = try local()
        let members = [try rotating(key: old, pending: new)]
        let plain = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive)
        let withRotation = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive, switches: [])
        #expect(withRotation == plain)
        #expect(withRotation.device.peers.map(\.publicKey) == [old])
    }

    @Test func preinstalledPendingKeyGetsAnEntryWithoutAllowedIPs() throws {
        let (me, key) = try local()
        let plan = MeshPlanner.plan(local: me, privateKey: key, members: [try rotating(key: old, pending: new)],
                                    settings: noKeepalive, switches: [], preinstallPending: true)
        #expect(plan.device.peers.count == 2)
        #expect(peer(plan, old)?.allowedIPs == [pod])
        let extra = try #require(peer(plan, new))
        #expect(extra.allowedIPs.isEmpty)
        #expect(extra.endpoint == (try Endpoint("192.0.2.1:51820")))
    }

    @Test func switchBeforeTheRecordMovesAllowedIPsToTheNewKeyAndKicksIt() throws {
        let (me, key) = try local()
        let s = KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 100)
        let plan = MeshPlanner.plan(local: me, privateKey: key, members: [try rotating(key: old, pending: new)],
                                    settings: noKeepalive, switches: [s])
        let moved = try #require(peer(plan, new))
        #expect(moved.allowedIPs == [pod])
        #expect(moved.endpoint == (try Endpoint("192.0.2.1:51820")))
        #expect(moved.persistentKeepaliveInterval == RotationTiming().kickKeepalive)
        #expect(peer(plan, old)?.allowedIPs == [])
        // Every prefix still has exactly one owner.
        #expect(plan.device.peers.flatMap(\.allowedIPs) == [pod])
    }

    @Test func configuredKeepaliveIsKeptOnTheSwitchedEntry() throws {
        let (me, key) = try local()
        var settings = noKeepalive
        settings.persistentKeepalive = 10
        let plan = MeshPlanner.plan(local: me, privateKey: key, members: [try rotating(key: old)], settings: settings,
                                    switches: [KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 0)])
        #expect(peer(plan, new)?.persistentKeepaliveInterval == 10)
    }

    @Test func afterTheRecordArrivesTheOldEntryStaysEmptyDuringGrace() throws {
        let (me, key) = try local()
        let s = KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 100)
        let plan = MeshPlanner.plan(local: me, privateKey: key, members: [try rotating(key: new)],
                                    settings: noKeepalive, switches: [s])
        #expect(peer(plan, new)?.allowedIPs == [pod])
        #expect(peer(plan, new)?.persistentKeepaliveInterval == 0)
        #expect(peer(plan, old)?.allowedIPs == [])
    }

    @Test func switchForAnUnrelatedKeyOrUnknownMemberIsIgnored() throws {
        let (me, key) = try local()
        let members = [try rotating(key: Key.generatePrivate().publicKey())]
        let plain = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive)
        let stale = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive,
                                     switches: [KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 0),
                                                KeySwitch(node: "zz", oldKey: old, newKey: new, appliedAt: 0)])
        #expect(stale == plain)
    }

    @Test func switchToAKeyAnotherMemberHoldsIsIgnored() throws {
        let (me, key) = try local()
        let identity = SigningIdentity.generate()
        let otherRecord = NodeRecord(name: "b", identity: identity.publicKey, version: 1, wireguardKey: new,
                                     gossipAddress: try Endpoint("192.0.2.2:7946"), podCIDRs: [try IPPrefix("10.244.2.0/24")])
        let other = Member(record: try SignedNodeRecord(signing: otherRecord, with: identity), status: .alive(incarnation: 0),
                           since: Instant(nanoseconds: 0))
        let members = [try rotating(key: old), other]
        let plan = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive,
                                    switches: [KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 0)])
        #expect(peer(plan, old)?.allowedIPs == [pod])
        #expect(peer(plan, new)?.allowedIPs == [try IPPrefix("10.244.2.0/24")])
    }

    @Test func switchedPlanAppliesAsOneNewPeerWithItsPrefixes() throws {
        // The plan change is one new peer carrying the prefixes; applied once, it plans nothing more.
        let (me, key) = try local()
        let s = KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 0)
        let members = [try rotating(key: old)]
        let before = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive)
        let after = MeshPlanner.plan(local: me, privateKey: key, members: members, settings: noKeepalive, switches: [s])
        let change = diff(actual: before.device, desired: after.device)
        // The old entry loses its prefixes by replacement and the new one is added with them.
        #expect(change.peers.contains { $0.publicKey == new && $0.allowedIPs == [pod] && !$0.remove })
        #expect(diff(actual: after.device, desired: after.device).isEmpty)
    }

    @Test func settlement() throws {
        let timing = RotationTiming(grace: 3, maxAge: 300)
        let s = KeySwitch(node: "a", oldKey: old, newKey: new, appliedAt: 100)
        let waiting = try rotating(key: old)
        let arrived = try rotating(key: new)
        let movedOn = try rotating(key: Key.generatePrivate().publicKey())
        let dead = try rotating(key: old, status: .dead(incarnation: 1))
        #expect(!s.isSettled(member: waiting, now: 101, timing: timing))
        #expect(s.isSettled(member: waiting, now: 400, timing: timing))
        #expect(!s.isSettled(member: arrived, now: 102, timing: timing))
        #expect(s.isSettled(member: arrived, now: 103, timing: timing))
        #expect(s.isSettled(member: movedOn, now: 101, timing: timing))
        #expect(s.isSettled(member: dead, now: 101, timing: timing))
        #expect(s.isSettled(member: nil, now: 101, timing: timing))
    }

    @Test func keySwitchConfigSetsTheKeyAndKicksEveryRoutingPeerOnce() throws {
        let next = Key.generatePrivate()
        let routing = Peer(publicKey: old, allowedIPs: [pod])
        let graceEntry = Peer(publicKey: new, allowedIPs: [])
        let change = MeshPlanner.keySwitchConfig(privateKey: next, peers: [routing, graceEntry], kick: 0)
        #expect(change.privateKey == next)
        #expect(!change.replacePeers)
        // Off, then on (never 0: turning it on is what makes WireGuard send).
        #expect(change.peers == [
            PeerConfig(publicKey: old, updateOnly: true, persistentKeepaliveInterval: 0),
            PeerConfig(publicKey: old, updateOnly: true, persistentKeepaliveInterval: 1),
        ])
        let configured = MeshPlanner.keySwitchConfig(privateKey: next, peers: [routing], kick: 25)
        #expect(configured.peers.last?.persistentKeepaliveInterval == 25)
    }
}
