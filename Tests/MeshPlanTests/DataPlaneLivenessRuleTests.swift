import IPNetwork
import Membership
import MeshPlan
import Testing
import WireGuard
import WireMeshCrypto

/// A signed member with its own identity and WireGuard key.
private func member(_ name: String, pod: String, version: UInt64 = 1, status: MemberStatus,
                    key: Key = Key.generatePrivate().publicKey()) throws -> Member {
    let identity = SigningIdentity.generate()
    let record = NodeRecord(name: name, identity: identity.publicKey, version: version, wireguardKey: key,
                            wireguardEndpoints: [try Endpoint("192.0.2.1:51820")], gossipAddress: try Endpoint("192.0.2.1:7946"),
                            podCIDRs: [try IPPrefix(pod)])
    return Member(record: try SignedNodeRecord(signing: record, with: identity), status: status, since: Instant(nanoseconds: 0))
}

private let local: (record: NodeRecord, key: Key) = {
    let key = Key.generatePrivate()
    let record = NodeRecord(name: "local", identity: SigningIdentity.generate().publicKey, wireguardKey: key.publicKey(),
                            gossipAddress: try! Endpoint("192.0.2.9:7946"), podCIDRs: [try! IPPrefix("10.244.0.0/24")])
    return (record, key)
}()

private let settings = MeshSettings(interface: "wm0", interfaceIndex: 7, listenPort: 51820,
                                    clusterCIDRs: [try! IPPrefix("10.244.0.0/16")])

/// Virtual wall clock: seconds since the epoch.
private let now = 1_750_000_000.0

private func key(_ m: Member) -> Key { m.record.record.wireguardKey }

/// The plan as the reconciler makes it: the dead members kept by the rule, then the plan with them.
private func planWithRule(_ members: [Member], _ sightings: [Key: DataPlaneSighting]) -> (kept: Set<String>, plan: DesiredMesh) {
    let kept = MeshPlanner.deadMembersKept(members: members, localName: "local", sightings: sightings, now: now)
    return (kept, MeshPlanner.plan(local: local.record, privateKey: local.key, members: members, settings: settings,
                                   keepingDead: kept))
}

