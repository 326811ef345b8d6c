/// Which update a broadcast carries: a member's record or its liveness (status or leave). A newer
/// update of the same key replaces the queued one, so the queue holds at most two per member.
struct BroadcastKey: Hashable {
    enum Kind: Hashable { case record, status }
    var name: String
    var kind: Kind
}

/// The SWIM dissemination queue: encoded updates piggybacked on outgoing datagrams, each up to a
/// retransmit limit, fewest transmissions first and newest first within a tier (like memberlist's
/// queue, so fresh news overtakes news most members already heard).
struct BroadcastQueue {
    struct Entry {
        var bytes: [UInt8]
        var transmits: Int
        var serial: UInt64
    }

    /// The pending broadcast of each key.
    private(set) var entries: [BroadcastKey: Entry] = [:]
    /// Keys by transmit count, oldest first. Entries whose broadcast was replaced, sent or removed are
    /// skipped and dropped lazily: selection costs what is sent, not the queue length.
    private var tiers: [[(key: BroadcastKey, serial: UInt64)]] = []
    private var serial: UInt64 = 0

    var isEmpty: Bool { entries.isEmpty }
    var count: Int { entries.count }

    /// Queues `bytes` (one encoded message) under `key`, replacing what was queued there, with no
    /// transmissions yet.
    mutating func enqueue(_ bytes: [UInt8], key: BroadcastKey) {
        serial += 1
        entries[key] = Entry(bytes: bytes, transmits: 0, serial: serial)
        if tiers.isEmpty { tiers.append([]) }
        tiers[0].append((key, serial))
    }

    /// Forgets the broadcast of `key` (its member was reaped).
    mutating func remove(_ key: BroadcastKey) {
        entries[key] = nil
    }

    /// Forgets every broadcast.
    mutating func removeAll() {
        entries.removeAll()
        tiers.removeAll()
    }

    /// Appends pending broadcasts to `payload` while they fit in `budget` bytes, counts a
    /// transmission for each and drops those that reached `limit` transmissions.
    mutating func fill(_ payload: inout [UInt8], budget: Int, limit: Int) {
        guard !entries.isEmpty else { return }
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
                guard let b = entries[key], b.serial == serial, b.transmits == t else {
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
                        entries[key] = nil
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
            entries[p.key]?.transmits = p.tier
            while tiers.count <= p.tier { tiers.append([]) }
            tiers[p.tier].append((p.key, p.serial))
        }
        if entries.isEmpty { tiers.removeAll() }
    }
}
