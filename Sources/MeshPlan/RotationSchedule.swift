import WireMeshCrypto

/// When a node rotates its WireGuard key by itself (`--key-rotation-interval`). Pure: every time is
/// passed in (seconds on the caller's clock), so it is tested with virtual time.
///
/// The schedule counts from the key's creation (persisted with the key), not from the agent's start,
/// so a restart neither postpones nor repeats a rotation. Each node's deadline is moved by up to
/// ±`jitter` × `interval`, seeded by its name and current public key: nodes created together do not
/// rotate together, and a node's next deadline is the same after a restart.
public struct KeyRotationSchedule: Sendable, Equatable {
    /// Seconds between rotations, before jitter.
    public var interval: Double
    /// The largest deadline shift, as a fraction of `interval`.
    public var jitter: Double
    /// Seconds after the agent starts before an overdue rotation runs: the member view must be
    /// gossiped first, or no peer would be told directly about the switch.
    public var settle: Double
    /// Seconds to wait after a failed attempt before trying again.
    public var retry: Double

    public init(interval: Double, jitter: Double = 0.1, settle: Double = 5, retry: Double = 30) {
        self.interval = interval
        self.jitter = jitter
        self.settle = settle
        self.retry = retry
    }

    /// What the caller should do now.
    public enum Decision: Sendable, Equatable {
        case rotate
        case wait(until: Double)
    }

    /// A fraction in [-1, 1), the same for the same node and key (FNV-1a 64 of name and key bytes).
    public static func jitterFraction(node: String, key: Key) -> Double {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in Array(node.utf8) + [0] + key.bytes {
            h ^= UInt64(b)
            h &*= 0x0000_0100_0000_01B3
        }
        return Double(h >> 11) / Double(UInt64(1) << 53) * 2 - 1
    }

    /// The deadline of the key `key` (public) created at `keyCreatedAt`.
    public func deadline(keyCreatedAt: Double, node: String, key: Key) -> Double {
        keyCreatedAt + interval * (1 + jitter * Self.jitterFraction(node: node, key: key))
    }

    /// Rotate now, or wait: not before the deadline, not before `settle` after the agent started, and
    /// not before `retry` after the last failed attempt.
    public func decide(now: Double, keyCreatedAt: Double, node: String, key: Key, agentStartedAt: Double,
                       lastFailure: Double?) -> Decision {
        var earliest = max(deadline(keyCreatedAt: keyCreatedAt, node: node, key: key), agentStartedAt + settle)
        if let lastFailure { earliest = max(earliest, lastFailure + retry) }
        return now >= earliest ? .rotate : .wait(until: earliest)
    }
}