@Suite("Dead members whose data plane is alive keep their peer")
struct DataPlaneLivenessRuleTests {
    @Test func deadWithFreshHandshakeAndReceivingIsKeptWithItsPrefixes() throws {
        let dead = try member("b", pod: "10.244.2.0/24", status: .dead(incarnation: 3))
        let (kept, plan) = planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: now - 100, receiveIdle: 4)])
        #expect(kept == ["b"])
        let peer = try #require(plan.device.peers.first { $0.publicKey == key(dead) })
        #expect(peer.allowedIPs == [try IPPrefix("10.244.2.0/24")])
        #expect(peer.endpoint == (try Endpoint("192.0.2.1:51820")))
    }

    @Test func deadWhoseReceiveCounterStalledPastTheWindowIsRemoved() throws {
        let dead = try member("b", pod: "10.244.2.0/24", status: .dead(incarnation: 3))
        for idle in [30.0, 31, 600] {
            let (kept, plan) = planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: now - 10, receiveIdle: idle)])
            #expect(kept.isEmpty, "receive idle \(idle) s")
            #expect(plan.device.peers.isEmpty)
        }
        // Just inside the window it stays.
        #expect(planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: now - 10, receiveIdle: 29.9)]).kept == ["b"])
    }

    @Test func deadWhoseHandshakeIsOlderThanRejectAfterTimeIsRemoved() throws {
        let dead = try member("b", pod: "10.244.2.0/24", status: .dead(incarnation: 3))
        for age in [180.0, 181, 86_400] {
            let (kept, plan) = planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: now - age, receiveIdle: 1)])
            #expect(kept.isEmpty, "handshake \(age) s old")
            #expect(plan.device.peers.isEmpty)
        }
        // No handshake at all, or not on the device: nothing proves it alive.
        #expect(planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: nil, receiveIdle: 1)]).kept.isEmpty)
        #expect(planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: now - 5, receiveIdle: nil)]).kept.isEmpty)
        #expect(planWithRule([dead], [:]).kept.isEmpty)
        #expect(planWithRule([dead], [key(dead): DataPlaneSighting(lastHandshake: .nan, receiveIdle: 1)]).kept.isEmpty)
    }

    @Test func leftIsRemovedAtOnceWhateverTheDataPlaneShows() throws {
        let gone = try member("b", pod: "10.244.2.0/24", status: .left(incarnation: 3))
        let (kept, plan) = planWithRule([gone], [key(gone): DataPlaneSighting(lastHandshake: now - 1, receiveIdle: 0)])
        #expect(kept.isEmpty)
        #expect(plan.device.peers.isEmpty)
        // Even if a caller names it, the plan keeps only dead members.
        let forced = MeshPlanner.plan(local: local.record, privateKey: local.key, members: [gone], settings: settings,
                                      keepingDead: ["b"])
        #expect(forced.device.peers.isEmpty)
    }

    @Test func aliveAndSuspectMembersAreUnaffected() throws {
        let alive = try member("a", pod: "10.244.1.0/24", status: .alive(incarnation: 0))
        let suspect = try member("s", pod: "10.244.3.0/24", status: .suspect(incarnation: 1))
        // Idle data plane, no handshake: still peers (gossip says they are up).
        let (kept, plan) = planWithRule([alive, suspect], [key(alive): DataPlaneSighting(lastHandshake: nil, receiveIdle: 900)])
        #expect(kept.isEmpty)
        #expect(Set(plan.device.peers.map(\.publicKey)) == [key(alive), key(suspect)])
        let plain = MeshPlanner.plan(local: local.record, privateKey: local.key, members: [alive, suspect], settings: settings)
        #expect(plan == plain)
    }

    @Test func aLiveMemberClaimingAKeptDeadMembersPrefixWinsItEvenWithANewerRecord() throws {
        // The dead member's claim is older (lower version), which would win between two live members.
        let dead = try member("a", pod: "10.244.2.0/24", version: 1, status: .dead(incarnation: 2))
        let live = try member("z", pod: "10.244.2.0/24", version: 9, status: .alive(incarnation: 0))
        let (kept, plan) = planWithRule([dead, live], [key(dead): DataPlaneSighting(lastHandshake: now - 3, receiveIdle: 1)])
        #expect(kept == ["a"])
        let owner = plan.device.peers.first { $0.allowedIPs.contains(try! IPPrefix("10.244.2.0/24")) }
        #expect(owner?.publicKey == key(live))
        #expect(plan.device.peers.first { $0.publicKey == key(dead) }?.allowedIPs == [])
        #expect(plan.conflicts == [PrefixConflict(prefix: try IPPrefix("10.244.2.0/24"), winner: "z", loser: "a")])
    }

    @Test func aKeptDeadMemberNeverTakesALiveMembersWireGuardKey() throws {
        let shared = Key.generatePrivate().publicKey()
        let dead = try member("a", pod: "10.244.2.0/24", version: 1, status: .dead(incarnation: 2), key: shared)
        let live = try member("z", pod: "10.244.5.0/24", version: 9, status: .alive(incarnation: 0), key: shared)
        let (kept, plan) = planWithRule([dead, live], [shared: DataPlaneSighting(lastHandshake: now - 3, receiveIdle: 1)])
        #expect(kept == ["a"])
        #expect(plan.device.peers.count == 1)
        #expect(plan.device.peers.first?.allowedIPs == [try IPPrefix("10.244.5.0/24")])
    }

    @Test func theLocalNodeIsNeverKept() throws {
        let me = try member("local", pod: "10.244.0.0/24", status: .dead(incarnation: 1), key: local.key.publicKey())
        let (kept, plan) = planWithRule([me], [key(me): DataPlaneSighting(lastHandshake: now - 1, receiveIdle: 0)])
        #expect(kept.isEmpty)
        #expect(plan.device.peers.isEmpty)
    }

    @Test func theRotationPlanKeepsThemToo() throws {
        let dead = try member("b", pod: "10.244.2.0/24", status: .dead(incarnation: 3))
        let plan = MeshPlanner.plan(local: local.record, privateKey: local.key, members: [dead], settings: settings,
                                    switches: [], preinstallPending: true, keepingDead: ["b"])
        #expect(plan.device.peers.map(\.publicKey) == [key(dead)])
    }
}
