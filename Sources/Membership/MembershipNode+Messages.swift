import IPNetwork
import WireMeshCrypto

// Message handling: what each message does to the view, records and liveness claims.
extension MembershipNode {
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
            // Another member's word that a member is dead is taken as a suspicion (as anti-entropy
            // already carries it): the member gets to refute, and only this node's own suspicion
            // timeout declares it dead. One member alone (the claimant field is not signed) then
            // cannot get a healthy node removed, however many claims it forges.
            let claim = if case .dead(let i) = status { MemberStatus.suspect(incarnation: i) } else { status }
            applyClaim(name: name, version: version, status: claim, claimant: claimant, leave: nil, from: from, now: now)
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
                removeMember(r.name)
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
            state.leave = nil
            suspicions.clear(r.name)
            table.store(r.name, state)
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
        table.store(name, state)
        insertIntoProbeOrder(name)
        enqueue(.record(signed), key: BroadcastKey(name: name, kind: .record))
        emit(.joined, state)
        membersAddedSinceRound += 1
        hurryAntiEntropy(taught: membersAddedSinceRound, now: now)
    }

    /// Verifies a record signature, remembering failures so a replayed forgery costs nothing.
    mutating func verify(_ signed: SignedNodeRecord) -> Bool {
        let failureKey = Self.failureKey(signed)
        if failedSignatures.contains(failureKey) { counters.rejectedRepeated += 1; return false }
        if let shared = sharedVerifications, shared.contains(failureKey) {
            guard let trust, trust.isEvicted(signed.record.identity) else { return true }
            counters.rejectedUntrusted += 1
            return false
        }
        counters.signaturesVerified += 1
        guard signed.verify() else {
            counters.rejectedBadSignature += 1
            rememberFailure(failureKey)
            return false
        }
        if let trust, trust.refusal(for: signed.record) != nil {
            // Refusals only grow (revocations are never withdrawn): safe to remember.
            counters.rejectedUntrusted += 1
            rememberFailure(failureKey)
            return false
        }
        sharedVerifications?.insert(failureKey)
        return true
    }

    mutating func rememberFailure(_ key: [UInt8]) {
        if failedSignatures.count > 4096 { failedSignatures.removeAll() }
        failedSignatures.insert(key)
    }

    /// A failure is remembered by signature *and* signed bytes: keyed by the signature alone, a member
    /// that copied a genuine record's signature onto altered bytes would get the genuine record refused.
    static func failureKey(_ signed: SignedNodeRecord) -> [UInt8] {
        KeyDerivation.genericHash(signed.signature.bytes + signed.encodedRecord, outputLength: 32)
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
            requestState(DigestRequest(nameHash: stableNameHash(name), haveVersion: 0), from: from)
            return
        }
        let current = m.signed.record.version
        if version < current { counters.ignoredStale += 1; return }
        if version > current {
            requestState(DigestRequest(nameHash: m.hash, haveVersion: current), from: from)
            return
        }
        if status <= m.status {
            // Lifeguard: an independent confirmation of the same suspicion shortens its timeout.
            if case .suspect(let i) = status, case .suspect(let j) = m.status, i == j,
               let worthGossiping = suspicions.confirm(name, by: claimant) {
                if worthGossiping {
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
            if case .suspect = previous { counters.suspicionsRefuted += 1 }
            suspicions.clear(name)
            table.store(name, m)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            if !previous.isActive || previous.rank == 1 { emit(.alive, m) }
        case .suspect:
            let n = clusterSize
            let k = n - 2 < config.suspicionConfirmations ? 0 : config.suspicionConfirmations
            let minimum = config.suspicionMinimum(clusterSize: n)
            suspicions.start(name, claimant: claimant, now: now, k: k, minimum: minimum,
                             maximum: minimum.wmScaled(config.suspicionMaxMultiplier))
            table.store(name, m)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            emit(.suspect, m)
        case .dead:
            if case .suspect = previous { counters.suspicionsConfirmed += 1 }
            suspicions.clear(name)
            table.store(name, m)
            enqueue(.status(name: name, version: version, status: status, from: claimant), key: BroadcastKey(name: name, kind: .status))
            emit(.dead, m)
        case .left:
            suspicions.clear(name)
            m.leave = leave
            table.store(name, m)
            if let leave { enqueue(.leave(leave), key: BroadcastKey(name: name, kind: .status)) }
            emit(.left, m)
        }
    }

    /// Asks `from` for a member's state (record and status); batched while a push/pull is applied.
    mutating func requestState(_ item: DigestRequest, from: Endpoint) {
        if collectedRequests != nil {
            if collectedRequests!.count < Self.pushPullRequestLimit, !collectedRequests!.contains(item) { collectedRequests!.append(item) }
            return
        }
        send([.request([item])], to: from, piggyback: false)
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
            guard i >= incarnation else {
                // Refuted already: the sender missed it; tell it directly (one datagram per claim
                // received, so no amplification).
                counters.ignoredStale += 1
                send([aliveClaim()], to: from, piggyback: false)
                return
            }
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
        incarnation = i
        table.setLocal(version: local.record.version, status: .alive(incarnation: incarnation))
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
        local = signed
        incarnation = 0
        table.setLocal(version: local.record.version, status: .alive(incarnation: incarnation))
        enqueue(.record(signed), key: BroadcastKey(name: signed.record.name, kind: .record))
        enqueue(aliveClaim(), key: BroadcastKey(name: signed.record.name, kind: .status))
    }

    mutating func checkRecordSize(_ signed: SignedNodeRecord) throws(MembershipError) {
        // A record must fit in one datagram next to a probe (ping + our name) and message headers.
        let limit = payloadBudget - 2 * WireFormat.messageHeader - 4 - 2 * 64 - 2
        if signed.encodedSize > limit {
            throw .record(.tooLarge(name: signed.record.name, bytes: signed.encodedSize, limit: limit))
        }
    }

}
