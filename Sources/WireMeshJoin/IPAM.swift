import IPNetwork
import Membership
import WireMeshCrypto

/// One node's claim on a pod block, as seen in its signed node record.
public struct BlockClaim: Sendable, Hashable {
    /// The claiming node's name.
    public var node: String
    /// The claimed pod block.
    public var block: IPPrefix
    /// When the claim was made (Unix milliseconds, from the claimer's record). Older wins a conflict.
    public var claimedAt: UInt64
    /// When the node was last seen alive if it is now dead (Unix milliseconds); nil while alive.
    public var deadSince: UInt64?

    /// A member's `since` (the membership core's monotonic clock) as Unix milliseconds, for `deadSince`:
    /// the two clocks have different origins, so only the time elapsed carries over.
    public static func wallClock(of since: Membership.Instant, monotonicNow: Membership.Instant, wallNowMs: UInt64) -> UInt64 {
        let (elapsed, overflow) = monotonicNow.nanoseconds.subtractingReportingOverflow(since.nanoseconds)
        let elapsedMs = overflow || elapsed < 0 ? 0 : UInt64(elapsed / 1_000_000)
        return wallNowMs >= elapsedMs ? wallNowMs - elapsedMs : 0
    }

    public init(node: String, block: IPPrefix, claimedAt: UInt64, deadSince: UInt64? = nil) {
        self.node = node
        self.block = block
        self.claimedAt = claimedAt
        self.deadSince = deadSince
    }
}

/// Why a pod block could not be allocated or accepted.
public enum IPAMError: Error, Equatable, CustomStringConvertible {
    case invalidSettings(String)
    case exhausted(range: IPPrefix, prefixLength: Int, blocks: UInt64)
    case outsideRange(cidr: IPPrefix, range: IPPrefix)
    case wrongSize(cidr: IPPrefix, expected: Int)
    case notAligned(cidr: IPPrefix)
    case overlaps(cidr: IPPrefix, node: String, block: IPPrefix)

    public var description: String {
        switch self {
        case .invalidSettings(let what):
            return "invalid pod range settings: \(what)"
        case .exhausted(let range, let len, let blocks):
            return "cluster range \(range) has no free /\(len) block left (all \(blocks) are claimed): remove dead nodes with 'wiremesh leave', wait for the grace period, or create the cluster with a larger --cluster-cidr or a longer --node-prefix"
        case .outsideRange(let cidr, let range):
            return "pod CIDR \(cidr) is outside the cluster range \(range): choose a block inside \(range)"
        case .wrongSize(let cidr, let expected):
            return "pod CIDR \(cidr) has the wrong size: this cluster gives each node a /\(expected)"
        case .notAligned(let cidr):
            return "pod CIDR \(cidr) has host bits set: did you mean \(cidr.network)?"
        case .overlaps(let cidr, let node, let block):
            return "pod CIDR \(cidr) overlaps \(block), claimed by node \(node): choose another block or omit --pod-cidr"
        }
    }
}

/// Serverless pod-block management: pure functions over the claims every member sees.
///
/// - Each node owns one block of `nodePrefixLength` bits inside `clusterRange`.
/// - A new node's block is picked by the admitting member (`allocate`): the search starts at a
///   position derived from the node's name and probes upward, so two members admitting two different
///   nodes at the same time rarely pick the same block; when they do, `resolve` settles it the same
///   way on every member (older claim wins; same time → lower node name) and the loser re-allocates.
/// - A block whose node has been dead longer than `gracePeriod` is free again.
/// - The overlay address of a node is its block's first (network) address, as a /32 or /128 on the
///   WireGuard interface. flannel does the same: it leaves `.1` to the CNI bridge gateway, and the
///   address lies inside the block already routed to the node, so no extra allowed IP is needed.
public struct IPAM: Sendable, Equatable {
    /// The cluster pod range blocks are carved from.
    public let clusterRange: IPPrefix
    /// Prefix length of each node's block.
    public let nodePrefixLength: Int
    /// How long a dead node keeps its block (milliseconds).
    public let gracePeriod: UInt64

    /// The largest number of blocks a range may be split into (2^32), to keep indexes in 64 bits.
    public static let maxBlockBits = 32

