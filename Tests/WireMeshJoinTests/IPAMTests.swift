import IPNetwork
import Membership
import Testing
@testable import WireMeshJoin

@Suite("IPAM")
struct IPAMTests {
    let ipam = try! IPAM(clusterRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24, gracePeriod: 60_000)

    func claim(_ node: String, _ block: String, at: UInt64, deadSince: UInt64? = nil) -> BlockClaim {
        BlockClaim(node: node, block: try! IPPrefix(block), claimedAt: at, deadSince: deadSince)
    }

    @Test func blocksAndOverlayAddress() throws {
        #expect(ipam.blockCount == 256)
        #expect(ipam.block(at: 0).description == "10.244.0.0/24")
        #expect(ipam.block(at: 255).description == "10.244.255.0/24")
        #expect(ipam.overlayAddress(of: try IPPrefix("10.244.7.0/24")).description == "10.244.7.0")
        let v6 = try IPAM(clusterRange: try IPPrefix("fd00:1::/48"), nodePrefixLength: 64)
        #expect(v6.blockCount == 65536)
        #expect(v6.block(at: 0x1234).description == "fd00:1:0:1234::/64")
        let v6b = try IPAM(clusterRange: try IPPrefix("fd00::/56"), nodePrefixLength: 80)
        #expect(v6b.block(at: 0xABCDEF).description == "fd00:0:0:ab:cdef::/80")
    }

    @Test func invalidSettings() {
        #expect(throws: IPAMError.self) { try IPAM(clusterRange: try IPPrefix("10.244.0.1/16"), nodePrefixLength: 24) }
        #expect(throws: IPAMError.self) { try IPAM(clusterRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 8) }
        #expect(throws: IPAMError.self) { try IPAM(clusterRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 31) }
        #expect(throws: IPAMError.self) { try IPAM(clusterRange: try IPPrefix("fd00::/8"), nodePrefixLength: 64) }
    }

    @Test func allocationIsDeterministicAndCollisionFree() throws {
        var claims: [BlockClaim] = []
        var blocks = Set<IPPrefix>()
        for i in 0..<200 {
            let name = "node-\(i)"
            let block = try ipam.allocate(for: name, claims: claims, now: 1_000)
            #expect(try ipam.allocate(for: name, claims: claims, now: 1_000) == block)  // same inputs, same answer
            #expect(ipam.clusterRange.contains(block) && block.length == 24)
            #expect(blocks.insert(block).inserted, "block \(block) handed out twice")
            claims.append(claim(name, block.description, at: UInt64(i)))
        }
        // A node that already holds a standing claim keeps it.
        #expect(try ipam.allocate(for: "node-17", claims: claims, now: 1_000) == claims[17].block)
    }

    @Test func differentNamesStartAtDifferentBlocks() throws {
        // Two members admitting two nodes concurrently see the same claims; name-derived start
        // points make them pick different blocks (the double claim stays the rare case).
        let a = try ipam.allocate(for: "worker-a", claims: [], now: 0)
        let b = try ipam.allocate(for: "worker-b", claims: [], now: 0)
        #expect(a != b)
    }

    @Test func exhaustionIsAClearError() throws {
        let small = try IPAM(clusterRange: try IPPrefix("10.0.0.0/22"), nodePrefixLength: 24)
        var claims: [BlockClaim] = []
        for i in 0..<4 {
            let b = try small.allocate(for: "n\(i)", claims: claims, now: 0)
            claims.append(claim("n\(i)", b.description, at: 1))
        }
        do {
            _ = try small.allocate(for: "n4", claims: claims, now: 0)
            Issue.record("allocated a fifth /24 from a /22")
        } catch let e as IPAMError {
            #expect(e == .exhausted(range: try IPPrefix("10.0.0.0/22"), prefixLength: 24, blocks: 4))
            #expect(e.description.hasPrefix("cluster range 10.0.0.0/22 has no free /24 block left (all 4 are claimed)"))
        }
    }

    @Test func doubleClaimOlderWins() {
        let claims = [claim("late", "10.244.5.0/24", at: 200), claim("early", "10.244.5.0/24", at: 100)]
        let r = ipam.resolve(claims, now: 0)
        #expect(r.winners["early"]?.block.description == "10.244.5.0/24")
        #expect(r.winners["late"] == nil)
        #expect(r.losers.map(\.node) == ["late"])
        // The same result whatever order the claims arrive in.
        #expect(ipam.resolve(claims.reversed(), now: 0) == r)
    }

    @Test func doubleClaimTieGoesToLowerName() {
        let claims = [claim("node-b", "10.244.5.0/24", at: 100), claim("node-a", "10.244.5.0/24", at: 100)]
        let r = ipam.resolve(claims, now: 0)
        #expect(r.winners.keys.sorted() == ["node-a"])
        #expect(r.losers.map(\.node) == ["node-b"])
    }

    @Test func loserReallocatesAFreeBlock() throws {
        let claims = [claim("a", "10.244.5.0/24", at: 1), claim("b", "10.244.5.0/24", at: 2)]
        let newBlock = try ipam.allocate(for: "b", claims: claims, now: 0)
        #expect(newBlock.description != "10.244.5.0/24")
        #expect(try ipam.allocate(for: "a", claims: claims, now: 0).description == "10.244.5.0/24")
    }

    @Test func overlappingClaimOfAnotherSizeLoses() {
        let claims = [claim("wide", "10.244.4.0/23", at: 1), claim("narrow", "10.244.5.0/24", at: 2)]
        let r = ipam.resolve(claims, now: 0)
        #expect(r.losers.map(\.node) == ["narrow"])
    }

