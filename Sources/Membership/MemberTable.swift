/// What this node holds about one other member.
///
/// Kept small (48 bytes): a view holds one per member, so N views of N members hold N² of them
/// (the simulator's 10,000 nodes). The record is shared storage; a leave notice, rare, is boxed.
struct MemberState {
    var signed: SignedNodeRecord
    var status: MemberStatus
    var since: Instant
    var hash: UInt64
    private var leaveBox: LeaveBox?

    init(signed: SignedNodeRecord, status: MemberStatus, since: Instant, hash: UInt64) {
        self.signed = signed
        self.status = status
        self.since = since
        self.hash = hash
    }

    /// The member's signed leave notice, when it left.
    var leave: LeaveNotice? {
        get { leaveBox?.notice }
        set { leaveBox = newValue.map(LeaveBox.init) }
    }

    private final class LeaveBox {
        let notice: LeaveNotice
        init(_ notice: LeaveNotice) { self.notice = notice }
    }
}

/// The member view with the indexes the protocol reads it through: a dense member list for random
/// choice, an index by name hash for lookups by name and anti-entropy requests, and the digest —
/// per name-hash bucket, its members and a fingerprint summing their (version, status) entries
/// (this node included), kept in step by `store` and `remove`, the only ways the view changes.
///
/// Laid out for size (it is N² entries in a simulated cluster): members sit in one dense array and
/// every index holds 32-bit positions into it, about 70 bytes per member in all.
struct MemberTable {
    /// Members in dense order (the order of `names`).
    private var slots: [MemberState] = []
    /// Open addressing with linear probing, by name hash: position in `slots` + 1, 0 when empty.
    /// Never more than half full.
    private var index: [Int32] = []
    /// Per bucket, the positions in `slots` of its members, so a summary answer reads only them.
    private var bucketMembers: [[Int32]]
    private(set) var bucketFingerprints: [UInt64]
    let bucketShift: UInt64
    /// Dead and left members (waiting to be reaped).
    private(set) var inactive: Set<String> = []
    /// Alive and suspect members.
    private(set) var activeCount = 0
    /// Moves with every change of the view (never otherwise).
    private(set) var generation: UInt64 = 0
    /// This node's own name hash and its current fingerprint term.
    let localHash: UInt64
    private var localTerm: UInt64

    /// An empty view with `buckets` digest buckets (a power of two, 1...64) and this node's entry.
    init(buckets: Int, localHash: UInt64, localVersion: UInt64, localStatus: MemberStatus) {
        var bits: UInt64 = 0
        while (1 << bits) < buckets { bits += 1 }
        bucketShift = 64 - bits
        bucketMembers = Array(repeating: [], count: buckets)
        bucketFingerprints = Array(repeating: 0, count: buckets)
        self.localHash = localHash
        localTerm = Self.fingerprint(localHash, localVersion, localStatus)
        bucketFingerprints[bucket(of: localHash)] &+= localTerm
    }

    subscript(name: String) -> MemberState? {
        position(of: name).map { slots[$0] }
    }

    /// Number of members (any status).
    var count: Int { slots.count }

    /// Member names in dense order, for O(1) random choice.
    var names: LazyMapSequence<[MemberState], String> { slots.lazy.map(\.signed.record.name) }

    /// Every member, in no particular order.
    var states: [MemberState] { slots }

