/// Every timing and knob of the membership protocol.
///
/// Durations that Lifeguard scales by the local health multiplier (probe interval, probe timeout)
/// are the healthy values; the node stretches them itself when it believes it is slow.
public struct MembershipConfig: Sendable, Equatable {
    /// How often a node probes one member (SWIM protocol period).
    public var probeInterval: Duration
    /// How long to wait for a direct ack before asking `indirectChecks` members to probe.
    public var probeTimeout: Duration
    /// How many members are asked to probe indirectly (SWIM k).
    public var indirectChecks: Int
    /// Independent suspicions (beyond the first) that shrink a suspicion timeout to its floor
    /// (Lifeguard k; memberlist uses suspicionMultiplier − 2). Treated as 0 below k + 2 members.
    public var suspicionConfirmations: Int
    /// Suspicion timeout floor = suspicionMultiplier × max(1, log10(N)) × probeInterval.
    public var suspicionMultiplier: Double
    /// Suspicion timeout ceiling = suspicionMaxMultiplier × the floor (Lifeguard dogpile start).
    public var suspicionMaxMultiplier: Double
    /// Per-update piggyback limit = retransmitMultiplier × ceil(log10(N + 1)).
    public var retransmitMultiplier: Int
    /// How often pending updates are pushed to `gossipNodes` random members.
    public var gossipInterval: Duration
    /// How many members each gossip round reaches.
    public var gossipNodes: Int
    /// How often a digest summary is sent to a random member (anti-entropy).
    public var antiEntropyInterval: Duration
    /// When true, the anti-entropy interval grows like memberlist's push/pull: × ceil(log2(N/32)+1) above 32 nodes.
    public var scaleAntiEntropyWithClusterSize: Bool
    /// Probability that an anti-entropy round also sends its digest to a dead member (besides a live
    /// one), so that both sides of a healed partition find each other (Serf's "reconnect").
    public var antiEntropyDeadProbability: Double
    /// Number of hash buckets in a digest summary (power of two, 1...64).
    public var digestBuckets: Int
    /// Dead members keep receiving gossip this long after being declared dead.
    public var gossipToTheDead: Duration
    /// Dead or left members stay in the view this long, then become tombstones.
    public var reapTime: Duration
    /// Tombstones (identity + last version) are kept this long, then forgotten.
    public var tombstoneTime: Duration
    /// Largest UDP payload ever produced, after sealing (1200 never fragments on IPv6 paths).
    public var maxDatagram: Int
    /// Bytes the shell's sealing adds to each payload (`DatagramSeal.overhead`): the core packs
    /// payloads of at most `maxDatagram - sealOverhead` bytes.
    public var sealOverhead: Int = DatagramSeal.overhead
    /// Upper bound of the Lifeguard local health multiplier (memberlist AwarenessMaxMultiplier).
    public var awarenessMaxMultiplier: Int
    /// An intermediary sends a nack after this fraction of the probe timeout without an ack.
    public var nackFraction: Double
    /// Direct pings sent again to a probe target that has not acked by the probe timeout: the first
    /// with the indirect probes, the others spread over the rest of the period (0: none, as in
    /// memberlist). Without them 10 % loss fails ~0.8 % of probes through 3 indirect paths, and at
    /// N = 1000 every such suspicion and its refutation reach the whole cluster (6.0 KB/s per node);
    /// each retry divides the suspicions by ~5 at the cost of a ping and an ack on the probes still
    /// failing (3: 0.74 KB/s without stream probes, 0.69 with). Suspicions still start at the end of
    /// the period: crash detection does not wait for them.
    public var probeRetries: Int = 3
    /// With the last retry, the ping also goes over a stream (TCP), like memberlist's fallback:
    /// TCP retransmits what UDP loses (`Directive.streamProbe`; a shell without streams ignores it).
    public var streamProbes: Bool = true
    /// Stream probes answered per probe interval at most (more are refused): each costs a connection.
    public var streamProbeAnswersPerInterval: Int = 8
    /// A node still holding a suspicion this long before its deadline tells the suspect directly
    /// (again at half of it); a suspect that refuted already answers with its alive claim. Guards
    /// against the observer that gossip of the refutation missed (zero: off, as in memberlist). Crash
    /// detection does not wait for it.
    public var suspicionCheckLead: Duration = .seconds(1)
    /// Most members a view holds (this node excluded): anyone holding the cluster key can sign records
    /// for new names, and without a bound each one costs memory and probes.
    public var maxMembers: Int = 4096
    /// A digest summary differing from ours in at least this many buckets starts a push/pull with its
    /// sender (0: never): both views are far apart (a healed partition, a joiner), and a whole-state
    /// swap over a stream carries in one exchange what datagrams carry in dozens.
    public var pushPullDifferingBuckets: Int = 0
    /// Whether this node starts push/pulls (with `pushPullDifferingBuckets` > 0 it answers them
    /// either way). Off only in `wiremesh-swarm`'s answer-only members.
    public var pushPullStarts = true
    /// A digest answer showing this node behind on at least this many members of one bucket starts a
    /// push/pull with its sender, when the sender did not start one itself (over its rate or bound):
    /// a joiner-heavy view or a heal, not the few claims a lossy network leaves behind.
    public var pushPullBehindMembers = 16
    /// Largest push/pull payload sent or accepted (either direction), before sealing (sealed and in
    /// base64 it fits one line-port line; claims about 1000 members with 16-byte names;
    /// a larger view is sent from a random member on, so successive swaps cover it all).
    public var pushPullMaxBytes: Int = 45 * 1024
    /// Least time between two push/pulls this node starts, and the window in which it answers at
    /// most `pushPullAnswersPerInterval` of them.
    public var pushPullInterval: Duration = .seconds(1)
    /// Push/pull requests answered per `pushPullInterval` at most (more are refused).
    public var pushPullAnswersPerInterval: Int = 4
    /// A push/pull without a reply after this long is given up (the peer may try again later).
    public var pushPullTimeout: Duration = .seconds(5)
    /// After an exchange that taught this node something (a push/pull that changed its view, a digest
    /// exchange that found it behind), the next anti-entropy round comes within this long instead of
    /// a whole interval (0: no hurry; only with push/pull on): a node keeps exchanging while exchanges
    /// teach it something and falls back to the quiet cadence once views agree.
    public var pushPullFollowUp: Duration = .zero
    /// How much an exchange must teach (members changed or asked for) to hurry the next round: under
    /// loss every exchange teaches a little, after a heal or in a join a lot.
    public var pushPullFollowUpChanges: Int = 8

