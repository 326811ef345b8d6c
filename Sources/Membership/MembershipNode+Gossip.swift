import IPNetwork

// Dissemination (piggyback queue, gossip rounds, joins) and anti-entropy (digest summaries, entry
// lists, push and pull of the members that differ).
extension MembershipNode {
    // MARK: - Dissemination

    mutating func enqueue(_ message: WireMessage, key: BroadcastKey) {
        broadcasts.enqueue(WireFormat.encode(message), key: key)
    }

    mutating func gossip(now: Instant) {
        guard !broadcasts.isEmpty else { return }
        let toTheDead = config.gossipToTheDead
        let targets = randomMembers(count: config.gossipNodes, excluding: nil, where: { m in
            m.status.isActive || (m.status.rank == 2 && now - m.since < toTheDead)
        })
        if targets.isEmpty, hasLeft { broadcasts.removeAll(); return }
        for name in targets {
            guard !broadcasts.isEmpty, let m = table[name] else { break }
            send([], to: m.signed.record.gossipAddress, piggyback: true)
        }
    }

    mutating func sendJoin(to endpoint: Endpoint) {
        send([.record(local), aliveClaim(), .digestSummary(fingerprints: table.summary)], to: endpoint, piggyback: false)
    }

    // MARK: - Anti-entropy

    mutating func antiEntropy(now: Instant) {
        let deadCount = table.inactive.count
        // Serf's reconnect: a digest to a dead member as well as (not instead of) the live one, so the
        // two sides of a healed partition find each other at the first round after the heal. Choosing
        // one or the other (at even odds) left all six nodes of a 3/3 split talking only to live members
        // for a round now and then, and the heal took a round more (5.8 s where 5 s was the goal;
        // issue 12's faults e2e).
        if deadCount > 0, table.activeCount == 0 || Double(rng.next() >> 11) / Double(1 << 53) < config.antiEntropyDeadProbability,
           let dead = randomMembers(count: 1, excluding: nil, where: { $0.status.rank == 2 }).first.flatMap({ table[$0]?.signed.record.gossipAddress }) {
            send([.digestSummary(fingerprints: table.summary)], to: dead, piggyback: true)
        }
        let target = randomMembers(count: 1, excluding: nil, where: { $0.status.isActive }).first.flatMap { table[$0]?.signed.record.gossipAddress }
        if target == nil, !seeds.isEmpty {
            // Alone: keep knocking on the seeds (they may be restarting too).
            let s = seeds[Int.random(in: 0..<seeds.count, using: &rng)]
            if s != local.record.gossipAddress { sendJoin(to: s) }
            return
        }
        guard let target else { return }
        send([.digestSummary(fingerprints: table.summary)], to: target, piggyback: true)
    }

    /// Lists our entries for (some of) the buckets whose fingerprints differ from the sender's.
    mutating func answerSummary(_ theirs: [UInt32], from: Endpoint, now: Instant) {
        guard theirs.count == table.bucketFingerprints.count else { counters.droppedMalformed += 1; return }
        let mine = table.summary
        let differing = (0..<mine.count).filter { mine[$0] != theirs[$0] }
        guard !differing.isEmpty else { return }
        // Far apart: one whole-state swap instead of a datagram of entries per half second.
        if config.pushPullDifferingBuckets > 0, differing.count >= config.pushPullDifferingBuckets,
           startPushPull(with: from, now: now) { return }
        let budget = payloadBudget - 16
        var used = 0
        var messages: [WireMessage] = []
        let start = Int.random(in: 0..<differing.count, using: &rng)
        var more = false
        for step in 0..<differing.count {
            let b = differing[(start + step) % differing.count]
            var entries = bucketEntries(b)
            let bounds = table.range(ofBucket: b)
            let lowerBound = bounds.lowerBound, upperBound = bounds.upperBound
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
        table.entries(inBucket: b, local: DigestEntry(nameHash: localHash, version: local.record.version, status: localStatus))
    }

    var localStatus: MemberStatus {
        hasLeft ? .left(incarnation: incarnation) : .alive(incarnation: incarnation)
    }

    /// Compares the peer's entries in `lower...upper` with ours: pushes what we have newer, pulls what
    /// it has newer.
    mutating func reconcile(lower: UInt64, upper: UInt64, more: Bool, entries: [DigestEntry], from: Endpoint, now: Instant) {
        guard lower <= upper, table.bucket(of: lower) == table.bucket(of: upper) else { counters.droppedMalformed += 1; return }
        var theirs: [UInt64: DigestEntry] = [:]
        for e in entries where e.nameHash >= lower && e.nameHash <= upper { theirs[e.nameHash] = e }
        var push: [WireMessage] = []
        var pull: [DigestRequest] = []
        for mine in bucketEntries(table.bucket(of: lower)) where mine.nameHash >= lower && mine.nameHash <= upper {
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
        var swapping = false
        if !pull.isEmpty {
            push.append(.request(pull))
            hurryAntiEntropy(taught: pull.count, now: now)
            // Far behind and the peer did not swap (it would have, instead of answering): swap from here.
            if pull.count >= config.pushPullBehindMembers { swapping = startPushPull(with: from, now: now) }
        }
        if !push.isEmpty { send(push, to: from, piggyback: false) }
        if more, !swapping, followUp == nil { followUp = (from, now + config.probeTimeout) }
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
        guard let name = table.name(forHash: h), let m = table[name] else { return [] }
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

}
