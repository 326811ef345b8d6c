import ByteCodec
import IPNetwork
@testable import Membership
import Testing
import WireMeshCrypto

let testAuthority = testIdentity("cluster-authority")
let testClusterName = "test-cluster"
let testRange = try! IPPrefix("10.244.0.0/16")

func testTrust(_ revocations: RevocationList? = nil) -> ClusterTrust {
    ClusterTrust(authority: testAuthority.publicKey, clusterID: testClusterName, ranges: [testRange], revocations: revocations)
}

/// A record with the authority's certificate for exactly what it claims.
func certifiedRecord(_ name: String, index: Int, identity: SigningIdentity, version: UInt64 = 1,
                     authority: SigningIdentity = testAuthority) -> NodeRecord {
    var r = testRecord(name, index: index, identity: identity, version: version)
    r.certificate = NodeCertificate.issue(clusterID: testClusterName, name: name, identity: identity.publicKey, podCIDRs: r.podCIDRs,
                                          overlayAddress: r.overlayAddress, issuedAt: UInt64(index), authority: authority)
    return r
}

extension Pump {
    /// A node whose record carries the authority's certificate and which checks every record it takes.
    @discardableResult
    mutating func addCertified(_ name: String, index: Int, config: MembershipConfig = testConfig()) -> Endpoint {
        let identity = testIdentity(name)
        let record = certifiedRecord(name, index: index, identity: identity)
        var node = try! MembershipNode(config: config, identity: identity, record: record, seed: UInt64(index) &* 7919, now: now)
        _ = node.setTrust(testTrust(), now: now)
        let ep = record.gossipAddress
        nodes[ep] = node
        identities[ep] = identity
        order.append(ep)
        return ep
    }
}

@Suite("Cluster authority: certificates, revocations, trust")
struct CertificateTests {
    @Test func aCertificateBindsNameIdentityAndPrefixes() throws {
        let node = testIdentity("n1")
        let record = certifiedRecord("n1", index: 1, identity: node)
        let cert = try #require(record.certificate)
        #expect(cert.verify(clusterID: testClusterName, name: "n1", identity: node.publicKey, authority: testAuthority.publicKey))
        // Not for another name, identity, cluster, or signer.
        #expect(!cert.verify(clusterID: testClusterName, name: "n2", identity: node.publicKey, authority: testAuthority.publicKey))
        #expect(!cert.verify(clusterID: testClusterName, name: "n1", identity: testIdentity("x").publicKey, authority: testAuthority.publicKey))
        #expect(!cert.verify(clusterID: "other", name: "n1", identity: node.publicKey, authority: testAuthority.publicKey))
        #expect(!cert.verify(clusterID: testClusterName, name: "n1", identity: node.publicKey, authority: node.publicKey))
        // It travels inside the signed record, with the revocation serial.
        var withSerial = record
        withSerial.revocationSerial = 7
        let signed = try SignedNodeRecord(signing: withSerial, with: node)
        let decoded = try SignedNodeRecord.decode(signed.encode())
        #expect(decoded.verify() && decoded.record.certificate == cert && decoded.record.revocationSerial == 7)
        #expect(try NodeCertificate(decoding: cert.encoded) == cert)
    }

    @Test func trustRefusesEveryWayAMemberCouldClaimWhatIsNotItsOwn() throws {
        let trust = testTrust()
        let mallory = testIdentity("mallory")
        #expect(trust.refusal(for: certifiedRecord("n1", index: 1, identity: testIdentity("n1"))) == nil)
        // No certificate at all.
        #expect(trust.refusal(for: testRecord("m", index: 9, identity: mallory)) == .noCertificate("m"))
        // A certificate the member made with its own key.
        #expect(trust.refusal(for: certifiedRecord("m", index: 9, identity: mallory, authority: mallory)) == .badCertificate("m"))
        // Its genuine certificate, but claiming another node's block.
        var hijack = certifiedRecord("m", index: 9, identity: mallory)
        hijack.podCIDRs = [try IPPrefix("10.244.1.0/24")]
        #expect(trust.refusal(for: hijack) == .prefixMismatch("m"))
        // Another node's genuine certificate under a new identity (same name, new key, old clock).
        var stolen = certifiedRecord("n1", index: 1, identity: testIdentity("n1"))
        stolen.identity = mallory.publicKey
        stolen.version = 0
        #expect(trust.refusal(for: stolen) == .badCertificate("n1"))
        // Even the authority cannot grant outside the cluster range (an underlay subnet, a /8).
        var outside = testRecord("o", index: 3, identity: mallory)
        outside.podCIDRs = [try IPPrefix("192.168.0.0/16")]
        outside.certificate = .issue(clusterID: testClusterName, name: "o", identity: mallory.publicKey, podCIDRs: outside.podCIDRs,
                                     overlayAddress: nil, issuedAt: 1, authority: testAuthority)
        #expect(trust.refusal(for: outside) == .outsideRange("o", try IPPrefix("192.168.0.0/16")))
    }