    /// Creates a configuration from explicit values; see `wiremeshDefaults` for sensible ones.
    public init(probeInterval: Duration, probeTimeout: Duration, indirectChecks: Int, suspicionConfirmations: Int, suspicionMultiplier: Double,
                suspicionMaxMultiplier: Double, retransmitMultiplier: Int, gossipInterval: Duration, gossipNodes: Int,
                antiEntropyInterval: Duration, scaleAntiEntropyWithClusterSize: Bool, antiEntropyDeadProbability: Double,
                digestBuckets: Int, gossipToTheDead: Duration, reapTime: Duration, tombstoneTime: Duration,
                maxDatagram: Int = 1200, awarenessMaxMultiplier: Int = 8, nackFraction: Double = 0.8) {
        self.probeInterval = probeInterval
        self.probeTimeout = probeTimeout
        self.indirectChecks = indirectChecks
        self.suspicionConfirmations = suspicionConfirmations
        self.suspicionMultiplier = suspicionMultiplier
        self.suspicionMaxMultiplier = suspicionMaxMultiplier
        self.retransmitMultiplier = retransmitMultiplier
        self.gossipInterval = gossipInterval
        self.gossipNodes = gossipNodes
        self.antiEntropyInterval = antiEntropyInterval
        self.scaleAntiEntropyWithClusterSize = scaleAntiEntropyWithClusterSize
        self.antiEntropyDeadProbability = antiEntropyDeadProbability
        self.digestBuckets = digestBuckets
        self.gossipToTheDead = gossipToTheDead
        self.reapTime = reapTime
        self.tombstoneTime = tombstoneTime
        self.maxDatagram = maxDatagram
        self.awarenessMaxMultiplier = awarenessMaxMultiplier
        self.nackFraction = nackFraction
    }

    /// wiremesh's defaults: memberlist's LAN probing plus three direct retries and a stream probe within
    /// a failing probe's period and a direct check with a suspect before its suspicion expires (at 10 %
    /// loss and N = 1000: 0.66 KB/s per node instead of 6.1, no false death), a shorter suspicion window (a dead peer costs
    /// traffic, so it is detected within seconds) and frequent small digest exchanges instead of rare
    /// full push/pulls, so partitions heal in seconds at a fraction of the bandwidth (every round also
    /// reaches one dead member while there are any: one small datagram per node every 5 s).
    public static var wiremeshDefaults: MembershipConfig {
        MembershipConfig(
            probeInterval: .seconds(1), probeTimeout: .milliseconds(500), indirectChecks: 3,
            suspicionConfirmations: 3, suspicionMultiplier: 1.5, suspicionMaxMultiplier: 4, retransmitMultiplier: 4,
            gossipInterval: .milliseconds(200), gossipNodes: 3,
            antiEntropyInterval: .seconds(5), scaleAntiEntropyWithClusterSize: false, antiEntropyDeadProbability: 1,
            digestBuckets: 32, gossipToTheDead: .seconds(30), reapTime: .seconds(3600), tombstoneTime: .seconds(86_400))
    }