    @Test func newestClaimOfANodeCounts() {
        let claims = [claim("a", "10.244.1.0/24", at: 1), claim("a", "10.244.2.0/24", at: 5)]
        let r = ipam.resolve(claims, now: 0)
        #expect(r.winners["a"]?.block.description == "10.244.2.0/24")
        #expect(r.losers.isEmpty)
    }

    @Test func deadNodesFreeTheirBlockAfterTheGracePeriod() throws {
        let full = try IPAM(clusterRange: try IPPrefix("10.0.0.0/23"), nodePrefixLength: 24, gracePeriod: 60_000)
        let claims = [claim("alive", "10.0.0.0/24", at: 1), claim("gone", "10.0.1.0/24", at: 1, deadSince: 1_000)]
        // Within the grace period the block stays taken.
        #expect(throws: IPAMError.self) { try full.allocate(for: "new", claims: claims, now: 60_999) }
        #expect(full.resolve(claims, now: 60_999).expired.isEmpty)
        // After it, the block is free again.
        #expect(try full.allocate(for: "new", claims: claims, now: 61_000).description == "10.0.1.0/24")
        #expect(full.resolve(claims, now: 61_000).expired.map(\.node) == ["gone"])
    }

    @Test func operatorGivenCIDRIsValidated() throws {
        let claims = [claim("other", "10.244.9.0/24", at: 1)]
        try ipam.validate(try IPPrefix("10.244.10.0/24"), for: "me", claims: claims, now: 0)
        try ipam.validate(try IPPrefix("10.244.9.0/24"), for: "other", claims: claims, now: 0)  // its own block
        #expect(throws: IPAMError.outsideRange(cidr: try IPPrefix("10.245.0.0/24"), range: try IPPrefix("10.244.0.0/16"))) {
            try ipam.validate(try IPPrefix("10.245.0.0/24"), for: "me", claims: claims, now: 0)
        }
        #expect(throws: IPAMError.wrongSize(cidr: try IPPrefix("10.244.10.0/25"), expected: 24)) {
            try ipam.validate(try IPPrefix("10.244.10.0/25"), for: "me", claims: claims, now: 0)
        }
        #expect(throws: IPAMError.notAligned(cidr: try IPPrefix("10.244.10.5/24"))) {
            try ipam.validate(try IPPrefix("10.244.10.5/24"), for: "me", claims: claims, now: 0)
        }
        do {
            try ipam.validate(try IPPrefix("10.244.9.0/24"), for: "me", claims: claims, now: 0)
            Issue.record("overlap accepted")
        } catch let e as IPAMError {
            #expect(e.description == "pod CIDR 10.244.9.0/24 overlaps 10.244.9.0/24, claimed by node other: choose another block or omit --pod-cidr")
        }
        #expect(IPAMError.outsideRange(cidr: try IPPrefix("10.245.0.0/24"), range: try IPPrefix("10.244.0.0/16")).description
                == "pod CIDR 10.245.0.0/24 is outside the cluster range 10.244.0.0/16: choose a block inside 10.244.0.0/16")
    }

    @Test func ipv6RangeAllocates() throws {
        let v6 = try IPAM(clusterRange: try IPPrefix("fd00:10::/56"), nodePrefixLength: 64)
        let a = try v6.allocate(for: "a", claims: [], now: 0)
        let b = try v6.allocate(for: "b", claims: [BlockClaim(node: "a", block: a, claimedAt: 1)], now: 0)
        #expect(a != b && v6.clusterRange.contains(a) && v6.clusterRange.contains(b) && a.length == 64)
    }
}

/// A dead or departed member's claim counted from the membership core's monotonic clock, which has
/// another origin than the wall clock (issue 14: dead blocks were free at once, so a rejoin lost its block
/// and a dead node's block went to the next joiner).
@Suite struct DeadClaimClockTests {
    @Test func elapsedTimeCarriesOverBetweenTheClocks() {
        let wall: UInt64 = 1_790_000_000_000
        let mono = Instant(nanoseconds: 5_000_000_000_000)  // uptime: 5000 s
        #expect(BlockClaim.wallClock(of: Instant(nanoseconds: 4_940_000_000_000), monotonicNow: mono, wallNowMs: wall) == wall - 60_000)
        #expect(BlockClaim.wallClock(of: mono, monotonicNow: mono, wallNowMs: wall) == wall)
        // Hostile or odd values clamp instead of trapping.
        #expect(BlockClaim.wallClock(of: Instant(nanoseconds: .max), monotonicNow: mono, wallNowMs: wall) == wall)
        #expect(BlockClaim.wallClock(of: Instant(nanoseconds: .min), monotonicNow: Instant(nanoseconds: .max), wallNowMs: wall) == wall)
        #expect(BlockClaim.wallClock(of: Instant(nanoseconds: 0), monotonicNow: mono, wallNowMs: 1000) == 0)
    }

    @Test func aMemberDeadForAMinuteKeepsItsBlockAndItsNameGetsItBack() throws {
        let ipam = try IPAM(clusterRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
        let wall: UInt64 = 1_790_000_000_000
        let mono = Instant(nanoseconds: 5_000_000_000_000)
        let died = BlockClaim.wallClock(of: Instant(nanoseconds: 4_940_000_000_000), monotonicNow: mono, wallNowMs: wall)
        let block = try IPPrefix("10.244.77.0/24")
        let claims = [BlockClaim(node: "node4", block: block, claimedAt: wall - 3_600_000, deadSince: died)]
        #expect(ipam.resolve(claims, now: wall).expired.isEmpty)
        #expect(try ipam.allocate(for: "node4", claims: claims, now: wall) == block)
        #expect(try ipam.allocate(for: "other", claims: claims, now: wall) != block)
    }
}
