import Membership

/// Which nodes have seen a given record version of a node, and when.
struct RecordWatch {
    var subject: Int
    var version: UInt64
    var start: Instant
    /// First time each observer saw the version (or a newer one); nil while unseen.
    var seen: [Instant?]
}

/// When each node first declared a given node dead (or saw it leave / reaped it).
struct DeathWatch {
    var subject: Int
    var start: Instant
    var marked: [Instant?]
}

/// A handle on a measurement started with `watchRecord` or `watchDeath`.
public struct WatchID: Sendable, Hashable {
    let index: Int
}

extension Simulation {
    func setView(_ o: Int, _ s: Int, _ version: UInt64, _ rank: UInt8) {
        let k = o * n + s
        if rank != 254, viewRank[k] != 255, version < viewVersion[k] { versionRegressions += 1 }
        if rank != 254 { viewVersion[k] = version }
        viewRank[k] = rank
    }

    /// Takes in one member event of `observer`: view matrix, watches, health checks, trace.
    func observe(observer o: Int, _ event: MemberEvent) {
        guard let sIndex = nameIndex[event.member.name] else { return }
        let s = Int(sIndex)
        let version = event.member.record.record.version
        let rank: UInt8
        switch event.kind {
        case .reaped, .evicted: rank = 254
        default:
            switch event.member.status {
            case .alive: rank = 0
            case .suspect: rank = 1
            case .dead: rank = 2
            case .left: rank = 3
            }
        }
        let kindCode: UInt64
        switch event.kind {
        case .joined: kindCode = 0
        case .updated: kindCode = 1
        case .suspect: kindCode = 2
        case .alive: kindCode = 3
        case .dead: kindCode = 4
        case .left: kindCode = 5
        case .reaped: kindCode = 6
        case .evicted: kindCode = 7
        }
        trace.mix(9, UInt64(now.nanoseconds), UInt64(o), UInt64(s), kindCode, version, event.member.status.incarnation)
        setView(o, s, version, rank)
        if recordEvents { eventLog.append((now, o, event)) }

        for w in recordWatches.indices where recordWatches[w].subject == s && recordWatches[w].seen[o] == nil {
            if version >= recordWatches[w].version { recordWatches[w].seen[o] = now }
        }
        if rank >= 2 {
            for w in deathWatches.indices where deathWatches[w].subject == s && deathWatches[w].marked[o] == nil {
                deathWatches[w].marked[o] = now
            }
        }
        if event.kind == .dead, hosts[s].up, !hosts[s].left, !isStalled(s), reachable(o, s), reachable(s, o),
           version == cores[s]?.localRecord.record.version {
            healthyDeclaredDead.insert(s)
            healthyDeadDeclarations += 1
        }
        if event.kind == .left, hosts[s].up, !hosts[s].left, version == cores[s]?.localRecord.record.version {
            falselyLeft.insert(s)
        }
    }

    /// Starts measuring how `version` (or newer) of `subject`'s record spreads, from now.
    public func watchRecord(_ subject: Int, version: UInt64) -> WatchID {
        var seen = [Instant?](repeating: nil, count: n)
        for o in 0..<n where o != subject && viewRank[o * n + subject] < 254 && viewVersion[o * n + subject] >= version {
            seen[o] = now
        }
        recordWatches.append(RecordWatch(subject: subject, version: version, start: now, seen: seen))
        return WatchID(index: recordWatches.count - 1)
    }

    /// Starts measuring how fast the cluster declares `subject` dead (or left), from now.
    public func watchDeath(_ subject: Int) -> WatchID {
        deathWatches.append(DeathWatch(subject: subject, start: now, marked: [Instant?](repeating: nil, count: n)))
        return WatchID(index: deathWatches.count - 1)
    }

    /// Time from the watch start until every live node (other than the subject) had seen the version,
    /// or nil if some live node has not seen it yet.
    public func disseminationTime(_ id: WatchID) -> Duration? {
        let w = recordWatches[id.index]
        var last = w.start
        for o in 0..<n where o != w.subject && isLive(o) {
            guard let t = w.seen[o] else { return nil }
            if t > last { last = t }
        }
        return last - w.start
    }

    /// How many live nodes (other than the subject) have seen the watched version.
    public func disseminationCount(_ id: WatchID) -> (seen: Int, of: Int) {
        let w = recordWatches[id.index]
        var seen = 0, total = 0
        for o in 0..<n where o != w.subject && isLive(o) {
            total += 1
            if w.seen[o] != nil { seen += 1 }
        }
        return (seen, total)
    }

    /// Time from the watch start until every live node (other than the subject) had declared the
    /// subject dead or left, or nil if some has not.
    public func deathDetectionTime(_ id: WatchID) -> Duration? {
        let w = deathWatches[id.index]
        var last = w.start
        for o in 0..<n where o != w.subject && isLive(o) {
            guard let t = w.marked[o] else { return nil }
            if t > last { last = t }
        }
        return last - w.start
    }
}

/// Nearest-rank percentile of `values` (p in 0...100); 0 for an empty list.
public func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return 0 }
    let sorted = values.sorted()
    let rank = Int((p / 100 * Double(sorted.count)).rounded(.up))
    return sorted[min(max(rank, 1), sorted.count) - 1]
}
