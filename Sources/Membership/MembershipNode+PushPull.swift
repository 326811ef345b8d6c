import IPNetwork

// Push/pull: a whole-state swap with one peer over a stream, for views far apart (a healed
// partition, a joiner). The payload is a sequence of the same TLV messages gossip carries — records,
// status claims and signed leaves, nothing else — and every one goes through the same checks as a
// datagram's (signature, `ClusterTrust`, version and status order): a member gains nothing by a
// push/pull it could not gain by UDP, only more of it per exchange.
extension MembershipNode {
    /// Most state requests one push/pull payload may trigger (sent back as one batch by UDP).
    static let pushPullRequestLimit = 256
    /// Most push/pulls of our own waiting for a reply.
    static let pushPullsInFlightLimit = 4

    /// Starts a push/pull with `peer` if the rate limit, the in-flight bound and one exchange per
    /// peer allow it; true when started.
    mutating func startPushPull(with peer: Endpoint, now: Instant) -> Bool {
        guard config.pushPullDifferingBuckets > 0, config.pushPullStarts, now >= nextPushPullAt, !hasLeft else { return false }
        pushPullsInFlight = pushPullsInFlight.filter { $0.value > now }
        guard pushPullsInFlight[peer] == nil, pushPullsInFlight.count < Self.pushPullsInFlightLimit else { return false }
        let payload = statePayload(peerVersions: nil)
        pushPullsInFlight[peer] = now + config.pushPullTimeout
        nextPushPullAt = now + config.pushPullInterval
        counters.pushPullsStarted += 1
        counters.pushPullBytesSent += payload.count
        output.append(.pushPull(payload: payload, to: peer))
        return true
    }

    /// Takes a push/pull request that `from` (its gossip endpoint) sent over a stream: applies its
    /// state like gossip and answers with ours (`Directive.pushPullReply`), unless it is oversized or
    /// over the answer rate (then nothing is answered and the shell closes the stream).
    public mutating func receivePushPull(request payload: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        counters.pushPullBytesReceived += payload.count
        guard payload.count <= config.pushPullMaxBytes else { counters.pushPullOversized += 1; return finish(now: now) }
        guard config.pushPullDifferingBuckets > 0, !hasLeft else { counters.pushPullRateLimited += 1; return finish(now: now) }
        guard pushPullAnswers.admit(now: now, window: config.pushPullInterval, limit: config.pushPullAnswersPerInterval) else {
            counters.pushPullRateLimited += 1
            return finish(now: now)
        }
        let versions = applyPushPull(payload, from: from, now: now)
        let reply = statePayload(peerVersions: versions)
        counters.pushPullsAnswered += 1
        counters.pushPullBytesSent += reply.count
        output.append(.pushPullReply(payload: reply, to: from))
        return finish(now: now)
    }

    /// Takes the reply to our push/pull request to `from`. A reply we did not ask for (or after
    /// giving up on it) is refused: only the peer we chose may answer, once.
    public mutating func receivePushPull(reply payload: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        counters.pushPullBytesReceived += payload.count
        guard let deadline = pushPullsInFlight.removeValue(forKey: from), now <= deadline else {
            counters.pushPullUnsolicited += 1
            return finish(now: now)
        }
        guard payload.count <= config.pushPullMaxBytes else { counters.pushPullOversized += 1; return finish(now: now) }
        if !hasLeft {
            _ = applyPushPull(payload, from: from, now: now)
            counters.pushPullRepliesApplied += 1
        }
        return finish(now: now)
    }

    /// The stream to `peer` failed (refused, reset, timed out): it may be tried again at once.
    public mutating func pushPullFailed(to peer: Endpoint, now: Instant) -> [Directive] {
        pushPullsInFlight[peer] = nil
        return finish(now: now)
    }

