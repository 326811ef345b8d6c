import Foundation

/// The agent's two clocks, injected so tests can move time: the monotonic one for every TTL and
/// interval (a wall-clock jump must not expire or extend them), the wall clock only for what other
/// nodes compare (record versions, token expiry, signed timestamps).
public struct AgentClock: Sendable {
    public var monotonic: @Sendable () -> ContinuousClock.Instant
    public var wall: @Sendable () -> Date

    public init(monotonic: @escaping @Sendable () -> ContinuousClock.Instant, wall: @escaping @Sendable () -> Date) {
        self.monotonic = monotonic
        self.wall = wall
    }

    public static let system = AgentClock(monotonic: { .now }, wall: { Date() })

    /// Wall-clock milliseconds since the epoch.
    var wallMs: Int64 { Int64(wall().timeIntervalSince1970 * 1000) }
}
