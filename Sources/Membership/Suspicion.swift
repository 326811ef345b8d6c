/// One Lifeguard suspicion: its timeout starts at `maximum` and shrinks towards `minimum` as
/// independent members confirm it.
struct Suspicion: Equatable {
    var start: Instant
    /// Distinct members that claimed the suspicion (the first one does not count as a confirmation).
    var confirmers: Set<String>
    /// Confirmations that bring the timeout down to `minimum` (0: the timeout is `minimum`).
    var k: Int
    var minimum: Duration
    var maximum: Duration
    /// Direct checks sent to the suspect so far (`Suspicions.checkLead`).
    var checks = 0

    /// Lifeguard dogpile: max − (max − min) · log(c + 1) / log(k + 1), never below min, where c counts
    /// confirmations beyond the first suspicion.
    var deadline: Instant {
        let c = Double(confirmers.count - 1)
        let minNs = Double(minimum.wmNanoseconds)
        let maxNs = Double(maximum.wmNanoseconds)
        var timeout = minNs
        if k > 0 {
            let frac = lnDouble(c + 1) / lnDouble(Double(k) + 1)
            timeout = Swift.max(minNs, maxNs - frac * (maxNs - minNs))
        }
        return start + .nanoseconds(Int64(timeout))
    }

    /// When the next direct check is due: `lead` before the deadline, then `lead / 2` before it
    /// (nil: both sent, or checks off).
    func checkAt(lead: Duration) -> Instant? {
        guard lead > .zero, checks < 2 else { return nil }
        return deadline - lead.wmScaled(checks == 0 ? 1 : 0.5)
    }
}

/// The suspicions this node holds about suspect members, and the earliest instant one may expire.
/// A member is in here exactly while this node sees it suspect.
struct Suspicions {
    private(set) var byName: [String: Suspicion] = [:]
    /// When `expire` has work (or may have: it is never later than the earliest deadline or check).
    private(set) var nextCheck: Instant?
    /// How long before a suspicion's deadline this node checks with the suspect itself (twice, the
    /// second at half the lead; zero: never).
    var checkLead: Duration = .zero

    var isEmpty: Bool { byName.isEmpty }

    subscript(name: String) -> Suspicion? { byName[name] }

    /// Starts suspecting `name` on `claimant`'s word.
    mutating func start(_ name: String, claimant: String, now: Instant, k: Int, minimum: Duration, maximum: Duration) {
        let s = Suspicion(start: now, confirmers: [claimant], k: k, minimum: minimum, maximum: maximum)
        byName[name] = s
        note(s)
    }

    /// Records `claimant`'s confirmation of the suspicion of `name`. Returns nil when there is no
    /// suspicion or the claimant already counted; otherwise whether the confirmation is worth
    /// gossiping (one of the first k: later ones no longer shorten anyone's timeout).
    mutating func confirm(_ name: String, by claimant: String) -> Bool? {
        guard var s = byName[name], !s.confirmers.contains(claimant) else { return nil }
        s.confirmers.insert(claimant)
        byName[name] = s
        note(s)
        return s.confirmers.count - 1 <= s.k
    }

    /// Forgets the suspicion of `name` (refuted, confirmed dead, left, replaced or removed).
    mutating func clear(_ name: String) {
        byName[name] = nil
    }

    /// The suspects whose timeout ran out by `now` (they stay here until cleared) and those due for a
    /// direct check, each sorted by name. Each call scans every suspicion, so the next comes no sooner
    /// than `quantum` after `now` (deadlines are then up to `quantum` late): mass failures stay linear.
    mutating func expire(now: Instant, quantum: Duration = .milliseconds(100)) -> (dead: [String], check: [String]) {
        guard let next = nextCheck, now >= next else { return ([], []) }
        nextCheck = nil
        var due: [String] = [], check: [String] = []
        for (name, s) in byName {
            if now >= s.deadline {
                due.append(name)
            } else if let c = s.checkAt(lead: checkLead), now >= c {
                check.append(name)
            } else {
                note(s)
            }
        }
        for name in check {
            byName[name]!.checks += 1
            note(byName[name]!)
        }
        if let c = nextCheck, c < now + quantum { nextCheck = now + quantum }
        return (due.sorted(), check.sorted())
    }

    private mutating func note(_ s: Suspicion) {
        var d = s.deadline
        if let c = s.checkAt(lead: checkLead), c < d { d = c }
        if nextCheck.map({ d < $0 }) ?? true { nextCheck = d }
    }
}
