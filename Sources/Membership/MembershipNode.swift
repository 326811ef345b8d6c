import IPNetwork
import WireMeshCrypto

/// The pure SWIM + Lifeguard membership state machine of one node.
///
/// No sockets, no clock, no keys, no randomness it was not given: every input (plaintext payload,
/// timer tick, local change) comes with `now`, and every output is a `Directive` the shell executes.
/// The shell seals outgoing payloads and opens incoming datagrams (`DatagramSeal`), so equal seeds
/// and inputs give equal outputs, byte for byte.
///
/// It composes the member table with its digest index (`MemberTable`), the dissemination queue
/// (`BroadcastQueue`) and the Lifeguard suspicions (`Suspicions`); message handling, failure
/// detection and anti-entropy live in extensions beside this file.
///
/// Protocol summary:
/// - Failure detection (SWIM): each protocol period probes the next member of a shuffled round-robin
///   order; without an ack within the probe timeout, `indirectChecks` members probe it on our behalf
///   (ping-req) while we ping it directly again (`probeRetries`, the last one also over a stream);
///   without any ack by the end of the period the member becomes suspect; a suspect that
///   does not refute (higher incarnation) before its suspicion timeout is declared dead.
/// - Lifeguard: a local health multiplier stretches the period and timeout when this node misses acks
///   or nacks or has to refute; a suspicion timeout starts at its maximum and shrinks towards its
///   minimum as independent members confirm the suspicion; a suspect target is told in the ping itself.
/// - Dissemination: every change is piggybacked on outgoing datagrams and pushed to `gossipNodes`
///   members every `gossipInterval`, up to `retransmitMultiplier × ceil(log10(N + 1))` times.
/// - Anti-entropy: a 32-bit fingerprint per name-hash bucket is sent to a random member (sometimes a
///   dead one, so healed partitions meet); the receiver lists its entries for differing buckets and the
///   two sides push and pull exactly the members that differ.
/// - Records are owner-signed; a name stays bound to its first identity until that member leaves or is
///   reaped; reaped members leave a tombstone so they only return with a higher record version.
public struct MembershipNode {
    /// The protocol knobs this node runs with.
    public let config: MembershipConfig
    /// Counters of traffic and refusals.
    public internal(set) var counters = MembershipCounters()

    let identity: SigningIdentity
    var rng: SeededRandom

    // MARK: Local node
    var local: SignedNodeRecord
    var incarnation: UInt64 = 0
    let localHash: UInt64
    var hasLeft = false
    var leaveNotice: LeaveNotice?
    var seeds: [Endpoint] = []

    // MARK: View
    var table: MemberTable
    var suspicions = Suspicions()
    var tombstones: [String: Tombstone] = [:]
    var tombstoneByHash: [UInt64: String] = [:]
    var failedSignatures: Set<[UInt8]> = []
    /// Verifications shared with other nodes of this process (`wiremesh-swarm` only; nil in agents).
    public var sharedVerifications: SharedVerifications?
    /// What records must satisfy besides their owner's signature (nil: nothing, as in benchmarks).
    public internal(set) var trust: ClusterTrust?

    // MARK: Failure detection
    var probeOrder: [String] = []
    var probeIndex = 0
    var probe: ProbeState?
    var nextProbeAt: Instant
    var pendingAcks: [UInt32: AckWaiter] = [:]
    var nextSeq: UInt32
    /// Lifeguard local health score: 0 (healthy) ... awarenessMaxMultiplier - 1.
    var awareness = 0

    // MARK: Dissemination
    var broadcasts = BroadcastQueue()
    var nextGossipAt: Instant
    var nextAntiEntropyAt: Instant
    /// Members added since the last anti-entropy round: in a join storm they hurry the next round
    /// like an exchange that taught (`hurryAntiEntropy`), so a node swaps views while they pour in.
    var membersAddedSinceRound = 0
    var followUp: (endpoint: Endpoint, at: Instant)?

    // MARK: Stream probes
    var streamProbeAnswers = RateWindow()

    // MARK: Push/pull
    /// Peers we sent a push/pull request to, with the instant we give up waiting for the reply.
    var pushPullsInFlight: [Endpoint: Instant] = [:]
    var nextPushPullAt: Instant = .zero
    var pushPullAnswers = RateWindow()
    /// While a push/pull payload is applied: the requests its claims trigger, sent as one batch.
    var collectedRequests: [DigestRequest]?
    var nextReapAt: Instant

    // MARK: Output
    var output: [Directive] = []
    var requestedWake: Instant?