    /// Validates the settings: an aligned range, node blocks inside it with room for pods, at most 2^32 blocks.
    public init(clusterRange: IPPrefix, nodePrefixLength: Int, gracePeriod: UInt64 = 24 * 3600 * 1000) throws {
        let width = clusterRange.address.bitWidth
        // The cluster range is routed into the WireGuard interface: all of it would take the node off its network.
        guard clusterRange.length > 0 else {
            throw IPAMError.invalidSettings("cluster range \(clusterRange) is the whole address space: choose a private range such as 10.244.0.0/16")
        }
        guard clusterRange.address == clusterRange.network.address else {
            throw IPAMError.invalidSettings("cluster range \(clusterRange) has host bits set: did you mean \(clusterRange.network)?")
        }
        guard nodePrefixLength >= clusterRange.length else {
            throw IPAMError.invalidSettings("node prefix /\(nodePrefixLength) is larger than the cluster range \(clusterRange)")
        }
        guard nodePrefixLength <= width - 2 else {
            throw IPAMError.invalidSettings("node prefix /\(nodePrefixLength) leaves no room for pods (at most /\(width - 2))")
        }
        guard nodePrefixLength - clusterRange.length <= Self.maxBlockBits else {
            throw IPAMError.invalidSettings("cluster range \(clusterRange) split into /\(nodePrefixLength) gives more than 2^\(Self.maxBlockBits) blocks")
        }
        self.clusterRange = clusterRange
        self.nodePrefixLength = nodePrefixLength
        self.gracePeriod = gracePeriod
    }

    /// The number of node blocks in the range.
    public var blockCount: UInt64 { UInt64(1) << UInt64(nodePrefixLength - clusterRange.length) }

    /// The `index`-th block of the range (0-based).
    public func block(at index: UInt64) -> IPPrefix {
        let hostBits = clusterRange.address.bitWidth - nodePrefixLength
        let address: IPAddress
        switch clusterRange.address {
        case .v4(let base):
            address = .v4(base | UInt32(truncatingIfNeeded: index << UInt64(hostBits)))
        case .v6(let hi, let lo):
            // index has at most 32 bits; shifted by hostBits it may straddle the two halves.
            let wide = (hi: hostBits >= 64 ? index << UInt64(hostBits - 64) : (hostBits == 0 ? 0 : index >> UInt64(64 - hostBits)),
                        lo: hostBits >= 64 ? 0 : index << UInt64(hostBits))
            address = .v6(hi | wide.hi, lo | wide.lo)
        }
        return try! IPPrefix(address: address, length: nodePrefixLength)
    }

    /// The overlay (WireGuard interface) address reserved in a block: its first address.
    public func overlayAddress(of block: IPPrefix) -> IPAddress { block.network.address }

    /// Settles conflicting claims (of this range's family; others are ignored): claims are taken oldest first (same time: lower node name, then
    /// lower block), and a claim that overlaps an already accepted one loses. A node counts with its
    /// most recent claim only; claims of nodes dead longer than the grace period are dropped.
    /// Every member computes the same result from the same claims.
    public func resolve(_ claims: [BlockClaim], now: UInt64) -> Resolution {
        var latest: [String: BlockClaim] = [:]
        // A dual-stack node claims a block of each family: each family's IPAM sees only its own.
        for c in claims where c.block.address.family == clusterRange.address.family {
            if let existing = latest[c.node], (existing.claimedAt, existing.block) >= (c.claimedAt, c.block) { continue }
            latest[c.node] = c
        }
        var expired: [BlockClaim] = []
        var live: [BlockClaim] = []
        for c in latest.values {
            if let dead = c.deadSince, now >= dead, now - dead >= gracePeriod { expired.append(c) } else { live.append(c) }
        }
        live.sort { ($0.claimedAt, $0.node, $0.block) < ($1.claimedAt, $1.node, $1.block) }
        var winners: [String: BlockClaim] = [:]
        var accepted = BlockSet(nodePrefixLength: nodePrefixLength)
        var losers: [BlockClaim] = []
        for c in live {
            if accepted.overlaps(c.block.network) {
                losers.append(c)
            } else {
                accepted.insert(c.block.network)
                winners[c.node] = c
            }
        }
        return Resolution(winners: winners, losers: losers, expired: expired.sorted { $0.node < $1.node })
    }

    /// The outcome of `resolve`.
    public struct Resolution: Sendable, Equatable {
        /// Each node's block that stands.
        public var winners: [String: BlockClaim]
        /// Claims that lost a conflict: those nodes must allocate again.
        public var losers: [BlockClaim]
        /// Claims of nodes dead past the grace period: their blocks are free.
        public var expired: [BlockClaim]
    }

