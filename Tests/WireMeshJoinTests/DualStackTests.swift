import Foundation
import IPNetwork
import Membership
import Testing
import WireMeshCrypto
@testable import WireMeshJoin

/// Dual-stack clusters: an IPv6 pod range beside the IPv4 one, a block of each family per node.
@Suite("Dual-stack: IPAM, admission, certificate and grant")
struct DualStackTests {
    let settings = ClusterSettings(podRange: try! IPPrefix("10.244.0.0/16"), nodePrefixLength: 24,
                                   podRangeV6: try! IPPrefix("fd42:1::/48"))
    let local = NodeAssignment(name: "a", podCIDR: try! IPPrefix("10.244.1.0/24"), overlayAddress: try! IPAddress("10.244.1.0"),
                               podCIDRV6: try! IPPrefix("fd42:1:0:1::/64"))
    let nowMs: UInt64 = 1_800_000_000_000
    let monotonicNow = Instant(nanoseconds: 5_000_000_000_000)

    func member(_ name: String, blocks: [String]) throws -> Member {
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: name, identity: identity.publicKey, version: 1_700_000_000_000,
                                wireguardKey: Key.generatePrivate().publicKey(), gossipAddress: try Endpoint("192.0.2.9:7946"),
                                podCIDRs: try blocks.map { try IPPrefix($0) })
        return Member(record: try SignedNodeRecord(signing: record, with: identity), status: .alive(incarnation: 0), since: monotonicNow)
    }

    func request(_ name: String, token: JoinToken? = nil) throws -> JoinRequest {
        let token = try token ?? JoinToken.issue(clusterID: "c1", endpoints: [try Endpoint("192.0.2.1:7946")], authority: .generate(),
                                                  revocationSerial: 0, ttl: 600, uses: nil, now: Date()).0
        return JoinExchange.makeRequest(token: token, nodeName: name, identity: SigningIdentity.generate().publicKey,
                                        wireGuardPublicKey: Key.generatePrivate().publicKey(), nonce: secureRandomBytes(24))
    }

    @Test func theDefaultIPv6BlockIsA64AndSettingsAreChecked() throws {
        #expect(settings.nodePrefixLengthV6 == 64)
        #expect(settings.podRanges == [try IPPrefix("10.244.0.0/16"), try IPPrefix("fd42:1::/48")])
        try settings.validate()
        var swapped = settings
        swapped.podRangeV6 = try IPPrefix("10.245.0.0/16")
        #expect(throws: IPAMError.self) { try swapped.validate() }
        swapped = settings
        swapped.podRange = try IPPrefix("fd43::/48")
        #expect(throws: IPAMError.self) { try swapped.validate() }
        var tooLong = settings
        tooLong.nodePrefixLengthV6 = 127
        #expect(throws: IPAMError.self) { try tooLong.validate() }
        #expect(try ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24).ipamV6() == nil)
    }

    /// A node's claims of the other family never count against it: an IPv4 IPAM that saw a node's
    /// IPv6 claim as its newest would forget the node's IPv4 block and hand it out again.
    @Test func eachFamilysIPAMResolvesOnlyItsOwnClaims() throws {
        let v4 = try IPAM(clusterRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
        let claims = [BlockClaim(node: "b", block: try IPPrefix("10.244.2.0/24"), claimedAt: 1),
                      BlockClaim(node: "b", block: try IPPrefix("fd42:1:0:2::/64"), claimedAt: 2)]
        let resolved = v4.resolve(claims, now: 0)
        #expect(resolved.winners["b"]?.block == (try IPPrefix("10.244.2.0/24")) && resolved.losers.isEmpty)
        #expect(throws: IPAMError.self) { try v4.validate(try IPPrefix("10.244.2.0/24"), for: "c", claims: claims, now: 0) }
    }

    @Test func aJoinerGetsABlockOfEachFamilyNoneInUse() throws {
        let members = [try member("b", blocks: ["10.244.2.0/24", "fd42:1:0:2::/64"])]
        var given4: Set<IPPrefix> = [], given6: Set<IPPrefix> = []
        for i in 0..<40 {
            let r = try request("new-\(i)")
            let c = try JoinCandidate(r, members: members, local: local, settings: settings,
                                      pending: ["p": try IPPrefix("10.244.3.0/24")], pendingV6: ["p": try IPPrefix("fd42:1:0:3::/64")],
                                      nowMs: nowMs, monotonicNow: monotonicNow)
            let a = try c.assign(r)
            let v6 = try #require(a.podCIDRV6)
            #expect(settings.podRange.contains(a.podCIDR) && a.podCIDR.length == 24)
            #expect(settings.podRangeV6!.contains(v6) && v6.length == 64 && v6 == v6.network)
            #expect(![local.podCIDRV6!, try IPPrefix("fd42:1:0:2::/64"), try IPPrefix("fd42:1:0:3::/64")].contains(v6), "\(v6) is in use")
            #expect(![local.podCIDR, try IPPrefix("10.244.2.0/24"), try IPPrefix("10.244.3.0/24")].contains(a.podCIDR))
            #expect(a.podCIDRs == [a.podCIDR, v6] && a.overlayAddressV6 == v6.firstAddress)
            #expect(a.overlayPrefixes == [try IPPrefix(address: a.overlayAddress, length: 32), try IPPrefix(address: v6.firstAddress, length: 128)])
            given4.insert(a.podCIDR); given6.insert(v6)
        }
        #expect(given6.count > 1, "names spread over the IPv6 range too")
    }

    @Test func anIPv4ClusterGivesNoIPv6Block() throws {
        let r = try request("x")
        let v4Only = ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
        let a = try JoinCandidate(r, members: [], local: NodeAssignment(name: "a", podCIDR: local.podCIDR, overlayAddress: local.overlayAddress),
                                  settings: v4Only, pending: [:], nowMs: nowMs, monotonicNow: monotonicNow).assign(r)
        #expect(a.podCIDRV6 == nil && a.podCIDRs == [a.podCIDR] && a.overlayPrefixes.count == 1)
    }

    /// The whole exchange: the certificate grants both blocks, the grant carries the IPv6 range and
    /// block, and the joiner checks the certificate against both.
    @Test func theCertificateAndTheGrantCarryBothBlocks() throws {
        let authority = SigningIdentity.generate()
        let member = JoinExchange.MemberContext(clusterID: "c1", settings: settings, keyring: Keyring(primary: .generate()),
                                                authority: authority, revocations: nil, members: [])
        let now = Date()
        let (token, _) = try JoinToken.issue(clusterID: "c1", endpoints: [try Endpoint("192.0.2.1:7946")], authority: authority,
                                             revocationSerial: 0, ttl: 600, uses: nil, now: now)
        let r = try request("b", token: token)
        let candidate = try JoinCandidate(r, members: [], local: local, settings: settings, pending: [:], nowMs: nowMs, monotonicNow: monotonicNow)
        let admission = try JoinExchange.admit(r, token: nil, usedNonces: [], member: member, now: now,
                                               memberNonce: secureRandomBytes(24), assign: candidate.assign)
        #expect(admission.certificate.podCIDRs == admission.assignment.podCIDRs && admission.certificate.podCIDRs.count == 2)
        let grant = try JoinExchange.accept(admission.response, for: r, token: token)
        #expect(grant.settings == settings && grant.assignment == admission.assignment)
        #expect(grant.assignment.podCIDRV6 != nil)
    }

    /// A grant of an IPv4 cluster has no IPv6 field at all (older joiners read it unchanged).
    @Test func anIPv4GrantHasNoIPv6Fields() throws {
        let grant = JoinGrant(clusterID: "c1", settings: ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24),
                              assignment: NodeAssignment(name: "b", podCIDR: try IPPrefix("10.244.2.0/24"), overlayAddress: try IPAddress("10.244.2.0")),
                              keyring: Keyring(primary: .generate()), authority: SigningIdentity.generate().publicKey,
                              certificate: NodeCertificate(podCIDRs: [], overlayAddress: nil, issuedAt: 0, signature: try Signature(bytes: [UInt8](repeating: 0, count: 64))),
                              revocations: nil, members: [])
        let text = String(decoding: try grant.encoded(), as: UTF8.self)
        #expect(!text.contains("_v6"), "\(text)")  // the keys; base64 may hold "v6"
        var dual = grant
        dual.settings = settings
        #expect(throws: JoinError.self) { try JoinGrant.decode(try dual.encoded()) }  // an IPv6 range without a block
        dual.assignment.podCIDRV6 = try IPPrefix("fd42:1:0:2::/64")
        #expect(try JoinGrant.decode(try dual.encoded()).assignment.podCIDRV6 == (try IPPrefix("fd42:1:0:2::/64")))
    }
}
