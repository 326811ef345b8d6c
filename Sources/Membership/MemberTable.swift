/// What this node holds about one other member.
struct MemberState {
    var signed: SignedNodeRecord
    var status: MemberStatus
    var since: Instant
    var hash: UInt64
    var leave: LeaveNotice?

    init(signed: SignedNodeRecord, status: MemberStatus, since: Instant, hash: UInt64) {
        self.signed = signed
        self.status = status
        self.since = since
        self.hash = hash
    }
}

/// The member view with the indexes the protocol reads it through: a dense name list for random
/// choice, name hashes for anti-entropy requests, and the digest — per name-hash bucket, each
/// member's (version, status) entry and a fingerprint summing them (this node included), kept in
/// step by `store` and `remove`, the only ways the view changes.
struct MemberTable {
    private(set) var states: [String: MemberState] = [:]
    /// Dense list of member names for O(1) random choice.
    private(set) var names: [String] = []
    private var nameIndex: [String: Int] = [:]
    private var byHash: [UInt64: String] = [:]
    /// Per bucket, each member's digest entry by name hash, so a summary answer reads entries
    /// without copying member states.
    private var bucketDigests: [[UInt64: DigestEntry]]
    private(set) var bucketFingerprints: [UInt64]
    let bucketShift: UInt64
    /// Dead and left members (waiting to be reaped).
    private(set) var inactive: Set<String> = []
    /// Alive and suspect members.
    private(set) var activeCount = 0
    /// Moves with every change of `states` (never otherwise).
    private(set) var generation: UInt64 = 0
    /// This node's own name hash and its current fingerprint term.
    let localHash: UInt64
    private var localTerm: UInt64

    /// An empty view with `buckets` digest buckets (a power of two, 1...64) and this node's entry.
    init(buckets: Int, localHash: UInt64, localVersion: UInt64, localStatus: MemberStatus) {
        var bits: UInt64 = 0
        while (1 << bits) < buckets { bits += 1 }
        bucketShift = 64 - bits
        bucketDigests = Array(repeating: [:], count: buckets)
        bucketFingerprints = Array(repeating: 0, count: buckets)
        self.localHash = localHash
        localTerm = Self.fingerprint(localHash, localVersion, localStatus)
        bucketFingerprints[bucket(of: localHash)] &+= localTerm
    }

    subscript(name: String) -> MemberState? { states[name] }

    /// Number of members (any status).
    var count: Int { states.count }

    /// The member whose name hashes to `hash`.
    func name(forHash hash: UInt64) -> String? { byHash[hash] }

    func bucket(of hash: UInt64) -> Int { bucketShift == 64 ? 0 : Int(hash >> bucketShift) }

    /// The name-hash range bucket `b` covers.
    func range(ofBucket b: Int) -> ClosedRange<UInt64> {
        let lower = UInt64(b) << bucketShift
        return lower...(bucketShift == 64 ? UInt64.max : lower | ((1 << bucketShift) - 1))
    }

    static func fingerprint(_ hash: UInt64, _ version: UInt64, _ status: MemberStatus) -> UInt64 {
        mix64(hash &+ mix64(version &* 0x9E37_79B9_7F4A_7C15 ^ (status.incarnation << 2 | UInt64(status.rank))))
    }

    /// The digest summary: one 32-bit fingerprint per bucket.
    var summary: [UInt32] {
        bucketFingerprints.map { UInt32(truncatingIfNeeded: $0 ^ ($0 >> 32)) }
    }

    /// Changes this node's own term in the digest.
    mutating func setLocal(version: UInt64, status: MemberStatus) {
        let term = Self.fingerprint(localHash, version, status)
        bucketFingerprints[bucket(of: localHash)] &+= term &- localTerm
        localTerm = term
    }

    /// The digest entries in bucket `b` sorted by name hash, with `local` (this node's entry) if it
    /// falls in the bucket.
    func entries(inBucket b: Int, local: DigestEntry) -> [DigestEntry] {
        var entries: [DigestEntry] = []
        entries.reserveCapacity(bucketDigests[b].count + 1)
        entries.append(contentsOf: bucketDigests[b].values)
        if bucket(of: local.nameHash) == b { entries.append(local) }
        entries.sort { $0.nameHash < $1.nameHash }
        return entries
    }

    /// Adds or replaces a member, keeping fingerprints, indexes and status sets in step.
    mutating func store(_ name: String, _ state: MemberState) {
        generation &+= 1
        let b = bucket(of: state.hash)
        if let old = states[name] {
            bucketFingerprints[b] &-= Self.fingerprint(old.hash, old.signed.record.version, old.status)
            if old.status.isActive { activeCount -= 1 }
        } else {
            nameIndex[name] = names.count
            names.append(name)
            byHash[state.hash] = name
        }
        bucketDigests[b][state.hash] = DigestEntry(nameHash: state.hash, version: state.signed.record.version, status: state.status)
        states[name] = state
        bucketFingerprints[b] &+= Self.fingerprint(state.hash, state.signed.record.version, state.status)
        if state.status.isActive { activeCount += 1 }
        if state.status.isActive { inactive.remove(name) } else { inactive.insert(name) }
    }

    /// Removes a member; returns its last state.
    @discardableResult
    mutating func remove(_ name: String) -> MemberState? {
        guard let old = states.removeValue(forKey: name) else { return nil }
        generation &+= 1
        let b = bucket(of: old.hash)
        bucketFingerprints[b] &-= Self.fingerprint(old.hash, old.signed.record.version, old.status)
        if old.status.isActive { activeCount -= 1 }
        bucketDigests[b][old.hash] = nil
        byHash[old.hash] = nil
        inactive.remove(name)
        if let i = nameIndex.removeValue(forKey: name) {
            let last = names.removeLast()
            if i < names.count {
                names[i] = last
                nameIndex[last] = i
            }
        }
        return old
    }
}