    /// Dual-stack: each claimed prefix must be granted, and lie inside the cluster range of its family.
    @Test func dualStackTrustRefusesAnIPv6PrefixNotGrantedOrOutsideTheIPv6Range() throws {
        let v6Range = try IPPrefix("fd42:1::/48")
        let trust = ClusterTrust(authority: testAuthority.publicKey, clusterID: testClusterName, ranges: [testRange, v6Range])
        let node = testIdentity("d1")
        func record(_ cidrs: [String], granted: [String]? = nil) throws -> NodeRecord {
            var r = testRecord("d1", index: 1, identity: node)
            r.podCIDRs = try cidrs.map { try IPPrefix($0) }
            r.certificate = .issue(clusterID: testClusterName, name: "d1", identity: node.publicKey,
                                   podCIDRs: try (granted ?? cidrs).map { try IPPrefix($0) }, overlayAddress: nil, issuedAt: 1,
                                   authority: testAuthority)
            return r
        }
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd42:1:0:1::/64"])) == nil)
        // Its genuine certificate, claiming another node's IPv6 block beside (or instead of) its own.
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd42:1:0:1::/64", "fd42:1:0:2::/64"],
                                              granted: ["10.244.1.0/24", "fd42:1:0:1::/64"])) == .prefixMismatch("d1"))
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd42:1:0:2::/64"],
                                              granted: ["10.244.1.0/24", "fd42:1:0:1::/64"])) == .prefixMismatch("d1"))
        // An IPv4-only certificate does not grant an IPv6 block.
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd42:1:0:1::/64"], granted: ["10.244.1.0/24"])) == .prefixMismatch("d1"))
        // Even granted by the authority: outside the IPv6 range, or the IPv6 range as a whole, or the
        // IPv4-mapped form of an IPv4 block is not the IPv4 range.
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd43::/64"])) == .outsideRange("d1", try IPPrefix("fd43::/64")))
        #expect(trust.refusal(for: try record(["10.244.1.0/24", "fd42::/32"])) == .outsideRange("d1", try IPPrefix("fd42::/32")))
        #expect(trust.refusal(for: try record(["::ffff:10.244.1.0/120"])) == .outsideRange("d1", try IPPrefix("::ffff:10.244.1.0/120")))
        // An IPv4-only cluster refuses any IPv6 block.
        #expect(testTrust().refusal(for: try record(["10.244.1.0/24", "fd42:1:0:1::/64"])) == .outsideRange("d1", try IPPrefix("fd42:1:0:1::/64")))
    }

    @Test func revocationListsOnlyGrowAndOnlyTheAuthoritySignsThem() throws {
        let n1 = testIdentity("n1"), n2 = testIdentity("n2")
        let first = try RevocationList.issue(adding: .init(name: "n1", identity: n1.publicKey, evictedAt: 5), to: nil,
                                             clusterID: testClusterName, authority: testAuthority)
        let second = try RevocationList.issue(adding: .init(name: "n2", identity: n2.publicKey, evictedAt: 6), to: first,
                                              clusterID: testClusterName, authority: testAuthority)
        #expect(first.serial == 1 && second.serial == 2 && second.contains(n1.publicKey) && second.contains(n2.publicKey))
        #expect(throws: RevocationError.alreadyEvicted("n1")) {
            try RevocationList.issue(adding: .init(name: "n1", identity: n1.publicKey, evictedAt: 7), to: second,
                                     clusterID: testClusterName, authority: testAuthority)
        }
        var trust = testTrust()
        let tookSecond = trust.adopt(second), tookFirst = trust.adopt(first)
        #expect(tookSecond && trust.revocationSerial == 2)
        #expect(!tookFirst, "an older list is never taken back")
        // A member's own list, or the authority's list with an entry dropped, is refused.
        let forged = try RevocationList.issue(adding: .init(name: "x", identity: testIdentity("x").publicKey, evictedAt: 1), to: second,
                                              clusterID: testClusterName, authority: n2)
        let tookForged = trust.adopt(forged)
        #expect(!tookForged)
        var trimmed = try RevocationList.issue(adding: .init(name: "y", identity: testIdentity("y").publicKey, evictedAt: 1), to: second,
                                               clusterID: testClusterName, authority: testAuthority)
        trimmed.entries.removeFirst()
        let tookTrimmed = trust.adopt(trimmed)
        #expect(!tookTrimmed && trust.isEvicted(n1.publicKey))
        #expect(trust.refusal(for: certifiedRecord("n1", index: 1, identity: n1)) == .evicted("n1"))
        #expect(try RevocationList(decoding: second.encoded) == second)
    }

    @Test func hostileRevocationAndCertificateBytesNeverTrapOrOverAllocate() {
        // A count of 2^32 - 1 entries in 20 bytes.
        var w = ByteWriter()
        w.u32(1); w.u32(.max); w.raw([UInt8](repeating: 0, count: 12))
        #expect(throws: WireDecodeError.self) { try RevocationList(decoding: w.bytes) }
        var c = ByteWriter()
        c.u64(.max); c.u8(200)
        #expect(throws: WireDecodeError.self) { try NodeCertificate(decoding: c.bytes) }
        var rng = SeededRandom(seed: 42)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 200)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? RevocationList(decoding: bytes)
            _ = try? NodeCertificate(decoding: bytes)
        }
    }
}

