import IPNetwork
import WireMeshCrypto

// Failure detection (SWIM probes, Lifeguard awareness and suspicion expiry) and reaping.
extension MembershipNode {
    // MARK: - Failure detection

    mutating func startProbe(now: Instant) {
        probe = nil
        guard let target = nextProbeTarget(), let m = table[target] else { return }
        let seq = takeSeq()
        let scale = Double(awareness + 1)
        probe = ProbeState(target: target, seq: seq, start: now,
                           indirectAt: now + config.probeTimeout.wmScaled(scale),
                           end: now + config.probeInterval.wmScaled(scale))
        pendingAcks[seq] = .probe
        send(directProbe(seq: seq, target: m), to: m.signed.record.gossipAddress, piggyback: true)
    }

    /// A ping of `m`, plus (Lifeguard buddy system) its suspicion when we hold it suspect, so a
    /// suspect hears it directly and can refute at once.
    func directProbe(seq: UInt32, target m: MemberState) -> [WireMessage] {
        let name = m.signed.record.name
        var messages: [WireMessage] = [.ping(seq: seq, target: name, source: local.record.name)]
        if case .suspect = m.status {
            messages.append(.status(name: name, version: m.signed.record.version, status: m.status, from: local.record.name))
        }
        return messages
    }

    /// Pings the unacked probe target directly again (`probeRetries`); the last retry also goes over
    /// a stream when `streamProbes` is on. Same sequence number: any of the acks ends the probe.
    mutating func retryProbe(now: Instant) {
        guard var p = probe, !p.acked, let m = table[p.target] else { return }
        p.retries += 1
        let total = config.probeRetries
        // Retries at indirectAt + j·(end − indirectAt)/total, j = 0 ..< total.
        p.nextRetryAt = p.retries < total ? p.indirectAt + (p.end - p.indirectAt).wmScaled(Double(p.retries) / Double(total)) : nil
        probe = p
        counters.probeRetriesSent += 1
        let ping = directProbe(seq: p.seq, target: m)
        send(ping, to: m.signed.record.gossipAddress, piggyback: false)
        if p.retries == total, config.streamProbes {
            counters.streamProbesSent += 1
            output.append(.streamProbe(payload: WireFormat.encode(ping[0]), to: m.signed.record.gossipAddress))
        }
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
        if config.probeRetries > 0 { retryProbe(now: now) }
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
        counters.probesFailed += 1
        applyClaim(name: p.target, version: m.signed.record.version, status: .suspect(incarnation: m.status.incarnation),
                   claimant: local.record.name, leave: nil, from: m.signed.record.gossipAddress, now: now)
    }

    mutating func nextProbeTarget() -> String? {
        var reshuffled = false
        while true {
            if probeIndex >= probeOrder.count {
                if reshuffled { return nil }
                reshuffled = true
                probeOrder = table.names.filter { table[$0]?.status.isActive == true }
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

    /// Inserts `names` one after the other at random places, as `insertIntoProbeOrder(_:)` does for
    /// each (the same draws, the same order), in O(n log n) instead of O(n²): a seeded view of
    /// 10,000 members took minutes. Each name's final place is the (position + 1)-th slot left free
    /// by the names inserted after it, found from the last name back with a Fenwick tree.
    mutating func insertIntoProbeOrder(_ names: [String]) {
        guard names.count > 1 else {
            for name in names { insertIntoProbeOrder(name) }
            return
        }
        let old = probeOrder.count
        var positions: [Int] = []
        positions.reserveCapacity(names.count)
        for k in 0..<names.count {
            let size = old + k
            let i = size == 0 ? 0 : Int.random(in: 0...size, using: &rng)
            positions.append(i)
            if i < probeIndex { probeIndex += 1 }
        }
        let total = old + names.count
        // free[1...total]: 1 while the slot is free (1-based Fenwick tree over slot counts).
        var tree = [Int](repeating: 0, count: total + 1)
        for s in 1...total {
            tree[s] += 1
            let parent = s + (s & -s)
            if parent <= total { tree[parent] += tree[s] }
        }
        var top = 1
        while top * 2 <= total { top *= 2 }
        /// Takes the k-th (1-based) free slot and returns its 0-based index.
        func take(_ k: Int) -> Int {
            var at = 0, left = k, step = top
            while step > 0 {
                if at + step <= total, tree[at + step] < left {
                    at += step
                    left -= tree[at]
                }
                step >>= 1
            }
            var s = at + 1
            while s <= total { tree[s] -= 1; s += s & -s }
            return at
        }
        var order = [String?](repeating: nil, count: total)
        for k in stride(from: names.count - 1, through: 0, by: -1) {
            order[take(positions[k] + 1)] = names[k]
        }
        var rest = 0
        for s in 0..<total where order[s] == nil {
            order[s] = probeOrder[rest]
            rest += 1
        }
        probeOrder = order.map { $0! }
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

    /// Declares dead every suspect whose suspicion timed out, and tells those due for a check their
    /// suspicion directly: a suspect that has refuted already answers with its alive claim, so an
    /// observer that gossip missed (it happens: ~12 copies of a refutation reach a node on average,
    /// each lost at 10 %) does not declare a healthy node dead. Costs a datagram or two per observer
    /// that has not heard a refutation a second before its deadline: none when the refutation spread.
    mutating func expireSuspicions(now: Instant) {
        let (dead, check) = suspicions.expire(now: now)
        for name in check {
            guard let m = table[name], case .suspect = m.status else { continue }
            counters.suspicionChecksSent += 1
            send([.status(name: name, version: m.signed.record.version, status: m.status, from: local.record.name)],
                 to: m.signed.record.gossipAddress, piggyback: false)
        }
        for name in dead {
            guard let m = table[name], case .suspect(let i) = m.status else { suspicions.clear(name); continue }
            applyClaim(name: name, version: m.signed.record.version, status: .dead(incarnation: i),
                       claimant: local.record.name, leave: nil, from: m.signed.record.gossipAddress, now: now)
        }
    }

    mutating func adjustAwareness(_ delta: Int) {
        awareness = Swift.min(Swift.max(awareness + delta, 0), config.awarenessMaxMultiplier - 1)
    }

    mutating func reap(now: Instant) {
        guard !table.inactive.isEmpty || !tombstones.isEmpty else { return }
        var due: [String] = []
        for name in table.inactive {
            if let m = table[name], now - m.since >= config.reapTime { due.append(name) }
        }
        for name in due.sorted() {
            guard let m = table[name] else { continue }
            removeMember(name)
            tombstones[name] = Tombstone(identity: m.signed.record.identity, version: m.signed.record.version,
                                        record: m.signed, until: now + config.tombstoneTime)
            tombstoneByHash[m.hash] = name
            broadcasts.remove(BroadcastKey(name: name, kind: .record))
            broadcasts.remove(BroadcastKey(name: name, kind: .status))
            emit(.reaped, m)
        }
        let expired = tombstones.filter { now >= $0.value.until }.map(\.key)
        for name in expired {
            tombstones[name] = nil
            tombstoneByHash[stableNameHash(name)] = nil
        }
    }

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
    /// When the period ends (the next probe starts, and an unacked target becomes suspect).
    var end: Instant
    var acked = false
    /// Direct retries sent, and when the next one is due (nil: none left).
    var retries = 0
    var nextRetryAt: Instant?
    var indirectSent = false
    var expectedNacks = 0
    var nacks = 0
}

enum AckWaiter {
    case probe
    case relay(origin: Endpoint, originSeq: UInt32, nackAt: Instant?, expires: Instant)
}
