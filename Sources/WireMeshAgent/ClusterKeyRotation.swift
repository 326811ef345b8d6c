import WireMeshCrypto

/// Where a node is in a cluster (gossip) key rotation; `wiremesh status` shows it.
public enum ClusterKeyPhase: String, Sendable, Codable, Equatable {
    /// One key; nothing to do.
    case steady
    /// A newer key is installed (opens messages) and becomes primary once every live member holds it.
    case installing
    /// The newest key is primary; older keys still open messages until their grace period ends.
    case retiring
}

/// What one member advertises in its signed record: whether it is live and the key tags it holds,
/// its primary first.
public struct MemberKeys: Sendable, Equatable {
    public var name: String
    /// Alive or suspect: a live member blocks promotion until it lists the new key. Dead ones do not.
    public var live: Bool
    public var keys: [ClusterKeyTag]

    public init(name: String, live: Bool, keys: [ClusterKeyTag]) {
        self.name = name
        self.live = live
        self.keys = keys
    }
}

/// What the agent must do after a step of `ClusterKeyRotation`.
public enum ClusterKeyAction: Sendable, Equatable {
    /// Seal with this (installed) key from now on.
    case promote(ClusterKeyID)
    /// Forget this key (its grace period is over).
    case remove(ClusterKeyID)
    /// `from` advertises a key newer than any this node holds: ask it for the keyring.
    case fetch(ClusterKeyTag, from: String)
    /// `from` advertises a key whose generation is implausibly far above this node's newest
    /// (`ClusterKeyRotation.maxGenerationStep`): not fetched, not installed (a hostile or damaged record).
    case ignore(ClusterKeyTag, from: String)
}

/// The pure cluster key rotation state machine (no I/O, no clock: callers pass wall-clock seconds,
/// so deadlines survive restarts once persisted).
///
/// The rule every member applies on its own, with no coordinator:
/// - the *target* is the installed key with the highest (generation, id); two rotations started at
///   once both make generation n+1 and the higher id wins everywhere;
/// - the target becomes primary once every live member's record lists it, or a live member already
///   uses it as primary (that member saw every live member holding it);
/// - any other non-primary key is retired: removed `grace` seconds later, but never while a live
///   member still seals with it;
/// - a member advertising a key above the target is asked for it (`fetch`).
public struct ClusterKeyRotation: Sendable, Equatable {
    /// One installed key's metadata (the secret stays in the `Keyring`).
    public struct Entry: Sendable, Equatable {
        public var id: ClusterKeyID
        /// nil until learned (keys handed over by a join grant carry none; records tell).
        public var generation: UInt64?
        /// When the key is removed (wall-clock seconds), once it is neither primary nor target.
        public var retireAt: Double?

        public init(id: ClusterKeyID, generation: UInt64?, retireAt: Double? = nil) {
            self.id = id
            self.generation = generation
            self.retireAt = retireAt
        }

        var tag: ClusterKeyTag { ClusterKeyTag(id: id, generation: generation ?? 0) }
    }

    /// Installed keys, primary first (the same order as the `Keyring`).
    public private(set) var entries: [Entry]

    /// Restores a persisted state; `entries` must not be empty (the first is the primary).
    public init(entries: [Entry]) {
        precondition(!entries.isEmpty, "a keyring holds at least its primary key")
        self.entries = entries
    }

    public var primary: Entry { entries[0] }

    /// The key every member moves to: the highest (generation, id) installed.
    public var target: Entry { entries.max { $0.tag < $1.tag }! }

    public var phase: ClusterKeyPhase {
        if target.id != primary.id { return .installing }
        return entries.count > 1 ? .retiring : .steady
    }

    /// What this node advertises in its record: every installed key, primary first.
    public var tags: [ClusterKeyTag] { entries.map(\.tag) }

    public func holds(_ id: ClusterKeyID) -> Bool { entries.contains { $0.id == id } }

    /// How far above this node's newest key (`target`) a key's generation may be for this node to
    /// fetch, install or count it. Each rotation adds one, so a real key is a few generations ahead
    /// at most (a node that was away during several rotations). A key far beyond is a member's doing:
    /// one at 2^64 - 1, handed over by a hostile member, left no next generation, so no rotation
    /// could follow it, not even the one an eviction makes, and the evicted member kept the
    /// cluster key for good. With this bound a member must get every node to fetch from it 2^48
    /// times to get there.
    public static let maxGenerationStep: UInt64 = 1 << 16

    /// The largest generation this node takes from others now.
    var generationBound: UInt64 {
        let (bound, overflow) = target.tag.generation.addingReportingOverflow(Self.maxGenerationStep)
        return overflow ? .max : bound
    }

