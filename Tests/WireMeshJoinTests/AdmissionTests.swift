import ByteCodec
import Foundation
import IPNetwork
import Membership
import Testing
import WireMeshCrypto
@testable import WireMeshJoin

@Suite("Admission: the name and the block a joiner gets")
struct AdmissionTests {
    let settings = ClusterSettings(podRange: try! IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
    let local = NodeAssignment(name: "a", podCIDR: try! IPPrefix("10.244.1.0/24"), overlayAddress: try! IPAddress("10.244.1.0"))
    let nowMs: UInt64 = 1_800_000_000_000
    let monotonicNow = Instant(nanoseconds: 5_000_000_000_000)

    func member(_ name: String, block: String, status: MemberStatus = .alive(incarnation: 0), since: Instant? = nil) throws -> Member {
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: name, identity: identity.publicKey, version: 1_700_000_000_000,
                                wireguardKey: Key.generatePrivate().publicKey(), gossipAddress: try Endpoint("192.0.2.9:7946"),
                                podCIDRs: [try IPPrefix(block)])
        return Member(record: try SignedNodeRecord(signing: record, with: identity), status: status, since: since ?? monotonicNow)
    }

    func request(_ name: String, podCIDR: String? = nil) throws -> JoinRequest {
        let (token, _) = try JoinToken.issue(clusterID: "c1", endpoints: [try Endpoint("192.0.2.1:7946")], authority: .generate(),
                                             revocationSerial: 0, ttl: 600, uses: nil, now: Date())
        return JoinExchange.makeRequest(token: token, nodeName: name, identity: SigningIdentity.generate().publicKey,
                                        wireGuardPublicKey: Key.generatePrivate().publicKey(),
                                        requestedPodCIDR: try podCIDR.map { try IPPrefix($0) }, nonce: secureRandomBytes(24))
    }

    func candidate(_ request: JoinRequest, members: [Member], pending: [String: IPPrefix] = [:]) throws -> JoinCandidate {
        try JoinCandidate(request, members: members, local: local, settings: settings, pending: pending, nowMs: nowMs,
                          monotonicNow: monotonicNow)
    }

    @Test func aLiveMembersNameOrThisMembersOwnIsRefused() throws {
        let members = [try member("b", block: "10.244.2.0/24")]
        let refusal = JoinError.invalidRequest("a live member is already named 'b': pick another --name")
        #expect(throws: refusal) { try candidate(try request("b"), members: members) }
        #expect(throws: JoinError.self) { try candidate(try request("a"), members: members) }
        // A dead member's name is free again (its node comes back under it).
        let dead = [try member("b", block: "10.244.2.0/24", status: .dead(incarnation: 0))]
        #expect(try candidate(try request("b"), members: dead).assign(try request("b")).podCIDR == (try IPPrefix("10.244.2.0/24")),
                "it gets its own block back")
    }

    @Test func noBlockInUseIsHandedOut() throws {
        let members = [try member("b", block: "10.244.2.0/24"),
                       try member("c", block: "10.244.3.0/24", status: .dead(incarnation: 0))]
        let pending = ["d": try IPPrefix("10.244.4.0/24")]
        let taken = Set([local.podCIDR, try IPPrefix("10.244.2.0/24"), try IPPrefix("10.244.3.0/24"), try IPPrefix("10.244.4.0/24")])
        var given: Set<IPPrefix> = []
        for i in 0..<50 {
            let r = try request("new-\(i)")
            let assignment = try candidate(r, members: members, pending: pending).assign(r)
            #expect(!taken.contains(assignment.podCIDR), "\(assignment.podCIDR) is in use")
            #expect(assignment.overlayAddress == assignment.podCIDR.network.address && assignment.name == "new-\(i)")
            given.insert(assignment.podCIDR)
        }
        #expect(given.count > 1, "names spread over the range")
    }

    @Test func aDeadMembersBlockIsFreeAfterTheGracePeriod() throws {
        let longAgo = Instant(nanoseconds: monotonicNow.nanoseconds - 25 * 3600 * 1_000_000_000)
        let members = [try member("c", block: "10.244.3.0/24", status: .dead(incarnation: 0), since: longAgo)]
        let r = try request("new", podCIDR: "10.244.3.0/24")
        #expect(try candidate(r, members: members).assign(r).podCIDR == (try IPPrefix("10.244.3.0/24")))
        let recent = [try member("c", block: "10.244.3.0/24", status: .dead(incarnation: 0))]
        #expect(throws: IPAMError.self) { try candidate(r, members: recent).assign(r) }
    }

    @Test func anOperatorsBlockIsValidated() throws {
        let r = try request("new", podCIDR: "10.244.1.0/24")
        #expect(throws: IPAMError.overlaps(cidr: try IPPrefix("10.244.1.0/24"), node: "a", block: try IPPrefix("10.244.1.0/24"))) {
            try candidate(r, members: []).assign(r)
        }
        let outside = try request("new", podCIDR: "10.9.0.0/24")
        #expect(throws: IPAMError.outsideRange(cidr: try IPPrefix("10.9.0.0/24"), range: settings.podRange)) {
            try candidate(outside, members: []).assign(outside)
        }
    }
}

@Suite("MemberBlob: the member list of a grant and of members.bin")
struct MemberBlobTests {
    func records(_ n: Int) throws -> [SignedNodeRecord] {
        try (0..<n).map { i in
            let identity = SigningIdentity.generate()
            let record = NodeRecord(name: "n\(i)", identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                                    gossipAddress: try Endpoint("192.0.2.\(i + 1):7946"), podCIDRs: [try IPPrefix("10.244.\(i).0/24")])
            return try SignedNodeRecord(signing: record, with: identity)
        }
    }

    @Test func eachRecordFollowsItsBigEndianLength() throws {
        let rs = try records(3)
        let blob = MemberBlob.encode(rs)
        var expected = ByteWriter()
        for r in rs { expected.u32(UInt32(r.encode().count)); expected.raw(r.encode()) }
        #expect(blob == expected.bytes)
        #expect(Array(blob.prefix(4)) == [0, 0, UInt8(rs[0].encode().count >> 8), UInt8(rs[0].encode().count & 0xFF)])
        #expect(MemberBlob.decode(blob) == rs)
    }

    @Test func damageSkipsARecordAndATruncatedTailEndsTheList() throws {
        let rs = try records(3)
        var blob = MemberBlob.encode(rs)
        // Flip a byte inside the second record: its signature no longer verifies.
        let second = 4 + rs[0].encode().count + 4 + 10
        blob[second] ^= 0xFF
        #expect(MemberBlob.decode(blob).map(\.record.name) == ["n0", "n2"])
        let cut = Array(MemberBlob.encode(rs).dropLast(5))
        #expect(MemberBlob.decode(cut).map(\.record.name) == ["n0", "n1"])
        #expect(MemberBlob.decode([0, 0]) == [] && MemberBlob.decode([]) == [])
    }
}
