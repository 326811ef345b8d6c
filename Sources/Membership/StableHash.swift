// Hashing and seeded randomness the membership core needs to be deterministic.

/// A stable 64-bit hash of a node name (FNV-1a, then a splitmix finaliser), identical on every node
/// and every run (Swift's `Hasher` is seeded per process, so it cannot be used on the wire).
func stableNameHash(_ name: String) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return mix64(h)
}

/// The splitmix64 finaliser: a cheap bijective bit mixer.
@inline(__always)
func mix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

/// xoshiro256** seeded through splitmix64: the only randomness the core uses, so equal seeds give
/// equal traces.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    /// A generator whose whole output is determined by `seed`.
    public init(seed: UInt64) {
        var x = seed
        func next() -> UInt64 { x = x &+ 0x9E37_79B9_7F4A_7C15; return mix64(x &- 0x9E37_79B9_7F4A_7C15) }
        s = (next(), next(), next(), next())
        if s == (0, 0, 0, 0) { s.0 = 1 }
    }

    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