    /// The generation of a key made now by `cluster-key rotate`: one above every key known here
    /// (members' keys beyond `maxGenerationStep` are not counted); nil when this node's own keyring
    /// holds the largest generation there is (no real rotation gets there: a damaged state, which must
    /// not crash the agent).
    public func nextGeneration(members: [MemberKeys]) -> UInt64? {
        let bound = generationBound
        let known = entries.map(\.tag.generation) + members.flatMap { $0.keys.map(\.generation).filter { $0 <= bound } }
        let (next, overflow) = (known.max() ?? 0).addingReportingOverflow(1)
        return overflow ? nil : next
    }

    /// Installs a key (not primary); returns false when it was already installed.
    @discardableResult
    public mutating func install(_ tag: ClusterKeyTag) -> Bool {
        if let i = entries.firstIndex(where: { $0.id == tag.id }) {
            if entries[i].generation == nil { entries[i].generation = tag.generation }
            return false
        }
        entries.append(Entry(id: tag.id, generation: tag.generation))
        return true
    }

    /// Merges a keyring a member handed over (`keys`, its primary first): installs what is missing
    /// and, if the member's primary is newer than ours, seals with it at once (the member only made
    /// it primary once every live member held it; a node that was away cannot wait for gossip it
    /// cannot read). Call `evaluate` afterwards for the retirements.
    public mutating func merge(_ keys: [ClusterKeyTag]) -> [ClusterKeyAction] {
        // Generations beyond the bound are refused whoever hands them over (see `maxGenerationStep`).
        let bound = generationBound
        let keys = keys.filter { $0.generation <= bound }
        for tag in keys { install(tag) }
        guard let theirs = keys.first, theirs > primary.tag, theirs.id != primary.id else { return [] }
        promote(theirs.id)
        return [.promote(theirs.id)]
    }

    /// One step: learn generations from records, promote the target when every live member holds it,
    /// retire and remove old keys, ask for a newer key a member advertises.
    public mutating func evaluate(members: [MemberKeys], now: Double, grace: Double) -> [ClusterKeyAction] {
        var actions: [ClusterKeyAction] = []
        let bound = generationBound
        for member in members {
            for tag in member.keys where tag.generation <= bound {
                if let i = entries.firstIndex(where: { $0.id == tag.id }), entries[i].generation == nil {
                    entries[i].generation = tag.generation
                }
            }
        }
        let live = members.filter(\.live)
        let target = self.target
        if target.id != primary.id {
            let everyoneHasIt = live.allSatisfy { $0.keys.contains { $0.id == target.id } }
            let someoneUsesIt = live.contains { $0.keys.first?.id == target.id }
            if everyoneHasIt || someoneUsesIt {
                promote(target.id)
                actions.append(.promote(target.id))
            }
        }
        let keep = [primary.id, self.target.id]
        for i in entries.indices.reversed() where i > 0 {
            let id = entries[i].id
            if keep.contains(id) { entries[i].retireAt = nil; continue }
            guard let at = entries[i].retireAt else { entries[i].retireAt = now + grace; continue }
            let stillUsed = live.contains { $0.keys.first?.id == id }
            if now >= at && !stillUsed {
                entries.remove(at: i)
                actions.append(.remove(id))
            }
        }
        let newest = self.target.tag
        var fetching = false
        for member in live {
            for tag in member.keys where tag > newest && !holds(tag.id) {
                if tag.generation > bound {
                    actions.append(.ignore(tag, from: member.name))
                } else if !fetching {
                    actions.append(.fetch(tag, from: member.name))
                    fetching = true
                }
            }
        }
        return actions
    }

    mutating func promote(_ id: ClusterKeyID) {
        guard let i = entries.firstIndex(where: { $0.id == id }) else { return }
        var entry = entries.remove(at: i)
        entry.retireAt = nil
        entries.insert(entry, at: 0)
    }
}

/// Who a new cluster key waits for, counted from the same `MemberKeys` that `evaluate` reads (other
/// members only): this node holds its new key already, so it is added once.
public struct ClusterKeyAudience: Sendable, Equatable {
    /// Other members that are live (alive or suspect): each must list the key before it is promoted.
    public var liveOthers: Int
    /// Other members known but not live (dead or left): they do not block.
    public var notLive: Int

    public init(members: [MemberKeys]) {
        liveOthers = members.filter(\.live).count
        notLive = members.count - liveOthers
    }

    /// Live members of the cluster, this node included.
    public var live: Int { liveOthers + 1 }

    /// What `cluster-key rotate` answers once `tag` is installed here.
    public func startedMessage(_ tag: ClusterKeyTag, graceSeconds: Int) -> String {
        let who = liveOthers == 0
            ? "it is primary at once: this node is the only live member"
            : "it becomes primary once all \(live) live members hold it (this node and \(liveOthers) other\(liveOthers == 1 ? "" : "s"))"
        let blocked = notLive == 0 ? "" : "; \(notLive) dead or departed member\(notLive == 1 ? " does" : "s do") not hold it up"
        return "installed cluster key \(tag.id) (generation \(tag.generation)); \(who)\(blocked), "
            + "and the old key is removed \(graceSeconds) s after that: 'wiremesh status' shows the phase"
    }
}
