/// Refuses a sealed datagram seen before, by its nonce (random, 24 bytes, under the AEAD tag: only
/// a cluster-key holder makes a fresh one). A replay would be answered — a captured ping earns an
/// ack, over and over — and old claims would cost a signature check each.
///
/// Two generations of nonces, each at most `capacity`: a new generation starts every `window` or
/// when the current one is full, and the one before it is forgotten. A replay is therefore caught
/// for at least one window (less under a flood of fresh datagrams, which only a member can send);
/// an older one reaches the core, whose versions and sequence numbers make it change nothing.
/// Memory stays below 2 × `capacity` entries whatever arrives.
public struct ReplayFilter: Sendable {
    struct Nonce: Hashable, Sendable { var a: UInt64; var b: UInt64 }

    public let window: Duration
    public let capacity: Int
    private var current: Set<Nonce> = []
    private var previous: Set<Nonce> = []
    private var started: Instant?

    public init(window: Duration = .seconds(60), capacity: Int = 16_384) {
        self.window = window
        self.capacity = max(1, capacity)
    }

    /// Entries held (both generations).
    public var count: Int { current.count + previous.count }

    /// Records `nonce` (its first 16 bytes identify it); false when it was seen already.
    public mutating func admit<Bytes: Collection<UInt8>>(nonce: Bytes, now: Instant) -> Bool {
        var key = Nonce(a: 0, b: 0)
        for (i, byte) in nonce.prefix(16).enumerated() {
            if i < 8 { key.a = key.a << 8 | UInt64(byte) } else { key.b = key.b << 8 | UInt64(byte) }
        }
        if started == nil { started = now }
        if let t = started, now - t >= window || now < t || current.count >= capacity {
            previous = current
            current = []
            current.reserveCapacity(min(capacity, 1024))
            started = now
        }
        if previous.contains(key) { return false }
        return current.insert(key).inserted
    }
}