    /// Creates the node. Throws if `record` is invalid, does not name `identity`, or is too large to
    /// gossip, or if `config` is unusable. `seed` is all the randomness it will use.
    public init(config: MembershipConfig, identity: SigningIdentity, record: NodeRecord, seed: UInt64, now: Instant) throws(MembershipError) {
        guard config.digestBuckets >= 1, config.digestBuckets <= 64, config.digestBuckets & (config.digestBuckets - 1) == 0 else {
            throw .invalidConfig("digestBuckets must be a power of two between 1 and 64, got \(config.digestBuckets)")
        }
        guard config.maxDatagram >= 512 else {
            throw .invalidConfig("maxDatagram must be at least 512 bytes, got \(config.maxDatagram)")
        }
        guard config.sealOverhead >= 0, config.sealOverhead <= 256 else {
            throw .invalidConfig("sealOverhead must be between 0 and 256 bytes, got \(config.sealOverhead)")
        }
        self.config = config
        self.identity = identity
        self.rng = SeededRandom(seed: seed)
        do { self.local = try SignedNodeRecord(signing: record, with: identity) } catch { throw .record(error) }
        self.localHash = stableNameHash(record.name)
        self.table = MemberTable(buckets: config.digestBuckets, localHash: localHash, localVersion: record.version,
                                 localStatus: .alive(incarnation: 0))
        self.nextSeq = 0
        self.nextProbeAt = now
        self.nextGossipAt = now
        self.nextAntiEntropyAt = now
        self.nextReapAt = now + config.probeInterval
        suspicions.checkLead = config.suspicionCheckLead
        try checkRecordSize(local)
        nextSeq = UInt32(truncatingIfNeeded: rng.next())
        nextProbeAt = now + jitter(config.probeInterval)
        nextAntiEntropyAt = now + jitter(config.antiEntropyInterval)
    }

    // MARK: - Public API

    /// Every other member this node knows (alive, suspect, dead or left, not yet reaped), by name.
    public var members: [Member] {
        table.states.map { Member(record: $0.signed, status: $0.status, since: $0.since) }
            .sorted { $0.name < $1.name }
    }

    /// Changes whenever `members` may have changed (never otherwise): a caller that keeps a copy
    /// of the view refreshes it only when this moved.
    public var viewGeneration: UInt64 { table.generation }

    /// The member called `name`, if known (not this node).
    public func member(named name: String) -> Member? {
        table[name].map { Member(record: $0.signed, status: $0.status, since: $0.since) }
    }

    /// This node's own signed record.
    public var localRecord: SignedNodeRecord { local }

    /// This node's current SWIM incarnation.
    public var localIncarnation: UInt64 { incarnation }

    /// The Lifeguard local health multiplier (1 = healthy; timeouts are scaled by it).
    public var localHealthMultiplier: Int { awareness + 1 }

    /// Names of tombstoned (reaped) members with the last record version seen.
    public var tombstoneVersions: [String: UInt64] { tombstones.mapValues { $0.version } }

    /// Number of alive or suspect members, this node included (the N of the protocol's formulas).
    public var clusterSize: Int { table.activeCount + 1 }

    /// Contacts `seeds` (gossip addresses) to join the cluster: sends each our record and a digest
    /// summary, so the seed learns us and we pull its view. Seeds are retried while we know nobody.
    public mutating func join(seeds: [Endpoint], now: Instant) -> [Directive] {
        self.seeds = seeds
        if hasLeft {
            // Rejoining after a leave needs a record version above the signed leave.
            hasLeft = false
            leaveNotice = nil
            bumpVersion(now: now) { _ in }
        }
        for s in seeds where s != local.record.gossipAddress {
            sendJoin(to: s)
        }
        return finish(now: now)
    }

    /// Handles one authenticated plaintext payload (the shell opened its datagram) received from
    /// `from`. Messages that do not parse are counted and skipped.
    public mutating func receive(payload: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        counters.payloadsReceived += 1
        counters.payloadBytesReceived += payload.count
        let decoded = WireFormat.decodePayload(payload)
        counters.unknownMessagesSkipped += decoded.unknown
        if decoded.malformed > 0 || decoded.truncated { counters.droppedMalformed += 1 }
        if !hasLeft {
            // Records first: a claim about a new member usually travels next to its record.
            for m in decoded.messages { if case .record = m { handle(m, from: from, now: now) } }
            for m in decoded.messages { if case .record = m {} else { handle(m, from: from, now: now) } }
        }
        return finish(now: now)
    }

