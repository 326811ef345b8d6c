/// The simulator's own seeded generator (PCG-XSH-RR 64/32 doubled to 64 bits), independent of the
/// generators inside the membership nodes, so network randomness and protocol randomness do not
/// disturb each other when a scenario changes.
public struct SimRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64
    private let increment: UInt64

    /// A generator whose whole output is determined by `seed` and `stream`.
    public init(seed: UInt64, stream: UInt64 = 0x5851_F42D_4C95_7F2D) {
        increment = (stream << 1) | 1
        state = 0
        _ = next32()
        state &+= seed
        _ = next32()
    }

    @inline(__always) private mutating func next32() -> UInt32 {
        let old = state
        state = old &* 6_364_136_223_846_793_005 &+ increment
        let xorshifted = UInt32(truncatingIfNeeded: ((old >> 18) ^ old) >> 27)
        let rot = UInt32(truncatingIfNeeded: old >> 59)
        return (xorshifted >> rot) | (xorshifted << ((~rot &+ 1) & 31))
    }

    public mutating func next() -> UInt64 {
        UInt64(next32()) << 32 | UInt64(next32())
    }

    /// A uniform double in [0, 1).
    public mutating func unit() -> Double {
        Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool {
        p > 0 && unit() < p
    }

    /// `count` pseudo-random bytes (for deterministic keys of simulated nodes).
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(count)
        while out.count < count {
            var v = next()
            for _ in 0..<8 where out.count < count {
                out.append(UInt8(truncatingIfNeeded: v))
                v >>= 8
            }
        }
        return out
    }
}
