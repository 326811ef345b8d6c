import IPNetwork
import Membership
import MeshPlan
import Netlink
import Testing
import WireGuard
import WireMeshCrypto

/// A signed member for the planner; each gets its own identity and WireGuard key.
private func member(_ name: String, pod: String, overlay: String? = nil, version: UInt64 = 1,
                    status: MemberStatus = .alive(incarnation: 0), key: Key = Key.generatePrivate().publicKey(),
                    endpoint: String = "192.0.2.1:51820") throws -> Member {
    let identity = SigningIdentity.generate()
    let record = NodeRecord(name: name, identity: identity.publicKey, version: version, wireguardKey: key,
                            wireguardEndpoints: [try Endpoint(endpoint)], gossipAddress: try Endpoint("192.0.2.1:7946"),
                            podCIDRs: [try IPPrefix(pod)], overlayAddress: try overlay.map { try IPAddress($0) })
    return Member(record: try SignedNodeRecord(signing: record, with: identity), status: status,
                  since: Instant(nanoseconds: 0))
}

private func localRecord(pod: String = "10.244.0.0/24") throws -> (NodeRecord, Key) {
    let key = Key.generatePrivate()
    let record = NodeRecord(name: "local", identity: SigningIdentity.generate().publicKey,
                            wireguardKey: key.publicKey(), gossipAddress: try Endpoint("192.0.2.9:7946"),
                            podCIDRs: [try IPPrefix(pod)], overlayAddress: try IPAddress("10.244.0.1"))
    return (record, key)
}

private let settings = MeshSettings(interface: "wm0", interfaceIndex: 7, listenPort: 51820, persistentKeepalive: 25,
                                    clusterCIDRs: [try! IPPrefix("10.244.0.0/16")])

@Suite struct MeshPlanTests {
    @Test func aliveAndSuspectMembersBecomePeersDeadAndLeftDoNot() throws {
        let (local, key) = try localRecord()
        let members = [
            try member("a", pod: "10.244.1.0/24", overlay: "10.244.1.1"),
            try member("b", pod: "10.244.2.0/24", status: .suspect(incarnation: 1)),
            try member("c", pod: "10.244.3.0/24", status: .dead(incarnation: 1)),
            try member("d", pod: "10.244.4.0/24", status: .left(incarnation: 1)),
        ]
        let plan = MeshPlanner.plan(local: local, privateKey: key, members: members, settings: settings)
        let keys = Set(plan.device.peers.map(\.publicKey))
        #expect(keys == Set(members[0...1].map(\.record.record.wireguardKey)))
        let a = try #require(plan.device.peers.first { $0.publicKey == members[0].record.record.wireguardKey })
        // The overlay address sits inside the pod CIDR, so it adds no separate allowed IP.
        #expect(a.allowedIPs == [try IPPrefix("10.244.1.0/24")])
        #expect(a.endpoint == (try Endpoint("192.0.2.1:51820")))
        #expect(a.persistentKeepaliveInterval == 25)
        #expect(plan.device.privateKey == key)
        #expect(plan.device.listenPort == 51820)
    }

    @Test func localMemberIsNeverAPeer() throws {
        let (local, key) = try localRecord()
        let me = try member("local", pod: "10.244.0.0/24", key: key.publicKey())
        let plan = MeshPlanner.plan(local: local, privateKey: key, members: [me], settings: settings)
        #expect(plan.device.peers.isEmpty)
    }

    @Test func overlappingClaimsGoToTheOlderRecordAndAreReported() throws {
        let (local, key) = try localRecord()
        let older = try member("zeta", pod: "10.244.5.0/24", version: 1)
        let newer = try member("alpha", pod: "10.244.5.0/24", version: 3)
        let grabsOurs = try member("mallory", pod: "10.244.0.0/23", version: 1)
        let plan = MeshPlanner.plan(local: local, privateKey: key, members: [newer, older, grabsOurs], settings: settings)
        let owner = plan.device.peers.first { $0.allowedIPs.contains(try! IPPrefix("10.244.5.0/24")) }
        #expect(owner?.publicKey == older.record.record.wireguardKey)
        #expect(plan.conflicts.contains(PrefixConflict(prefix: try IPPrefix("10.244.5.0/24"), winner: "zeta", loser: "alpha")))
        #expect(plan.conflicts.contains { $0.loser == "mallory" && $0.winner == "local" })
        // Losers stay peers (they can still handshake) but own nothing they lost.
        let mallory = plan.device.peers.first { $0.publicKey == grabsOurs.record.record.wireguardKey }
        #expect(mallory?.allowedIPs == [])
    }

