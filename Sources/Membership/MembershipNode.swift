import IPNetwork
import WireMeshCrypto

/// The pure SWIM + Lifeguard membership state machine of one node, with its wire codec and sealing.
///
/// No sockets, no clock, no randomness it was not given: every input (datagram, timer tick, local
/// change) comes with `now`, and every output is a `Directive` the shell executes.
///
/// Protocol summary:
/// - Failure detection (SWIM): each protocol period probes the next member of a shuffled round-robin
///   order; without an ack within the probe timeout, `indirectChecks` members probe it on our behalf
///   (ping-req); without any ack by the end of the period the member becomes suspect; a suspect that
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
    /// Cluster keys: seals with the primary, opens with any (replace to rotate the cluster key).
    public var keyring: Keyring
    /// Counters of traffic and refusals.
    public private(set) var counters = MembershipCounters()

    let identity: SigningIdentity
    let clusterID: [UInt8]
    var rng: SeededRandom

    // MARK: Local node
    var local: SignedNodeRecord
    var incarnation: UInt64 = 0
    let localHash: UInt64
    var hasLeft = false
    var leaveNotice: LeaveNotice?
    var seeds: [Endpoint] = []

    // MARK: View
    var table: [String: MemberState] = [:]
    /// Dense list of member names for O(1) random choice.
    var names: [String] = []
    var nameIndex: [String: Int] = [:]
    var byHash: [UInt64: String] = [:]
    /// Per digest bucket, each member's digest entry by name hash (kept by `store`/`remove`), so a
    /// summary answer reads entries without copying member states.
    var bucketDigests: [[UInt64: DigestEntry]]
    var bucketFingerprints: [UInt64]
    let bucketShift: UInt64
    var suspects: Set<String> = []
    var inactive: Set<String> = []
    var activeCount = 0
    var tombstones: [String: Tombstone] = [:]
    var tombstoneByHash: [UInt64: String] = [:]
    var failedSignatures: Set<[UInt8]> = []

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
    var broadcasts: [BroadcastKey: Broadcast] = [:]
    /// Broadcast keys by transmit count (oldest first); entries whose broadcast was replaced,
    /// sent or dropped are skipped and removed lazily. Keeps piggyback selection O(what is sent).
    var tiers: [[(key: BroadcastKey, serial: UInt64)]] = []
    var broadcastSerial: UInt64 = 0
    var nextGossipAt: Instant
    var nextAntiEntropyAt: Instant
    var followUp: (endpoint: Endpoint, at: Instant)?
    var nextReapAt: Instant
    var suspicionDeadline: Instant?

    // MARK: Output
    var output: [Directive] = []
    var requestedWake: Instant?

    /// Creates the node. Throws if `record` is invalid, does not name `identity`, or is too large to
    /// gossip, or if `config` is unusable.
    public init(config: MembershipConfig, identity: SigningIdentity, record: NodeRecord, keyring: Keyring,
                clusterID: [UInt8], seed: UInt64, now: Instant) throws(MembershipError) {
        guard config.digestBuckets >= 1, config.digestBuckets <= 64, config.digestBuckets & (config.digestBuckets - 1) == 0 else {
            throw .invalidConfig("digestBuckets must be a power of two between 1 and 64, got \(config.digestBuckets)")
        }
        guard config.maxDatagram >= 512 else {
            throw .invalidConfig("maxDatagram must be at least 512 bytes, got \(config.maxDatagram)")
        }
        self.config = config
        self.keyring = keyring
        self.identity = identity
        self.clusterID = clusterID
        self.rng = SeededRandom(seed: seed)
        do { self.local = try SignedNodeRecord(signing: record, with: identity) } catch { throw .record(error) }
        self.localHash = stableNameHash(record.name)
        var bits: UInt64 = 0
        while (1 << bits) < config.digestBuckets { bits += 1 }
        self.bucketShift = 64 - bits
        self.bucketDigests = Array(repeating: [:], count: config.digestBuckets)
        self.bucketFingerprints = Array(repeating: 0, count: config.digestBuckets)
        self.nextSeq = 0
        self.nextProbeAt = now
        self.nextGossipAt = now
        self.nextAntiEntropyAt = now
        self.nextReapAt = now + config.probeInterval
        try checkRecordSize(local)
        nextSeq = UInt32(truncatingIfNeeded: rng.next())
        nextProbeAt = now + jitter(config.probeInterval)
        nextAntiEntropyAt = now + jitter(config.antiEntropyInterval)
        bucketFingerprints[bucket(of: localHash)] &+= entryFingerprint(localHash, local.record.version, .alive(incarnation: 0))
    }

    // MARK: - Public API

    /// Every other member this node knows (alive, suspect, dead or left, not yet reaped), by name.
    public var members: [Member] {
        table.values.map { Member(record: $0.signed, status: $0.status, since: $0.since) }
            .sorted { $0.name < $1.name }
    }

    /// Changes whenever `members` may have changed (never otherwise): a caller that keeps a copy
    /// of the view refreshes it only when this moved.
    public private(set) var viewGeneration: UInt64 = 0

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
    public var clusterSize: Int { activeCount + 1 }

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

    /// Handles one datagram received from `from`. Bad datagrams are counted and dropped.
    public mutating func receive(datagram: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        counters.datagramsReceived += 1
        counters.bytesReceived += datagram.count
        switch WireFormat.open(datagram, keyring: keyring, clusterID: clusterID, maxDatagram: config.maxDatagram) {
        case .failure(let drop):
            switch drop {
            case .oversized: counters.droppedOversized += 1
            case .truncated: counters.droppedTruncated += 1
            case .badVersion: counters.droppedBadVersion += 1
            case .authFailed: counters.droppedAuthFailed += 1
            }
            return finish(now: now)
        case .success(let payload):
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
            if now >= nextProbeAt {
                finishProbe(now: now)
                startProbe(now: now)
                nextProbeAt = now + config.probeInterval.wmScaled(Double(awareness + 1))
            }
            if now >= nextAntiEntropyAt {
                antiEntropy(now: now)
                nextAntiEntropyAt = now + jitter(config.antiEntropyInterval(clusterSize: clusterSize)) + config.antiEntropyInterval(clusterSize: clusterSize).wmScaled(0.5)
            }
            if let f = followUp, now >= f.at {
                followUp = nil
                send([.digestSummary(fingerprints: summary())], to: f.endpoint, piggyback: true)
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

    /// Installs a trusted view (saved state, or a converged start for benchmarks) without verifying
    /// signatures: every record becomes an alive member unless a newer one is already known.
    public mutating func seed(with records: [SignedNodeRecord], now: Instant) {
        for s in records {
            let r = s.record
            if r.name == local.record.name { continue }
            if let m = table[r.name], m.signed.record.version >= r.version { continue }
            var state = MemberState(signed: s, status: .alive(incarnation: 0), since: now, hash: stableNameHash(r.name))
            if let old = table[r.name], old.signed.record.identity == r.identity { state.status = .alive(incarnation: 0) }
            let isNew = table[r.name] == nil
            if isNew && table.count >= config.maxMembers { counters.rejectedViewFull += 1; continue }
            store(r.name, state)
            if isNew { insertIntoProbeOrder(r.name) }
        }
    }

    // MARK: - Message handling

    mutating func handle(_ message: WireMessage, from: Endpoint, now: Instant) {
        switch message {
        case .ping(let seq, let target, let source):
            guard target == local.record.name else { counters.ignoredMisdirected += 1; return }
            send([.ack(seq: seq)], to: from, piggyback: true)
            if source != local.record.name, table[source] == nil, tombstones[source] == nil {
                send([.request([DigestRequest(nameHash: stableNameHash(source), haveVersion: 0)])], to: from, piggyback: false)
            }
        case .pingReq(let originSeq, let target, let address):
            guard target != local.record.name else {
                send([.ack(seq: originSeq)], to: from, piggyback: true)
                return
            }
            let seq = takeSeq()
            let scale = Double(awareness + 1)
            pendingAcks[seq] = .relay(origin: from, originSeq: originSeq,
                                      nackAt: now + config.probeTimeout.wmScaled(config.nackFraction * scale),
                                      expires: now + config.probeInterval.wmScaled(scale))
            send([.ping(seq: seq, target: target, source: local.record.name)], to: address, piggyback: true)
        case .ack(let seq):
            handleAck(seq: seq, now: now)
        case .nack(let seq):
            if var p = probe, p.seq == seq, !p.acked {
                p.nacks += 1
                probe = p
            } else {
                counters.ignoredUnexpectedAck += 1
            }
        case .record(let signed):
            applyRecord(signed, from: from, now: now)
        case .status(let name, let version, let status, let claimant):
            guard status.rank <= 2 else { return }
            applyClaim(name: name, version: version, status: status, claimant: claimant, leave: nil, from: from, now: now)
        case .leave(let notice):
            applyClaim(name: notice.name, version: notice.version, status: .left(incarnation: notice.incarnation),
                       claimant: notice.name, leave: notice, from: from, now: now)
        case .digestSummary(let fingerprints):
            answerSummary(fingerprints, from: from, now: now)
        case .digestEntries(let lower, let upper, let more, let entries):
            reconcile(lower: lower, upper: upper, more: more, entries: entries, from: from, now: now)
        case .request(let items):
            answerRequest(items, to: from)
        }
    }

    mutating func handleAck(seq: UInt32, now: Instant) {
        guard let waiter = pendingAcks[seq] else { counters.ignoredUnexpectedAck += 1; return }
        switch waiter {
        case .probe:
            if var p = probe, p.seq == seq {
                if !p.acked {
                    p.acked = true
                    probe = p
                    adjustAwareness(-1)
                }
            }
            // Stays pending until the round ends so duplicate (direct + relayed) acks are not "unexpected".
        case .relay(let origin, let originSeq, _, _):
            pendingAcks[seq] = nil
            send([.ack(seq: originSeq)], to: origin, piggyback: true)
        }
    }

    // MARK: - Records

    mutating func applyRecord(_ signed: SignedNodeRecord, from: Endpoint, now: Instant) {
        let r = signed.record
        if r.name == local.record.name {
            guard r.identity == local.record.identity else { counters.rejectedIdentityConflict += 1; return }
            // Our own record from an earlier life (restart without saved state): continue above it.
            guard r.version >= local.record.version, r.version < Self.versionLimit, signed != local else { return }
            guard verify(signed) else { return }
            bumpVersion(now: now, above: r.version)
            return
        }
        if let m = table[r.name] {
            if m.signed.record.identity != r.identity {
                guard case .left = m.status, r.version > 0 else { counters.rejectedIdentityConflict += 1; return }
                guard verify(signed) else { return }
                // The old owner left: the name is free for a new identity.
                remove(r.name)
                addMember(signed, now: now)
                return
            }
            if r.version < m.signed.record.version { counters.ignoredStale += 1; return }
            if r.version == m.signed.record.version {
                if signed != m.signed { counters.ignoredStale += 1 }
                return
            }
            guard verify(signed) else { return }
            var state = m
            let wasActive = m.status.isActive
            state.signed = signed
            state.status = .alive(incarnation: 0)
            state.since = now
            state.suspicion = nil
            state.leave = nil
            store(r.name, state)
            enqueue(.record(signed), key: BroadcastKey(name: r.name, kind: .record))
            enqueue(.status(name: r.name, version: r.version, status: state.status, from: local.record.name),
                    key: BroadcastKey(name: r.name, kind: .status))
            emit(.updated, state)
            if !wasActive { emit(.alive, state) }
            return
        }
        if let t = tombstones[r.name], t.identity == r.identity, r.version <= t.version {
            counters.ignoredStale += 1
            // A restarted node announcing an old version learns the version it must exceed.
            send([.record(t.record)], to: from, piggyback: false)
            return
        }
        guard table.count < config.maxMembers else { counters.rejectedViewFull += 1; return }
        guard verify(signed) else { return }
        if tombstones.removeValue(forKey: r.name) != nil { tombstoneByHash[stableNameHash(r.name)] = nil }
        addMember(signed, now: now)
    }

    mutating func addMember(_ signed: SignedNodeRecord, now: Instant) {
        let name = signed.record.name
        let state = MemberState(signed: signed, status: .alive(incarnation: 0), since: now, hash: stableNameHash(name))
        store(name, state)
        insertIntoProbeOrder(name)
        enqueue(.record(signed), key: BroadcastKey(name: name, kind: .record))
        emit(.joined, state)
    }

    /// Verifies a record signature, remembering failures so a replayed forgery costs nothing.
    mutating func verify(_ signed: SignedNodeRecord) -> Bool {
        if failedSignatures.contains(signed.signature.bytes) { counters.rejectedBadSignature += 1; return false }
        counters.signaturesVerified += 1
        if signed.verify() { return true }
        counters.rejectedBadSignature += 1
        if failedSignatures.count > 4096 { failedSignatures.removeAll() }
        failedSignatures.insert(signed.signature.bytes)
        return false
    }

    // MARK: - Liveness claims

    mutating func applyClaim(name: String, version: UInt64, status: MemberStatus, claimant: String,
                             leave: LeaveNotice?, from: Endpoint, now: Instant) {
        if name == local.record.name {
            applyClaimAboutSelf(version: version, status: status, leave: leave, from: from, now: now)
            return
        }
        guard var m = table[name] else {
            if let t = tombstones[name], version <= t.version { counters.ignoredStale += 1; return }
            // Unknown member: fetch its record from whoever talks about it.
            send([.request([DigestRequest(nameHash: stableNameHash(name), haveVersion: 0)])], to: from, piggyback: false)
            return
        }
        let current = m.signed.record.version
        if version < current { counters.ignoredStale += 1; return }
        if version > current {
            send([.request([DigestRequest(nameHash: m.hash, haveVersion: current)])], to: from, piggyback: false)
            return
        }
        if status <= m.status {
            // Lifeguard: an independent confirmation of the same suspicion shortens its timeout.
            if case .suspect(let i) = status, case .suspect(let j) = m.status, i == j, var s = m.suspicion,
               !s.confirmers.contains(claimant) {
                s.confirmers.insert(claimant)
                s.deadline = suspicionDeadline(for: s)
                m.suspicion = s
                table[name] = m
                noteSuspicionDeadline(s.deadline)
                if s.confirmers.count - 1 <= s.k {
                    enqueue(.status(name: name, version: version, status: status, from: claimant),
                            key: BroadcastKey(name: name, kind: .status))
                }
            } else if status < m.status {
                counters.ignoredStale += 1
            }
            return
        }
        if let leave {
            guard leave.verify(identity: m.signed.record.identity) else { counters.rejectedBadSignature += 1; return }
            counters.signaturesVerified += 1
        }
        let previous = m.status
        m.status = status
        m.since = now
        switch status {
        case .alive:
            m.suspicion = nil
            store(name, m)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            if !previous.isActive || previous.rank == 1 { emit(.alive, m) }
        case .suspect:
            let n = clusterSize
            let k = n - 2 < config.suspicionConfirmations ? 0 : config.suspicionConfirmations
            let minimum = config.suspicionMinimum(clusterSize: n)
            var s = Suspicion(start: now, confirmers: [claimant], k: k, minimum: minimum,
                              maximum: minimum.wmScaled(config.suspicionMaxMultiplier), deadline: now)
            s.deadline = suspicionDeadline(for: s)
            m.suspicion = s
            store(name, m)
            noteSuspicionDeadline(s.deadline)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            emit(.suspect, m)
        case .dead:
            m.suspicion = nil
            store(name, m)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            emit(.dead, m)
        case .left:
            m.suspicion = nil
            m.leave = leave
            store(name, m)
            if let leave { enqueue(.leave(leave), key: BroadcastKey(name: name, kind: .status)) }
            emit(.left, m)
        }
    }

    mutating func applyClaimAboutSelf(version: UInt64, status: MemberStatus, leave: LeaveNotice?, from: Endpoint, now: Instant) {
        let mine = local.record.version
        if version > mine {
            // Someone holds a newer claim about our name: only an earlier life of ours can have made
            // one at a higher version, so continue above it (signed leaves are checked first). Not
            // above the limit: versions are wall-clock milliseconds, so a claim there is hostile, and
            // continuing above 2^64 - 1 is impossible (it trapped: one datagram stopped any agent).
            guard version < Self.versionLimit else { counters.ignoredStale += 1; return }
            if let leave, !leave.verify(identity: local.record.identity) { counters.rejectedBadSignature += 1; return }
            bumpVersion(now: now, above: version)
            return
        }
        if version < mine { counters.ignoredStale += 1; return }
        switch status {
        case .alive(let i):
            if i > incarnation { setIncarnation(i, now: now) }
        case .suspect(let i), .dead(let i):
            guard i >= incarnation else { counters.ignoredStale += 1; return }
            refute(above: i, from: from, now: now)
        case .left:
            if let leave, !leave.verify(identity: local.record.identity) { counters.rejectedBadSignature += 1; return }
            if !hasLeft { bumpVersion(now: now, above: version) }
        }
    }

    /// Refutes a suspicion or death claim at incarnation `i` with alive(i + 1), gossiped and sent
    /// straight back to whoever told us. Lifeguard: having to refute means we may be slow.
    mutating func refute(above i: UInt64, from: Endpoint, now: Instant) {
        adjustAwareness(1)
        if i >= Self.incarnationLimit {
            // Absurd incarnations (a hostile member) are escaped by a new record version.
            bumpVersion(now: now) { _ in }
        } else {
            setIncarnation(i + 1, now: now)
        }
        send([aliveClaim()], to: from, piggyback: true)
    }

    static let incarnationLimit: UInt64 = 1 << 40
    /// Record versions are Unix milliseconds at start plus one per change (2^41 is the year 2039,
    /// 2^62 far beyond it): a claim about this node above this limit is not from an earlier life of its own.
    static let versionLimit: UInt64 = 1 << 62

    mutating func setIncarnation(_ i: UInt64, now: Instant) {
        let old = entryFingerprint(localHash, local.record.version, .alive(incarnation: incarnation))
        incarnation = i
        bucketFingerprints[bucket(of: localHash)] &+= entryFingerprint(localHash, local.record.version, .alive(incarnation: incarnation)) &- old
        enqueue(aliveClaim(), key: BroadcastKey(name: local.record.name, kind: .status))
    }

    func aliveClaim() -> WireMessage {
        .status(name: local.record.name, version: local.record.version, status: .alive(incarnation: incarnation), from: local.record.name)
    }

    /// Re-signs the local record with a version above `floor` (and above the current one).
    mutating func bumpVersion(now: Instant, above floor: UInt64 = 0, _ change: (inout NodeRecord) -> Void = { _ in }) {
        var record = local.record
        change(&record)
        let (version, overflow) = max(floor, local.record.version).addingReportingOverflow(1)
        guard !overflow else { return }
        record.version = version
        guard let signed = try? SignedNodeRecord(signing: record, with: identity) else { return }
        installLocal(signed, now: now)
    }

    mutating func installLocal(_ signed: SignedNodeRecord, now: Instant) {
        let b = bucket(of: localHash)
        bucketFingerprints[b] &-= entryFingerprint(localHash, local.record.version, .alive(incarnation: incarnation))
        local = signed
        incarnation = 0
        bucketFingerprints[b] &+= entryFingerprint(localHash, local.record.version, .alive(incarnation: incarnation))
        enqueue(.record(signed), key: BroadcastKey(name: signed.record.name, kind: .record))
        enqueue(aliveClaim(), key: BroadcastKey(name: signed.record.name, kind: .status))
    }

    mutating func checkRecordSize(_ signed: SignedNodeRecord) throws(MembershipError) {
        // A record must fit in one datagram next to a probe (ping + our name) and message headers.
        let limit = config.maxDatagram - WireFormat.overhead - 2 * WireFormat.messageHeader - 4 - 2 * 64 - 2
        if signed.encodedSize > limit {
            throw .record(.tooLarge(name: signed.record.name, bytes: signed.encodedSize, limit: limit))
        }
    }

    // MARK: - Failure detection

    mutating func startProbe(now: Instant) {
        probe = nil
        guard let target = nextProbeTarget(), let m = table[target] else { return }
        let seq = takeSeq()
        let scale = Double(awareness + 1)
        probe = ProbeState(target: target, seq: seq, start: now,
                           indirectAt: now + config.probeTimeout.wmScaled(scale))
        pendingAcks[seq] = .probe
        var messages: [WireMessage] = [.ping(seq: seq, target: target, source: local.record.name)]
        if case .suspect = m.status {
            // Lifeguard buddy system: tell the suspect directly so it can refute at once.
            messages.append(.status(name: target, version: m.signed.record.version, status: m.status, from: local.record.name))
        }
        send(messages, to: m.signed.record.gossipAddress, piggyback: true)
    }

    mutating func sendIndirectProbes(now: Instant) {
        guard var p = probe, let m = table[p.target] else { return }
        p.indirectSent = true
        let helpers = randomMembers(count: config.indirectChecks, excluding: p.target, where: { $0.status.rank == 0 })
        p.expectedNacks = helpers.count
        probe = p
        for h in helpers {
            guard let hm = table[h] else { continue }
            send([.pingReq(seq: p.seq, target: p.target, address: m.signed.record.gossipAddress)],
                 to: hm.signed.record.gossipAddress, piggyback: true)
        }
    }

    mutating func finishProbe(now: Instant) {
        guard let p = probe else { return }
        probe = nil
        pendingAcks[p.seq] = nil
        if p.acked { return }
        if p.indirectSent, p.expectedNacks > 0 {
            if p.nacks < p.expectedNacks { adjustAwareness(p.expectedNacks - p.nacks) }
        } else {
            adjustAwareness(1)
        }
        guard let m = table[p.target], m.status.isActive else { return }
        applyClaim(name: p.target, version: m.signed.record.version, status: .suspect(incarnation: m.status.incarnation),
                   claimant: local.record.name, leave: nil, from: m.signed.record.gossipAddress, now: now)
    }

    mutating func nextProbeTarget() -> String? {
        var reshuffled = false
        while true {
            if probeIndex >= probeOrder.count {
                if reshuffled { return nil }
                reshuffled = true
                probeOrder = names.filter { table[$0]?.status.isActive == true }
                probeOrder.shuffle(using: &rng)
                probeIndex = 0
                if probeOrder.isEmpty { return nil }
            }
            let name = probeOrder[probeIndex]
            probeIndex += 1
            if let m = table[name], m.status.isActive { return name }
        }
    }

    mutating func insertIntoProbeOrder(_ name: String) {
        let i = probeOrder.isEmpty ? 0 : Int.random(in: 0...probeOrder.count, using: &rng)
        probeOrder.insert(name, at: i)
        if i < probeIndex { probeIndex += 1 }
    }

    mutating func expireRelays(now: Instant) {
        var due: [(UInt32, AckWaiter)] = []
        for (seq, w) in pendingAcks {
            if case .relay(_, _, let nackAt, let expires) = w, nackAt.map({ now >= $0 }) ?? false || now >= expires {
                due.append((seq, w))
            }
        }
        for (seq, w) in due.sorted(by: { $0.0 < $1.0 }) {
            guard case .relay(let origin, let originSeq, let nackAt, let expires) = w else { continue }
            if now >= expires {
                pendingAcks[seq] = nil
            } else if nackAt != nil {
                pendingAcks[seq] = .relay(origin: origin, originSeq: originSeq, nackAt: nil, expires: expires)
                send([.nack(seq: originSeq)], to: origin, piggyback: false)
            }
        }
    }

    mutating func expireSuspicions(now: Instant) {
        guard let d = suspicionDeadline, now >= d else { return }
        suspicionDeadline = nil
        var due: [String] = []
        for name in suspects {
            guard let s = table[name]?.suspicion else { continue }
            if now >= s.deadline { due.append(name) } else { noteSuspicionDeadline(s.deadline) }
        }
        for name in due.sorted() {
            guard let m = table[name], case .suspect(let i) = m.status else { continue }
            applyClaim(name: name, version: m.signed.record.version, status: .dead(incarnation: i),
                       claimant: local.record.name, leave: nil, from: m.signed.record.gossipAddress, now: now)
        }
        // Each expiry scans every suspect: batch them (≤ 100 ms late) so mass failures stay linear.
        let quantum = Duration.milliseconds(100)
        if let d = suspicionDeadline, d < now + quantum { suspicionDeadline = now + quantum }
    }

    /// Lifeguard dogpile: max − (max − min) · log(c + 1) / log(k + 1), never below min, where c counts
    /// confirmations beyond the first suspicion.
    func suspicionDeadline(for s: Suspicion) -> Instant {
        let c = Double(s.confirmers.count - 1)
        let minNs = Double(s.minimum.wmNanoseconds)
        let maxNs = Double(s.maximum.wmNanoseconds)
        var timeout = minNs
        if s.k > 0 {
            let frac = lnDouble(c + 1) / lnDouble(Double(s.k) + 1)
            timeout = Swift.max(minNs, maxNs - frac * (maxNs - minNs))
        }
        return s.start + .nanoseconds(Int64(timeout))
    }

    mutating func noteSuspicionDeadline(_ d: Instant) {
        if suspicionDeadline.map({ d < $0 }) ?? true { suspicionDeadline = d }
    }

    mutating func adjustAwareness(_ delta: Int) {
        awareness = Swift.min(Swift.max(awareness + delta, 0), config.awarenessMaxMultiplier - 1)
    }

    mutating func reap(now: Instant) {
        guard !inactive.isEmpty || !tombstones.isEmpty else { return }
        var due: [String] = []
        for name in inactive {
            if let m = table[name], now - m.since >= config.reapTime { due.append(name) }
        }
        for name in due.sorted() {
            guard let m = table[name] else { continue }
            remove(name)
            tombstones[name] = Tombstone(identity: m.signed.record.identity, version: m.signed.record.version,
                                        record: m.signed, until: now + config.tombstoneTime)
            tombstoneByHash[m.hash] = name
            broadcasts[BroadcastKey(name: name, kind: .record)] = nil
            broadcasts[BroadcastKey(name: name, kind: .status)] = nil
            emit(.reaped, m)
        }
        let expired = tombstones.filter { now >= $0.value.until }.map(\.key)
        for name in expired {
            tombstones[name] = nil
            tombstoneByHash[stableNameHash(name)] = nil
        }
    }

    // MARK: - Dissemination

    mutating func enqueue(_ message: WireMessage, key: BroadcastKey) {
        broadcastSerial += 1
        broadcasts[key] = Broadcast(bytes: WireFormat.encode(message), transmits: 0, serial: broadcastSerial)
        if tiers.isEmpty { tiers.append([]) }
        tiers[0].append((key, broadcastSerial))
    }

    mutating func gossip(now: Instant) {
        guard !broadcasts.isEmpty else { return }
        let toTheDead = config.gossipToTheDead
        let targets = randomMembers(count: config.gossipNodes, excluding: nil, where: { m in
            m.status.isActive || (m.status.rank == 2 && now - m.since < toTheDead)
        })
        if targets.isEmpty, hasLeft { broadcasts.removeAll(); tiers.removeAll(); return }
        for name in targets {
            guard !broadcasts.isEmpty, let m = table[name] else { break }
            send([], to: m.signed.record.gossipAddress, piggyback: true)
        }
    }

    mutating func sendJoin(to endpoint: Endpoint) {
        send([.record(local), aliveClaim(), .digestSummary(fingerprints: summary())], to: endpoint, piggyback: false)
    }

    // MARK: - Anti-entropy

    mutating func antiEntropy(now: Instant) {
        let deadCount = inactive.count
        var target: Endpoint?
        if deadCount > 0, activeCount == 0 || Double(rng.next() >> 11) / Double(1 << 53) < config.antiEntropyDeadProbability {
            target = randomMembers(count: 1, excluding: nil, where: { $0.status.rank == 2 }).first.flatMap { table[$0]?.signed.record.gossipAddress }
        }
        if target == nil {
            target = randomMembers(count: 1, excluding: nil, where: { $0.status.isActive }).first.flatMap { table[$0]?.signed.record.gossipAddress }
        }
        if target == nil, !seeds.isEmpty {
            // Alone: keep knocking on the seeds (they may be restarting too).
            let s = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            if s != local.record.gossipAddress { sendJoin(to: s) }
            return
        }
        guard let target else { return }
        send([.digestSummary(fingerprints: summary())], to: target, piggyback: true)
    }

    func summary() -> [UInt32] {
        bucketFingerprints.map { UInt32(truncatingIfNeeded: $0 ^ ($0 >> 32)) }
    }

    /// Lists our entries for (some of) the buckets whose fingerprints differ from the sender's.
    mutating func answerSummary(_ theirs: [UInt32], from: Endpoint, now: Instant) {
        guard theirs.count == bucketFingerprints.count else { counters.droppedMalformed += 1; return }
        let mine = summary()
        let differing = (0..<mine.count).filter { mine[$0] != theirs[$0] }
        guard !differing.isEmpty else { return }
        let budget = payloadBudget - 16
        var used = 0
        var messages: [WireMessage] = []
        let start = Int.random(in: 0..<differing.count, using: &rng)
        var more = false
        for step in 0..<differing.count {
            let b = differing[(start + step) % differing.count]
            var entries = bucketEntries(b)
            let lowerBound = UInt64(b) << bucketShift
            let upperBound = bucketShift == 64 ? UInt64.max : lowerBound | ((1 << bucketShift) - 1)
            let room = budget - used - WireFormat.messageHeader - 8 - 8 - 1 - 3
            if room < 64 { more = true; break }
            // Fit as many entries as possible; start at a random one if the bucket does not fit whole.
            var total = 0
            for e in entries { total += WireFormat.entrySize(e) }
            var lower = lowerBound, upper = upperBound
            if total > room {
                let first = Int.random(in: 0..<entries.count, using: &rng)
                var size = 0
                var last = first
                while last < entries.count, size + WireFormat.entrySize(entries[last]) <= room {
                    size += WireFormat.entrySize(entries[last]); last += 1
                }
                if first > 0 { lower = entries[first].nameHash }
                if last < entries.count { upper = entries[last - 1].nameHash }
                entries = Array(entries[first..<last])
                total = size
                more = true
            }
            messages.append(.digestEntries(lower: lower, upper: upper, more: false, entries: entries))
            used += WireFormat.messageHeader + 8 + 8 + 1 + 3 + total
        }
        if more || messages.count < differing.count, let lastIndex = messages.indices.last,
           case .digestEntries(let l, let u, _, let e) = messages[lastIndex] {
            messages[lastIndex] = .digestEntries(lower: l, upper: u, more: true, entries: e)
        }
        send(messages, to: from, piggyback: false)
    }

    /// Our digest entries (including ourselves) in bucket `b`, sorted by name hash.
    func bucketEntries(_ b: Int) -> [DigestEntry] {
        var entries: [DigestEntry] = []
        entries.reserveCapacity(bucketDigests[b].count + 1)
        entries.append(contentsOf: bucketDigests[b].values)
        if bucket(of: localHash) == b {
            entries.append(DigestEntry(nameHash: localHash, version: local.record.version, status: localStatus))
        }
        entries.sort { $0.nameHash < $1.nameHash }
        return entries
    }

    var localStatus: MemberStatus {
        hasLeft ? .left(incarnation: incarnation) : .alive(incarnation: incarnation)
    }

    /// Compares the peer's entries in `lower...upper` with ours: pushes what we have newer, pulls what
    /// it has newer.
    mutating func reconcile(lower: UInt64, upper: UInt64, more: Bool, entries: [DigestEntry], from: Endpoint, now: Instant) {
        guard lower <= upper, bucket(of: lower) == bucket(of: upper) else { counters.droppedMalformed += 1; return }
        var theirs: [UInt64: DigestEntry] = [:]
        for e in entries where e.nameHash >= lower && e.nameHash <= upper { theirs[e.nameHash] = e }
        var push: [WireMessage] = []
        var pull: [DigestRequest] = []
        for mine in bucketEntries(bucket(of: lower)) where mine.nameHash >= lower && mine.nameHash <= upper {
            let other = theirs.removeValue(forKey: mine.nameHash)
            if let other, !claimPrecedes((other.version, other.status), (mine.version, mine.status)) {
                if claimPrecedes((mine.version, mine.status), (other.version, other.status)) {
                    pull.append(DigestRequest(nameHash: mine.nameHash, haveVersion: mine.version))
                }
                continue
            }
            push.append(contentsOf: stateMessages(forHash: mine.nameHash, theirVersion: other?.version ?? 0))
        }
        for e in theirs.values.sorted(by: { $0.nameHash < $1.nameHash }) {
            // Unknown to us (or reaped by us, unless they have a newer version).
            if let name = tombstoneByHash[e.nameHash], let t = tombstones[name], e.version <= t.version { continue }
            pull.append(DigestRequest(nameHash: e.nameHash, haveVersion: 0))
        }
        if !pull.isEmpty { push.append(.request(pull)) }
        if !push.isEmpty { send(push, to: from, piggyback: false) }
        if more, followUp == nil { followUp = (from, now + config.probeTimeout) }
    }

    mutating func answerRequest(_ items: [DigestRequest], to: Endpoint) {
        var out: [WireMessage] = []
        for i in items { out.append(contentsOf: stateMessages(forHash: i.nameHash, theirVersion: i.haveVersion)) }
        if !out.isEmpty { send(out, to: to, piggyback: false) }
    }

    /// The record (if the peer's version is older) and status of the member with this name hash.
    /// A dead claim travels as a suspicion (like memberlist's push/pull): the receiver then gives the
    /// member the chance to refute instead of declaring it dead on our word.
    func stateMessages(forHash h: UInt64, theirVersion: UInt64) -> [WireMessage] {
        if h == localHash {
            var out: [WireMessage] = []
            if theirVersion < local.record.version { out.append(.record(local)) }
            if let leaveNotice { out.append(.leave(leaveNotice)) } else { out.append(aliveClaim()) }
            return out
        }
        guard let name = byHash[h], let m = table[name] else { return [] }
        var out: [WireMessage] = []
        if theirVersion < m.signed.record.version { out.append(.record(m.signed)) }
        let v = m.signed.record.version
        switch m.status {
        case .alive, .suspect:
            out.append(.status(name: name, version: v, status: m.status, from: local.record.name))
        case .dead(let i):
            out.append(.status(name: name, version: v, status: .suspect(incarnation: i), from: local.record.name))
        case .left:
            if let l = m.leave { out.append(.leave(l)) }
        }
        return out
    }

    // MARK: - View bookkeeping

    func bucket(of hash: UInt64) -> Int { bucketShift == 64 ? 0 : Int(hash >> bucketShift) }

    func entryFingerprint(_ hash: UInt64, _ version: UInt64, _ status: MemberStatus) -> UInt64 {
        mix64(hash &+ mix64(version &* 0x9E37_79B9_7F4A_7C15 ^ (status.incarnation << 2 | UInt64(status.rank))))
    }

    /// The only way the view changes: keeps fingerprints, indexes and status sets in step.
    mutating func store(_ name: String, _ state: MemberState) {
        viewGeneration &+= 1
        let b = bucket(of: state.hash)
        if let old = table[name] {
            bucketFingerprints[b] &-= entryFingerprint(old.hash, old.signed.record.version, old.status)
            if old.status.isActive { activeCount -= 1 }
        } else {
            nameIndex[name] = names.count
            names.append(name)
            byHash[state.hash] = name
        }
        bucketDigests[b][state.hash] = DigestEntry(nameHash: state.hash, version: state.signed.record.version, status: state.status)
        table[name] = state
        bucketFingerprints[b] &+= entryFingerprint(state.hash, state.signed.record.version, state.status)
        if state.status.isActive { activeCount += 1 }
        if state.status.rank == 1 { suspects.insert(name) } else { suspects.remove(name) }
        if state.status.isActive { inactive.remove(name) } else { inactive.insert(name) }
    }

    mutating func remove(_ name: String) {
        guard let old = table.removeValue(forKey: name) else { return }
        viewGeneration &+= 1
        let b = bucket(of: old.hash)
        bucketFingerprints[b] &-= entryFingerprint(old.hash, old.signed.record.version, old.status)
        if old.status.isActive { activeCount -= 1 }
        bucketDigests[b][old.hash] = nil
        byHash[old.hash] = nil
        suspects.remove(name)
        inactive.remove(name)
        if let i = nameIndex.removeValue(forKey: name) {
            let last = names.removeLast()
            if i < names.count {
                names[i] = last
                nameIndex[last] = i
            }
        }
    }

    /// Up to `count` distinct random members satisfying `predicate` (bounded tries, then a scan).
    mutating func randomMembers(count: Int, excluding: String?, where predicate: (MemberState) -> Bool) -> [String] {
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

    var payloadBudget: Int { config.maxDatagram - WireFormat.overhead }

    /// Packs `messages` (and, if `piggyback`, pending broadcasts) into as few datagrams as the size
    /// limit allows, seals them and queues the sends.
    mutating func send(_ messages: [WireMessage], to endpoint: Endpoint, piggyback: Bool) {
        let budget = payloadBudget
        var payload: [UInt8] = []
        payload.reserveCapacity(budget)
        for m in messages {
            let bytes = WireFormat.encode(m)
            if bytes.count > budget { continue }   // cannot happen for messages this node builds
            if payload.count + bytes.count > budget {
                emitDatagram(payload, to: endpoint)
                payload.removeAll(keepingCapacity: true)
            }
            payload.append(contentsOf: bytes)
        }
        if piggyback, !broadcasts.isEmpty {
            // Fewest transmissions first, newest first within a tier (like memberlist's queue).
            let limit = config.retransmitLimit(clusterSize: clusterSize)
            var promoted: [(tier: Int, key: BroadcastKey, serial: UInt64)] = []
            // After a run of broadcasts too big for the room left, the datagram is as good as full:
            // stop instead of scanning a queue of thousands (after a mass join) on every send.
            var misfits = 0
            var t = 0
            outer: while t < tiers.count {
                var i = tiers[t].count - 1
                while i >= 0 {
                    if i >= tiers[t].count { i = tiers[t].count - 1; continue }
                    let (key, serial) = tiers[t][i]
                    guard let b = broadcasts[key], b.serial == serial, b.transmits == t else {
                        tiers[t].remove(at: i); i -= 1; continue
                    }
                    let room = budget - payload.count
                    if room < 8 { break outer }
                    if b.bytes.count > room {
                        misfits += 1
                        if misfits >= 16 { break outer }
                    } else {
                        misfits = 0
                        payload.append(contentsOf: b.bytes)
                        tiers[t].remove(at: i)
                        if t + 1 >= limit {
                            broadcasts[key] = nil
                        } else {
                            // Promoted after the scan, so one datagram never carries a broadcast twice.
                            promoted.append((t + 1, key, serial))
                        }
                    }
                    i -= 1
                }
                t += 1
            }
            for p in promoted {
                broadcasts[p.key]?.transmits = p.tier
                while tiers.count <= p.tier { tiers.append([]) }
                tiers[p.tier].append((p.key, p.serial))
            }
            if broadcasts.isEmpty { tiers.removeAll() }
        }
        if !payload.isEmpty { emitDatagram(payload, to: endpoint) }
    }

    mutating func emitDatagram(_ payload: [UInt8], to endpoint: Endpoint) {
        let datagram = WireFormat.seal(payload: payload, keyring: keyring, clusterID: clusterID)
        counters.datagramsSent += 1
        counters.bytesSent += datagram.count
        output.append(.send(datagram: datagram, to: endpoint))
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
            if let f = followUp { consider(f.at) }
            if let s = suspicionDeadline { consider(s) }
            if !inactive.isEmpty || !tombstones.isEmpty { consider(nextReapAt) }
            for (_, w) in pendingAcks {
                if case .relay(_, _, let nackAt, let expires) = w { consider(nackAt ?? expires) }
            }
        }
        return d
    }
}

// MARK: - Internal state types

struct MemberState {
    var signed: SignedNodeRecord
    var status: MemberStatus
    var since: Instant
    var hash: UInt64
    var suspicion: Suspicion?
    var leave: LeaveNotice?

    init(signed: SignedNodeRecord, status: MemberStatus, since: Instant, hash: UInt64) {
        self.signed = signed
        self.status = status
        self.since = since
        self.hash = hash
    }
}

struct Suspicion {
    var start: Instant
    /// Distinct members that claimed the suspicion (the first one does not count as a confirmation).
    var confirmers: Set<String>
    var k: Int
    var minimum: Duration
    var maximum: Duration
    var deadline: Instant
}

struct Tombstone {
    var identity: IdentityPublicKey
    var version: UInt64
    var record: SignedNodeRecord
    var until: Instant
}

struct ProbeState {
    var target: String
    var seq: UInt32
    var start: Instant
    var indirectAt: Instant
    var acked = false
    var indirectSent = false
    var expectedNacks = 0
    var nacks = 0
}

enum AckWaiter {
    case probe
    case relay(origin: Endpoint, originSeq: UInt32, nackAt: Instant?, expires: Instant)
}

struct BroadcastKey: Hashable {
    enum Kind: Hashable { case record, status }
    var name: String
    var kind: Kind
}

struct Broadcast {
    var bytes: [UInt8]
    var transmits: Int
    var serial: UInt64
}