    /// Picks a block for `node`: the block it already holds if its claim stands, else a free one.
    /// Deterministic for the same node name and claims.
    public func allocate(for node: String, claims: [BlockClaim], now: UInt64) throws -> IPPrefix {
        let resolution = resolve(claims, now: now)
        if let mine = resolution.winners[node], isValidBlock(mine.block) { return mine.block.network }
        var taken = BlockSet(nodePrefixLength: nodePrefixLength)
        for c in resolution.winners.values where c.node != node { taken.insert(c.block.network) }
        let count = blockCount
        let start = startIndex(for: node) % count
        // At most `taken.count + 1` probes are needed before a free block shows up (or all are taken).
        let probes = min(count, UInt64(taken.count) + 1)
        var index = start
        for _ in 0..<probes {
            let candidate = block(at: index)
            if !taken.overlaps(candidate) { return candidate }
            index = (index + 1) % count
        }
        // Fall back to a full scan: taken blocks may not be aligned to our grid (operator-given).
        if probes < count {
            var i = (start + probes) % count
            for _ in 0..<(count - probes) {
                let candidate = block(at: i)
                if !taken.overlaps(candidate) { return candidate }
                i = (i + 1) % count
            }
        }
        throw IPAMError.exhausted(range: clusterRange, prefixLength: nodePrefixLength, blocks: count)
    }

    /// The assignment for `node`: the operator's `requested` block (`--pod-cidr`) once `validate`
    /// accepts it, else the block `allocate` picks; the overlay address is the block's first.
    public func assign(_ node: String, requested: IPPrefix?, claims: [BlockClaim], now: UInt64) throws -> NodeAssignment {
        let block: IPPrefix
        if let requested {
            try validate(requested, for: node, claims: claims, now: now)
            block = requested.network
        } else {
            block = try allocate(for: node, claims: claims, now: now)
        }
        return NodeAssignment(name: node, podCIDR: block, overlayAddress: overlayAddress(of: block))
    }

    /// Checks an operator-given pod CIDR (`--pod-cidr`) for `node`: inside the range, the cluster's
    /// block size, no host bits, and no overlap with another node's standing claim.
    public func validate(_ cidr: IPPrefix, for node: String, claims: [BlockClaim], now: UInt64) throws {
        guard clusterRange.contains(cidr) else { throw IPAMError.outsideRange(cidr: cidr, range: clusterRange) }
        guard cidr.length == nodePrefixLength else { throw IPAMError.wrongSize(cidr: cidr, expected: nodePrefixLength) }
        guard cidr.address == cidr.network.address else { throw IPAMError.notAligned(cidr: cidr) }
        let resolution = resolve(claims, now: now)
        let others = resolution.winners.values.filter { $0.node != node }.sorted { $0.node < $1.node }
        if let clash = others.first(where: { $0.block.network.overlaps(cidr) }) {
            throw IPAMError.overlaps(cidr: cidr, node: clash.node, block: clash.block)
        }
    }

    private func isValidBlock(_ b: IPPrefix) -> Bool {
        clusterRange.contains(b) && b.length == nodePrefixLength
    }

    /// A stable position in the range derived from the node's name (BLAKE2b, first 8 bytes).
    func startIndex(for node: String) -> UInt64 {
        KeyDerivation.genericHash(Array(node.utf8), outputLength: 16).prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
    }
}

/// Blocks already taken: grid-sized blocks in a hash set (the common case, O(1) per check), any
/// other size (an operator's or a malformed claim) checked by overlap.
struct BlockSet {
    let nodePrefixLength: Int
    private var exact = Set<IPPrefix>()
    private var other: [IPPrefix] = []

    init(nodePrefixLength: Int) { self.nodePrefixLength = nodePrefixLength }

    var count: Int { exact.count + other.count }

    mutating func insert(_ block: IPPrefix) {
        if block.length == nodePrefixLength { exact.insert(block) } else { other.append(block) }
    }

    func overlaps(_ block: IPPrefix) -> Bool {
        if block.length == nodePrefixLength {
            if exact.contains(block) { return true }
        } else if exact.contains(where: { $0.overlaps(block) }) {
            return true
        }
        return other.contains { $0.overlaps(block) }
    }
}