/// One member's secrets in hostile hands, against cores that check the authority: every attack is
/// refused and counted, and the honest members' view does not move.
@Suite("Hostile member: the core under attack")
struct HostileMemberTests {
    func cluster() -> (Pump, [Endpoint]) {
        var pump = Pump()
        let eps = [pump.addCertified("a", index: 1), pump.addCertified("b", index: 2), pump.addCertified("c", index: 3)]
        for ep in eps.dropFirst() { pump.join(ep, seeds: [eps[0]]) }
        pump.run(for: .seconds(5))
        #expect(pump.allSee { $0.status == .alive(incarnation: 0) })
        return (pump, eps)
    }

    @Test func blockHijacksForgedCertificatesAndFloodsAreRefused() throws {
        var (pump, eps) = cluster()
        let c = testIdentity("c")  // the stolen member identity
        let mallory = testIdentity("mallory")
        var attacks: [WireMessage] = []
        // A new identity with an old clock claiming b's block (no certificate, then one it signed itself).
        var newIdentity = testRecord("m1", index: 2, identity: mallory, version: 0)
        attacks.append(.record(try SignedNodeRecord(signing: newIdentity, with: mallory)))
        newIdentity.certificate = .issue(clusterID: testClusterName, name: "m1", identity: mallory.publicKey, podCIDRs: newIdentity.podCIDRs,
                                         overlayAddress: nil, issuedAt: 0, authority: c)
        attacks.append(.record(try SignedNodeRecord(signing: newIdentity, with: mallory)))
        // c's own identity, a higher version, claiming b's block next to its genuine certificate.
        var grab = certifiedRecord("c", index: 3, identity: c, version: 50)
        grab.podCIDRs.append(try IPPrefix("10.244.2.0/24"))
        attacks.append(.record(try SignedNodeRecord(signing: grab, with: c)))
        // A prefix outside the range: a /17 of the cluster and an underlay subnet.
        var wide = certifiedRecord("c", index: 3, identity: c, version: 51)
        wide.podCIDRs = [try IPPrefix("10.244.0.0/17"), try IPPrefix("192.168.0.0/24")]
        attacks.append(.record(try SignedNodeRecord(signing: wide, with: c)))
        // c's genuine certificate next to an IPv6 block it was never granted (dual-stack claims are checked too).
        var v6Grab = certifiedRecord("c", index: 3, identity: c, version: 52)
        v6Grab.podCIDRs.append(try IPPrefix("fd42:1:0:2::/64"))
        attacks.append(.record(try SignedNodeRecord(signing: v6Grab, with: c)))
        for payload in attacks { pump.inject(forgedPayload([payload]), from: testEndpoint(99), to: eps[0]) }
        // A flood of fake members with fresh identities.
        for i in 0..<2000 {
            let id = SigningIdentity(seed: try Key(bytes: testBytes("fake-\(i)")))
            let r = testRecord("fake-\(i)", index: 100 + i % 100, identity: id)
            pump.inject(forgedPayload([.record(try SignedNodeRecord(signing: r, with: id))]), from: testEndpoint(99), to: eps[0])
        }
        pump.run(for: .seconds(5))
        let a = pump.nodes[eps[0]]!
        #expect(a.members.map(\.name) == ["b", "c"], "the view holds only the certified members")
        #expect(a.member(named: "b")!.record.record.podCIDRs == [try IPPrefix("10.244.2.0/24")])
        #expect(a.member(named: "c")!.record.record.podCIDRs == [try IPPrefix("10.244.3.0/24")])
        #expect(a.member(named: "c")!.record.record.version == 1, "c's forged versions never replaced its record")
        #expect(a.counters.rejectedUntrusted >= 2005, "\(a.counters)")
        // Nobody relayed a refused record onwards.
        #expect(pump.nodes[eps[1]]!.members.map(\.name) == ["a", "c"])
    }