    @Test func duplicateWireGuardKeyIsNotPlannedTwice() throws {
        let (local, key) = try localRecord()
        let shared = Key.generatePrivate().publicKey()
        let plan = MeshPlanner.plan(local: local, privateKey: key,
                                    members: [try member("a", pod: "10.244.1.0/24", key: shared),
                                              try member("b", pod: "10.244.2.0/24", key: shared)],
                                    settings: settings)
        #expect(plan.device.peers.count == 1)
    }

    @Test func planIsIdempotentAgainstTheDevice() throws {
        let (local, key) = try localRecord()
        let members = try (1...20).map { try member("n\($0)", pod: "10.244.\($0).0/24") }
        let plan = MeshPlanner.plan(local: local, privateKey: key, members: members, settings: settings)
        // Once the device equals the plan, the WireGuard diff is empty; one member more is one peer.
        #expect(diff(actual: plan.device, desired: plan.device).isEmpty)
        let more = members + [try member("n21", pod: "10.244.21.0/24")]
        let next = MeshPlanner.plan(local: local, privateKey: key, members: more, settings: settings)
        let change = diff(actual: plan.device, desired: next.device)
        #expect(change.peers.count == 1)
        #expect(!change.replacePeers)
    }

    @Test func routesFailClosedAndDiffOnlyOurs() throws {
        let desired = MeshPlanner.routes(settings: settings)
        #expect(desired.count == 2)
        #expect(desired.contains { $0.type == .unicast && $0.interfaceIndex == 7 })
        #expect(desired.contains { $0.type == .unreachable && $0.interfaceIndex == nil })
        #expect(MeshPlanner.routeChanges(actual: desired, desired: desired).isEmpty)

        let stale = Route(destination: try IPPrefix("10.245.0.0/16"), interfaceIndex: 7)
        let changes = MeshPlanner.routeChanges(actual: [desired[0], stale], desired: desired)
        #expect(changes.add == [desired[1]])
        #expect(changes.remove == [stale])
        // A route moved to another interface index (link recreated) is replaced.
        var moved = desired[0]
        moved.interfaceIndex = 9
        let relink = MeshPlanner.routeChanges(actual: [moved, desired[1]], desired: desired)
        #expect(relink.add == [desired[0]] && relink.remove == [moved])
    }
}

@Suite("Mesh plan: dual-stack")
struct DualStackPlanTests {
    @Test func aDualStackMemberGetsBothBlocksAsAllowedIPsAndBothRangesAreRoutedFailClosed() throws {
        let (local, key) = try localRecord()
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: "n1", identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                                wireguardEndpoints: [try Endpoint("[2001:db8::1]:51820")], gossipAddress: try Endpoint("192.0.2.1:7946"),
                                podCIDRs: [try IPPrefix("10.244.1.0/24"), try IPPrefix("fd42:1:0:1::/64")],
                                overlayAddress: try IPAddress("10.244.1.0"))
        let m = Member(record: try SignedNodeRecord(signing: record, with: identity), status: .alive(incarnation: 0),
                       since: Instant(nanoseconds: 0))
        var dual = settings
        dual.clusterCIDRs.append(try IPPrefix("fd42:1::/48"))
        let plan = MeshPlanner.plan(local: local, privateKey: key, members: [m], settings: dual)
        let peer = try #require(plan.device.peers.first)
        #expect(Set(peer.allowedIPs) == Set([try IPPrefix("10.244.1.0/24"), try IPPrefix("fd42:1:0:1::/64")]))
        #expect(peer.endpoint == (try Endpoint("[2001:db8::1]:51820")), "an IPv6 endpoint is used when it is the only one")
        let v6 = plan.routes.filter { !$0.destination.address.isIPv4 }
        #expect(v6.map(\.type) == [.unicast, .unreachable] && v6.allSatisfy { $0.destination == (try! IPPrefix("fd42:1::/48")) })
    }

    /// The kernel lists an IPv6 route given no metric with metric 1024: that is the planned route, not
    /// drift (else every pass would replace it).
    @Test func anIPv6RouteTheKernelListsWithMetric1024IsThePlannedOne() throws {
        var dual = settings
        dual.clusterCIDRs = [try IPPrefix("fd42:1::/48")]
        let desired = MeshPlanner.routes(settings: dual)
        var listed = desired
        listed[0].metric = 1024
        #expect(MeshPlanner.routeChanges(actual: listed, desired: desired).isEmpty)
        listed[0].metric = 1000
        #expect(!MeshPlanner.routeChanges(actual: listed, desired: desired).isEmpty)
    }
}