    /// Runs every timer due at `now` (probe, indirect probe, gossip, anti-entropy, suspicion, reaping)
    /// and asks for the next wake-up. Calling it early is harmless.
    public mutating func tick(now: Instant) -> [Directive] {
        requestedWake = nil
        if !hasLeft {
            expireRelays(now: now)
            expireSuspicions(now: now)
            if let p = probe, !p.acked, !p.indirectSent, now >= p.indirectAt {
                sendIndirectProbes(now: now)
            }
            if let p = probe, !p.acked, let r = p.nextRetryAt, now >= r {
                retryProbe(now: now)
            }
            if now >= nextProbeAt {
                finishProbe(now: now)
                startProbe(now: now)
                nextProbeAt = now + config.probeInterval.wmScaled(Double(awareness + 1))
            }
            if now >= nextAntiEntropyAt {
                antiEntropy(now: now)
                membersAddedSinceRound = 0
                nextAntiEntropyAt = now + jitter(config.antiEntropyInterval(clusterSize: clusterSize)) + config.antiEntropyInterval(clusterSize: clusterSize).wmScaled(0.5)
            }
            if let f = followUp, now >= f.at {
                followUp = nil
                send([.digestSummary(fingerprints: table.summary)], to: f.endpoint, piggyback: true)
            }
            if now >= nextReapAt {
                reap(now: now)
                nextReapAt = now + config.probeInterval
            }
        }
        if now >= nextGossipAt {
            gossip(now: now)
            nextGossipAt = now + config.gossipInterval
        }
        return finish(now: now, fromTick: true)
    }

    /// Changes the local record: applies `change`, bumps the version, re-signs and disseminates it.
    /// Throws (and changes nothing) if the new record is invalid or too large to gossip. The name and
    /// identity cannot change.
    public mutating func updateLocalRecord(now: Instant, _ change: (inout NodeRecord) -> Void) throws(MembershipError) -> [Directive] {
        var record = local.record
        change(&record)
        record.name = local.record.name
        record.identity = local.record.identity
        let (version, overflow) = local.record.version.addingReportingOverflow(1)
        guard !overflow else { throw .versionExhausted }
        record.version = version
        let signed: SignedNodeRecord
        do { signed = try SignedNodeRecord(signing: record, with: identity) } catch { throw .record(error) }
        try checkRecordSize(signed)
        installLocal(signed, now: now)
        return finish(now: now)
    }

    /// Leaves the cluster gracefully: signs a leave notice for the current version, sends it directly
    /// to a few members and keeps gossiping it on ticks. Probing stops; incoming datagrams are ignored.
    public mutating func leave(now: Instant) -> [Directive] {
        guard !hasLeft else { return finish(now: now) }
        let notice = LeaveNotice(record: local.record, incarnation: incarnation, identity: identity)
        leaveNotice = notice
        hasLeft = true
        probe = nil
        enqueue(.leave(notice), key: BroadcastKey(name: local.record.name, kind: .status))
        let fanout = max(config.gossipNodes, config.indirectChecks)
        for name in randomMembers(count: fanout, excluding: nil, where: { $0.status.isActive }) {
            if let m = table[name] { send([.leave(notice)], to: m.signed.record.gossipAddress, piggyback: true) }
        }
        return finish(now: now)
    }

    /// Sets what records must satisfy. Members that no longer do (evicted) leave the view at once,
    /// each with an `.evicted` event; their records are refused from now on.
    public mutating func setTrust(_ trust: ClusterTrust?, now: Instant) -> [Directive] {
        self.trust = trust
        if let trust {
            for state in table.states where trust.isEvicted(state.signed.record.identity) {
                removeMember(state.signed.record.name)
                emit(.evicted, state)
            }
        }
        return finish(now: now)
    }

    /// Installs a trusted view (saved state, or a converged start for benchmarks) without verifying
    /// signatures: every record becomes an alive member unless a newer one is already known.
    public mutating func seed(with records: [SignedNodeRecord], now: Instant) {
        table.reserveCapacity(table.count + records.count)
        var added: [String] = []
        for s in records {
            let name = s.record.name
            if name == local.record.name { continue }
            let known = table[name]
            if let m = known, m.signed.record.version >= s.record.version { continue }
            var state = MemberState(signed: s, status: .alive(incarnation: 0), since: now, hash: stableNameHash(name))
            if let old = known, old.signed.record.identity == s.record.identity { state.status = .alive(incarnation: 0) }
            let isNew = known == nil
            if isNew && table.count >= config.maxMembers { counters.rejectedViewFull += 1; continue }
            suspicions.clear(name)
            table.store(name, state)
            if isNew { added.append(name) }
        }
        insertIntoProbeOrder(added)
    }

    // MARK: - View bookkeeping

