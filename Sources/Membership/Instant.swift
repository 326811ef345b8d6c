/// A point on a monotonic clock, in nanoseconds since an arbitrary origin.
///
/// The membership core never reads a clock: the shell (real time) or the simulator (virtual time)
/// passes `now` into every call, which keeps the core deterministic and testable.
public struct Instant: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: Int64

    /// An instant `nanoseconds` after the origin.
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// An instant `seconds` after the origin (fractions allowed).
    public static func seconds(_ seconds: Double) -> Instant {
        Instant(nanoseconds: Int64(seconds * 1e9))
    }

    /// The origin of the clock.
    public static var zero: Instant { Instant(nanoseconds: 0) }

    /// Seconds since the origin, for printing and statistics.
    public var seconds: Double { Double(nanoseconds) / 1e9 }

    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &+ d.wmNanoseconds)
    }

    public static func - (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &- d.wmNanoseconds)
    }

    /// The time from `b` to `a`.
    public static func - (a: Instant, b: Instant) -> Duration {
        .nanoseconds(a.nanoseconds &- b.nanoseconds)
    }

    public var description: String { "t=\(seconds)s" }
}

extension Duration {
    /// The duration as whole nanoseconds (saturating to Int64).
    var wmNanoseconds: Int64 {
        let (s, attos) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return s < 0 ? .min : .max }
        return ns &+ attos / 1_000_000_000
    }

    /// The duration scaled by a real factor.
    func wmScaled(_ factor: Double) -> Duration {
        .nanoseconds(Int64(Double(wmNanoseconds) * factor))
    }
}
