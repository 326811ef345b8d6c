import IPNetwork
import WireMeshCrypto

/// The pure SWIM + Lifeguard membership state machine of one node, with its wire codec and sealing.
///
/// No sockets, no clock, no randomness it was not given: every input (datagram, timer tick, local
/// change) comes with `now`, and every output is a `Directive` the shell executes.
public struct MembershipNode {
    /// The protocol knobs this node runs with.
    public let config: MembershipConfig
    /// Cluster keys: seals with the primary, opens with any (replace to rotate the cluster key).
    public var keyring: Keyring
    /// Counters of traffic and refusals.
    public private(set) var counters = MembershipCounters()
    let identity: SigningIdentity
    let clusterID: [UInt8]
    var rng: SeededRandom
    var local: SignedNodeRecord

    /// Creates the node. Throws if `record` is invalid, does not name `identity`, or is too large.
    public init(config: MembershipConfig, identity: SigningIdentity, record: NodeRecord, keyring: Keyring,
                clusterID: [UInt8], seed: UInt64, now: Instant) throws(MembershipError) {
        self.config = config
        self.keyring = keyring
        self.identity = identity
        self.clusterID = clusterID
        self.rng = SeededRandom(seed: seed)
        do { self.local = try SignedNodeRecord(signing: record, with: identity) } catch { throw .record(error) }
    }

    /// Contacts `seeds` (gossip addresses) to join the cluster.
    public mutating func join(seeds: [Endpoint], now: Instant) -> [Directive] { [] }

    /// Handles one datagram received from `from`.
    public mutating func receive(datagram: [UInt8], from: Endpoint, now: Instant) -> [Directive] { [] }

    /// Runs every timer due at `now` (probe, gossip, anti-entropy, suspicion, reaping).
    public mutating func tick(now: Instant) -> [Directive] { [] }

    /// Changes the local record: bumps its version, re-signs and disseminates it.
    public mutating func updateLocalRecord(now: Instant, _ change: (inout NodeRecord) -> Void) throws(MembershipError) -> [Directive] { [] }

    /// Leaves the cluster gracefully with a signed leave notice.
    public mutating func leave(now: Instant) -> [Directive] { [] }

    /// Installs a trusted view (saved state, or a converged start for benchmarks) without verifying signatures.
    public mutating func seed(with records: [SignedNodeRecord], now: Instant) {}

    /// Every other member this node knows (alive, suspect, dead or left, not yet reaped).
    public var members: [Member] { [] }

    /// This node's own signed record.
    public var localRecord: SignedNodeRecord { local }
}