    /// Removes a member from the view (its suspicion, if any, goes with it).
    mutating func removeMember(_ name: String) {
        table.remove(name)
        suspicions.clear(name)
    }

    /// Up to `count` distinct random members satisfying `predicate` (bounded tries, then a scan).
    mutating func randomMembers(count: Int, excluding: String?, where predicate: (MemberState) -> Bool) -> [String] {
        let names = table.names
        guard count > 0, !names.isEmpty else { return [] }
        var chosen: [String] = []
        var tries = 0
        while chosen.count < count, tries < count * 4 {
            tries += 1
            let name = names[Int.random(in: 0..<names.count, using: &rng)]
            if name == excluding || chosen.contains(name) { continue }
            if let m = table[name], predicate(m) { chosen.append(name) }
        }
        if chosen.count < count, names.count <= 64 || chosen.isEmpty {
            // Few members, or eligible ones are rare: scan from a random offset.
            let offset = Int.random(in: 0..<names.count, using: &rng)
            for step in 0..<names.count where chosen.count < count {
                let name = names[(offset + step) % names.count]
                if name == excluding || chosen.contains(name) { continue }
                if let m = table[name], predicate(m) { chosen.append(name) }
            }
        }
        return chosen
    }

    mutating func emit(_ kind: MemberEvent.Kind, _ state: MemberState) {
        output.append(.changed(MemberEvent(kind: kind, member: Member(record: state.signed, status: state.status, since: state.since))))
    }

    mutating func takeSeq() -> UInt32 {
        nextSeq &+= 1
        return nextSeq
    }

    /// A uniformly random duration in [0, d) from the seeded generator.
    mutating func jitter(_ d: Duration) -> Duration {
        let u = Double(rng.next() >> 11) / Double(1 << 53)
        return d.wmScaled(u)
    }

    // MARK: - Sending

    /// Largest payload: sealed by the shell, it is at most `maxDatagram` bytes on the wire.
    var payloadBudget: Int { config.maxDatagram - config.sealOverhead }

    /// Packs `messages` (and, if `piggyback`, pending broadcasts) into as few payloads as the size
    /// limit allows and queues the sends.
    mutating func send(_ messages: [WireMessage], to endpoint: Endpoint, piggyback: Bool) {
        let budget = payloadBudget
        var payload: [UInt8] = []
        payload.reserveCapacity(budget)
        for m in messages {
            let bytes = WireFormat.encode(m)
            if bytes.count > budget { continue }   // cannot happen for messages this node builds
            if payload.count + bytes.count > budget {
                emitPayload(payload, to: endpoint)
                payload.removeAll(keepingCapacity: true)
            }
            payload.append(contentsOf: bytes)
        }
        if piggyback {
            broadcasts.fill(&payload, budget: budget, limit: config.retransmitLimit(clusterSize: clusterSize))
        }
        if !payload.isEmpty { emitPayload(payload, to: endpoint) }
    }

    mutating func emitPayload(_ payload: [UInt8], to endpoint: Endpoint) {
        counters.payloadsSent += 1
        counters.payloadBytesSent += payload.count
        output.append(.send(payload: payload, to: endpoint))
    }

    /// Appends the wake-up request and hands the directives out.
    mutating func finish(now: Instant, fromTick: Bool = false) -> [Directive] {
        if var next = nextDeadline() {
            // Everything due was handled by this tick; never ask to be woken in the past (no spinning).
            if next <= now { next = fromTick ? now + .milliseconds(1) : now }
            if fromTick || requestedWake.map({ next < $0 }) ?? true {
                requestedWake = next
                output.append(.wakeUp(at: next))
            }
        }
        defer { output.removeAll() }
        return output
    }

    /// The earliest instant a timer is due, or nil when nothing is pending.
    func nextDeadline() -> Instant? {
        var d: Instant?
        func consider(_ t: Instant) { if d.map({ t < $0 }) ?? true { d = t } }
        if !broadcasts.isEmpty { consider(nextGossipAt) }
        if !hasLeft {
            consider(nextAntiEntropyAt)
            consider(nextProbeAt)
            if let p = probe, !p.acked, !p.indirectSent { consider(p.indirectAt) }
            if let p = probe, !p.acked, let r = p.nextRetryAt { consider(r) }
            if let f = followUp { consider(f.at) }
            if let s = suspicions.nextCheck { consider(s) }
            if !table.inactive.isEmpty || !tombstones.isEmpty { consider(nextReapAt) }
            for (_, w) in pendingAcks {
                if case .relay(_, _, let nackAt, let expires) = w { consider(nackAt ?? expires) }
            }
        }
        return d
    }
}