    /// `wiremeshDefaults` plus push/pull over a stream when two views differ in a quarter of the
    /// buckets, and anti-entropy within a second after any exchange that taught something (heal of
    /// 1000 nodes 4.6 s against 8.9, the same bytes quiet and at 10 % loss, a mass join of 1000 into
    /// real agents in 30 s against 47; BENCHMARKS.md). The agent's default (`AgentConfig.pushPull`).
    public static var wiremeshPushPull: MembershipConfig {
        var c = wiremeshDefaults
        c.pushPullDifferingBuckets = c.digestBuckets / 4
        c.pushPullFollowUp = .seconds(1)
        c.pushPullFollowUpChanges = 1
        return c
    }

    /// hashicorp/memberlist `DefaultLANConfig` (with Serf's reconnect of failed members for 24 h):
    /// probe 1 s, timeout 500 ms, 3 indirect, suspicion ×4 (log10 N) up to ×6, retransmit ×4,
    /// push/pull 30 s scaled with cluster size, gossip every 200 ms to 3 nodes, dead gossip 30 s.
    public static var memberlistLAN: MembershipConfig {
        var c = MembershipConfig(
            probeInterval: .seconds(1), probeTimeout: .milliseconds(500), indirectChecks: 3,
            suspicionConfirmations: 2, suspicionMultiplier: 4, suspicionMaxMultiplier: 6, retransmitMultiplier: 4,
            gossipInterval: .milliseconds(200), gossipNodes: 3,
            antiEntropyInterval: .seconds(30), scaleAntiEntropyWithClusterSize: true, antiEntropyDeadProbability: 0.5,
            digestBuckets: 64, gossipToTheDead: .seconds(30), reapTime: .seconds(86_400), tombstoneTime: .seconds(86_400))
        // The baseline stays what it was measured as: one direct ping, no stream (memberlist's TCP
        // fallback is not modelled).
        c.probeRetries = 0
        c.streamProbes = false
        c.suspicionCheckLead = .zero
        return c
    }

    /// Retransmit limit for one update in a cluster of `n` members.
    public func retransmitLimit(clusterSize n: Int) -> Int {
        retransmitMultiplier * ceilLog10(n + 1)
    }

    /// Lifeguard/memberlist suspicion floor for a cluster of `n` members.
    public func suspicionMinimum(clusterSize n: Int) -> Duration {
        // Like memberlist: the node scale in thousandths (rounded, so log10(1000) is exactly 3).
        let scale = (max(1.0, log10Double(Double(max(1, n)))) * 1000).rounded() / 1000
        return .nanoseconds(Int64((Double(probeInterval.wmNanoseconds) * suspicionMultiplier * scale).rounded()))
    }

    /// Anti-entropy interval for a cluster of `n` members (memberlist's pushPullScale when enabled).
    public func antiEntropyInterval(clusterSize n: Int) -> Duration {
        guard scaleAntiEntropyWithClusterSize, n > 32 else { return antiEntropyInterval }
        let multiplier = (log2Double(Double(n)) - log2Double(32)).rounded(.up) + 1
        return antiEntropyInterval.wmScaled(multiplier)
    }
}

/// ceil(log10(x)) for x ≥ 1, exact (the smallest d with 10^d ≥ x).
func ceilLog10(_ x: Int) -> Int {
    var d = 0
    var p = 1
    while p < x { p = p.multipliedReportingOverflow(by: 10).overflow ? Int.max : p * 10; d += 1 }
    return d
}

/// log10 without Foundation.
func log10Double(_ x: Double) -> Double { lnDouble(x) / 2.302585092994046 }
func log2Double(_ x: Double) -> Double { lnDouble(x) / 0.6931471805599453 }

/// Natural logarithm (argument reduction to [1, 2) plus an atanh series): the core stays free of
/// Foundation and libm differences between platforms.
func lnDouble(_ x: Double) -> Double {
    guard x > 0, x.isFinite else { return x == 0 ? -.infinity : .nan }
    let e = Double(x.exponent)
    let m = x.significand            // in [1, 2)
    let y = (m - 1) / (m + 1)
    let y2 = y * y
    var term = y
    var sum = 0.0
    var k = 1.0
    for _ in 0..<30 {
        sum += term / k
        term *= y2
        k += 2
    }
    return 2 * sum + e * 0.6931471805599453
}