    @Test func absurdVersionsAndIncarnationsDoNotTrapAndAForgedDeathIsRefuted() throws {
        var (pump, eps) = cluster()
        for name in ["a", "b"] {
            for rank in [MemberStatus.suspect(incarnation: .max), .dead(incarnation: .max), .alive(incarnation: .max)] {
                pump.inject(forgedPayload([.status(name: name, version: .max, status: rank, from: "c"),
                                           .status(name: name, version: 1, status: rank, from: "c")]),
                            from: testEndpoint(99), to: eps[0])
            }
        }
        // A forged death of b at its current version, told to a.
        pump.inject(forgedPayload([.status(name: "b", version: 1, status: .dead(incarnation: 0), from: "c")]),
                    from: testEndpoint(99), to: eps[0])
        pump.run(for: .seconds(10))
        #expect(pump.allSee { $0.status.isActive }, "b refuted the forged death; nobody is left dead")
        #expect(pump.nodes[eps[0]]!.localRecord.record.version < MembershipNode.versionLimit)
    }

    @Test func aGenuineSignatureCopiedOntoAlteredBytesDoesNotGetTheGenuineRecordRefused() throws {
        var (pump, eps) = cluster()
        let b = testIdentity("b")
        var update = certifiedRecord("b", index: 2, identity: b, version: 2)
        update.labels["zone"] = "east"
        let genuine = try SignedNodeRecord(signing: update, with: b)
        // A member saw b's update first and sends its signature on other bytes ahead of it.
        var altered = update
        altered.labels["zone"] = "west"
        let forged = SignedNodeRecord(record: altered, encodedRecord: try altered.canonicalEncoding(), signature: genuine.signature)
        let before = pump.nodes[eps[0]]!.counters
        pump.inject(forgedPayload([.record(forged)]), from: testEndpoint(99), to: eps[0])
        pump.inject(forgedPayload([.record(forged)]), from: testEndpoint(99), to: eps[0])
        pump.run(for: .milliseconds(10))
        #expect(pump.nodes[eps[0]]!.counters.rejectedBadSignature == before.rejectedBadSignature + 1)
        #expect(pump.nodes[eps[0]]!.counters.rejectedRepeated == before.rejectedRepeated + 1, "the same forgery again costs no verification")
        pump.inject(forgedPayload([.record(genuine)]), from: testEndpoint(99), to: eps[0])
        pump.run(for: .milliseconds(10))
        let seen = pump.nodes[eps[0]]!.member(named: "b")!.record.record
        #expect(seen.version == 2 && seen.labels["zone"] == "east", "the genuine update was taken")
    }