    /// Applies a push/pull payload's records, claims and leaves like a datagram's (records first);
    /// returns the record version the sender holds of each member it mentions (for the answer).
    mutating func applyPushPull(_ payload: [UInt8], from: Endpoint, now: Instant) -> [String: UInt64] {
        let decoded = WireFormat.decodePayload(payload)
        counters.unknownMessagesSkipped += decoded.unknown
        if decoded.malformed > 0 || decoded.truncated { counters.droppedMalformed += 1 }
        var versions: [String: UInt64] = [:]
        var allowed: [WireMessage] = []
        allowed.reserveCapacity(decoded.messages.count)
        for m in decoded.messages {
            switch m {
            case .record(let s):
                versions[s.record.name] = max(versions[s.record.name] ?? 0, s.record.version)
                allowed.append(m)
            case .status(let name, let version, _, _):
                versions[name] = max(versions[name] ?? 0, version)
                allowed.append(m)
            case .leave(let notice):
                versions[notice.name] = max(versions[notice.name] ?? 0, notice.version)
                allowed.append(m)
            default:
                // Probes, digests and requests stay datagrams: a stream must not multiply answers.
                counters.pushPullDisallowedMessages += 1
            }
        }
        collectedRequests = []
        let generation = table.generation
        for m in allowed { if case .record = m { handle(m, from: from, now: now) } }
        for m in allowed { if case .record = m {} else { handle(m, from: from, now: now) } }
        let requests = collectedRequests ?? []
        collectedRequests = nil
        // In datagram-sized lists (an item is at most 18 bytes): `send` packs them, few per datagram.
        let chunk = max(1, (payloadBudget - WireFormat.messageHeader - 10) / 18)
        var batches: [WireMessage] = []
        for i in stride(from: 0, to: requests.count, by: chunk) {
            batches.append(.request(Array(requests[i..<min(i + chunk, requests.count)])))
        }
        if !batches.isEmpty { send(batches, to: from, piggyback: false) }
        hurryAntiEntropy(taught: Int(truncatingIfNeeded: table.generation &- generation) + requests.count, now: now)
        return versions
    }

    /// An exchange taught us `taught` changes; at `pushPullFollowUpChanges` or more views are still
    /// moving, so the next anti-entropy round comes within `pushPullFollowUp` (and its summary may
    /// start the next swap) instead of a whole interval.
    mutating func hurryAntiEntropy(taught: Int, now: Instant) {
        guard config.pushPullDifferingBuckets > 0, config.pushPullFollowUp > .zero, taught >= config.pushPullFollowUpChanges else { return }
        let soon = now + config.pushPullFollowUp.wmScaled(0.5) + jitter(config.pushPullFollowUp.wmScaled(0.5))
        if soon < nextAntiEntropyAt { nextAntiEntropyAt = soon }
    }

    /// Our whole state as a push/pull payload, at most `pushPullMaxBytes`: our record and claim, a
    /// claim about every member (dead travels as suspect, as in anti-entropy; left as its signed
    /// notice), then the records `peerVersions` shows the peer lacks or holds older (none for a
    /// request: the peer asks for what it lacks). What does not fit is left out from a random start.
    mutating func statePayload(peerVersions: [String: UInt64]?) -> [UInt8] {
        let budget = config.pushPullMaxBytes
        var payload = WireFormat.encode(.record(local))
        payload += WireFormat.encode(leaveNotice.map { .leave($0) } ?? aliveClaim())
        let names = table.names
        guard !names.isEmpty else { return payload }
        let start = Int.random(in: 0..<names.count, using: &rng)
        var lacking: [SignedNodeRecord] = []
        for step in 0..<names.count {
            let name = names[(start + step) % names.count]
            guard let m = table[name] else { continue }
            let v = m.signed.record.version
            let claim: WireMessage
            switch m.status {
            case .alive, .suspect: claim = .status(name: name, version: v, status: m.status, from: local.record.name)
            case .dead(let i): claim = .status(name: name, version: v, status: .suspect(incarnation: i), from: local.record.name)
            case .left:
                guard let l = m.leave else { continue }
                claim = .leave(l)
            }
            let bytes = WireFormat.encode(claim)
            if payload.count + bytes.count > budget { break }
            payload += bytes
            if let peerVersions, (peerVersions[name] ?? 0) < v { lacking.append(m.signed) }
        }
        for r in lacking {
            let bytes = WireFormat.encode(.record(r))
            if payload.count + bytes.count > budget { break }
            payload += bytes
        }
        return payload
    }
}