    /// The member whose name hashes to `hash`.
    func name(forHash hash: UInt64) -> String? {
        guard !index.isEmpty else { return nil }
        let mask = index.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while index[i] != 0 {
            let p = Int(index[i] - 1)
            if slots[p].hash == hash { return slots[p].signed.record.name }
            i = (i + 1) & mask
        }
        return nil
    }

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
        entries.reserveCapacity(bucketMembers[b].count + 1)
        for p in bucketMembers[b] {
            let s = slots[Int(p)]
            entries.append(DigestEntry(nameHash: s.hash, version: s.signed.record.version, status: s.status))
        }
        if bucket(of: local.nameHash) == b { entries.append(local) }
        entries.sort { $0.nameHash < $1.nameHash }
        return entries
    }

    /// Makes room for `count` members without growing again (a saved or converged view).
    mutating func reserveCapacity(_ count: Int) {
        slots.reserveCapacity(count)
        if index.count < 2 * count { rebuildIndex(capacity: 2 * count) }
    }

    /// Adds or replaces a member, keeping fingerprints, indexes and status sets in step.
    mutating func store(_ name: String, _ state: MemberState) {
        generation &+= 1
        let b = bucket(of: state.hash)
        if let p = position(of: name) {
            let old = slots[p]
            bucketFingerprints[bucket(of: old.hash)] &-= Self.fingerprint(old.hash, old.signed.record.version, old.status)
            if old.status.isActive { activeCount -= 1 }
            slots[p] = state
        } else {
            if 2 * (slots.count + 1) > index.count { rebuildIndex(capacity: 2 * (slots.count + 1)) }
            let p = slots.count
            slots.append(state)
            insertIntoIndex(p)
            bucketMembers[b].append(Int32(p))
        }
        bucketFingerprints[b] &+= Self.fingerprint(state.hash, state.signed.record.version, state.status)
        if state.status.isActive { activeCount += 1 }
        if state.status.isActive { inactive.remove(name) } else { inactive.insert(name) }
    }

    /// Removes a member; returns its last state. The last member of the dense order takes its place.
    @discardableResult
    mutating func remove(_ name: String) -> MemberState? {
        guard let p = position(of: name) else { return nil }
        let old = slots[p]
        generation &+= 1
        let b = bucket(of: old.hash)
        bucketFingerprints[b] &-= Self.fingerprint(old.hash, old.signed.record.version, old.status)
        if old.status.isActive { activeCount -= 1 }
        inactive.remove(name)
        removeFromIndex(p)
        replace(in: b, Int32(p), with: nil)
        let last = slots.count - 1
        if p != last {
            let moved = slots[last]
            slots[p] = moved
            repoint(hash: moved.hash, from: last, to: p)
            replace(in: bucket(of: moved.hash), Int32(last), with: Int32(p))
        }
        slots.removeLast()
        return old
    }

    // MARK: - Index

    /// Position in `slots` of the member called `name`.
    private func position(of name: String) -> Int? {
        guard !index.isEmpty else { return nil }
        let hash = stableNameHash(name)
        let mask = index.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while index[i] != 0 {
            let p = Int(index[i] - 1)
            if slots[p].hash == hash, slots[p].signed.record.name == name { return p }
            i = (i + 1) & mask
        }
        return nil
    }

    private mutating func insertIntoIndex(_ p: Int) {
        let mask = index.count - 1
        var i = Int(truncatingIfNeeded: slots[p].hash) & mask
        while index[i] != 0 { i = (i + 1) & mask }
        index[i] = Int32(p + 1)
    }

    /// Empties the index slot of position `p`, shifting later entries of its probe run back so
    /// lookups need no tombstones.
    private mutating func removeFromIndex(_ p: Int) {
        let mask = index.count - 1
        var i = Int(truncatingIfNeeded: slots[p].hash) & mask
        while index[i] != Int32(p + 1) { i = (i + 1) & mask }
        var j = i
        while true {
            j = (j + 1) & mask
            if index[j] == 0 { break }
            let home = Int(truncatingIfNeeded: slots[Int(index[j] - 1)].hash) & mask
            // Entry j may fill hole i unless its home lies cyclically in (i, j].
            let stays = i <= j ? (i < home && home <= j) : (i < home || home <= j)
            if stays { continue }
            index[i] = index[j]
            i = j
        }
        index[i] = 0
    }

    private mutating func repoint(hash: UInt64, from old: Int, to new: Int) {
        let mask = index.count - 1
        var i = Int(truncatingIfNeeded: hash) & mask
        while index[i] != Int32(old + 1) { i = (i + 1) & mask }
        index[i] = Int32(new + 1)
    }

    private mutating func rebuildIndex(capacity: Int) {
        var size = 8
        while size < capacity { size <<= 1 }
        index = Array(repeating: 0, count: size)
        for p in slots.indices { insertIntoIndex(p) }
    }

    /// Replaces position `old` in bucket `b`'s member list with `new`, or drops it.
    private mutating func replace(in b: Int, _ old: Int32, with new: Int32?) {
        guard let k = bucketMembers[b].firstIndex(of: old) else { return }
        if let new {
            bucketMembers[b][k] = new
        } else {
            bucketMembers[b].swapAt(k, bucketMembers[b].count - 1)
            bucketMembers[b].removeLast()
        }
    }
}