    @Test func anEvictedMemberLeavesEveryViewAndItsRecordsAreRefusedFromThenOn() throws {
        var (pump, eps) = cluster()
        let c = testIdentity("c")
        let list = try RevocationList.issue(adding: .init(name: "c", identity: c.publicKey, evictedAt: 1), to: nil,
                                            clusterID: testClusterName, authority: testAuthority)
        for ep in eps.prefix(2) { pump.with(ep) { node, now in node.setTrust(testTrust(list), now: now) } }
        #expect(pump.events(at: eps[0], kind: .evicted, name: "c").count == 1)
        // c keeps running with its full state, bumps its version, gossips on.
        pump.with(eps[2]) { node, now in (try? node.updateLocalRecord(now: now) { $0.labels["again"] = "1" }) ?? [] }
        pump.run(for: .seconds(10))
        for ep in eps.prefix(2) {
            #expect(pump.nodes[ep]!.member(named: "c") == nil, "c came back at \(ep)")
            #expect(pump.nodes[ep]!.counters.rejectedUntrusted + pump.nodes[ep]!.counters.rejectedRepeated > 0)
        }
        #expect(pump.nodes[eps[0]]!.member(named: "b")?.status.isActive == true)
    }
}

@Suite("Verifications shared by the nodes of one process (wiremesh-swarm)")
struct SharedVerificationTests {
    func node(_ name: String, index: Int, shared: SharedVerifications, revocations: RevocationList? = nil) -> MembershipNode {
        let identity = testIdentity(name)
        var n = try! MembershipNode(config: testConfig(), identity: identity, record: certifiedRecord(name, index: index, identity: identity),
                                    seed: UInt64(index), now: .zero)
        _ = n.setTrust(testTrust(revocations), now: .zero)
        n.sharedVerifications = shared
        return n
    }

    @Test("a record one node verified is taken by its siblings without verifying again; a forgery is verified, and refused, by each")
    func siblingsSkipWhatOneVerified() throws {
        let shared = SharedVerifications()
        var a = node("a", index: 1, shared: shared), b = node("b", index: 2, shared: shared)
        let m = testIdentity("m")
        let genuine = try SignedNodeRecord(signing: certifiedRecord("m", index: 3, identity: m), with: m)
        var altered = genuine.record
        altered.wireguardKey = try Key(bytes: testBytes("other"))
        let encoded = try altered.canonicalEncoding()
        let forged = SignedNodeRecord(record: altered, encodedRecord: encoded, signature: testIdentity("x").sign(NodeRecord.signingContext + encoded))
        let from = testEndpoint(3)
        _ = a.receive(payload: WireFormat.encode(.record(forged)), from: from, now: .zero + .seconds(1))
        _ = b.receive(payload: WireFormat.encode(.record(forged)), from: from, now: .zero + .seconds(1))
        #expect(a.counters.rejectedBadSignature == 1 && b.counters.rejectedBadSignature == 1)
        _ = a.receive(payload: WireFormat.encode(.record(genuine)), from: from, now: .zero + .seconds(1))
        _ = b.receive(payload: WireFormat.encode(.record(genuine)), from: from, now: .zero + .seconds(1))
        #expect(a.counters.signaturesVerified == 2 && b.counters.signaturesVerified == 1)
        #expect(a.members.contains { $0.name == "m" } && b.members.contains { $0.name == "m" })
    }

    @Test("a sibling that holds the member's eviction refuses its record even when another node verified it")
    func evictionStillRefuses() throws {
        let shared = SharedVerifications()
        let m = testIdentity("m")
        let evicted = try RevocationList.issue(adding: .init(name: "m", identity: m.publicKey, evictedAt: 5), to: nil,
                                               clusterID: testClusterName, authority: testAuthority)
        var a = node("a", index: 1, shared: shared), b = node("b", index: 2, shared: shared, revocations: evicted)
        let genuine = try SignedNodeRecord(signing: certifiedRecord("m", index: 3, identity: m), with: m)
        _ = a.receive(payload: WireFormat.encode(.record(genuine)), from: testEndpoint(3), now: .zero + .seconds(1))
        _ = b.receive(payload: WireFormat.encode(.record(genuine)), from: testEndpoint(3), now: .zero + .seconds(1))
        #expect(a.members.contains { $0.name == "m" })
        #expect(!b.members.contains { $0.name == "m" } && b.counters.rejectedUntrusted == 1)
    }
}
