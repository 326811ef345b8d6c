import ByteCodec
import CSodium

/// The non-secret name of a cluster key: its 8-byte fingerprint (`ClusterKey.fingerprint`).
/// Members advertise these in their records; the key itself never leaves a sealed box.
public struct ClusterKeyID: Sendable, Hashable, Comparable, CustomStringConvertible {
    public static let length = 8
    public let bytes: [UInt8]

    public init?<Bytes: Collection>(bytes: Bytes) where Bytes.Element == UInt8 {
        guard bytes.count == Self.length else { return nil }
        self.bytes = Array(bytes)
    }

    /// 16 hex digits, as `wiremesh status` shows the id.
    public var description: String { Hex.encode(bytes) }

    public static func < (a: ClusterKeyID, b: ClusterKeyID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// A cluster key's id and generation (1 for the key a cluster was created with, +1 per rotation).
/// The generation orders keys: the highest (generation, id) is the key every member moves to, so two
/// rotations started at once resolve the same way on every node.
public struct ClusterKeyTag: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var id: ClusterKeyID
    public var generation: UInt64

    public init(id: ClusterKeyID, generation: UInt64) {
        self.id = id
        self.generation = generation
    }

    public static func < (a: ClusterKeyTag, b: ClusterKeyTag) -> Bool {
        (a.generation, a.id) < (b.generation, b.id)
    }

    public var description: String { "\(id)@\(generation)" }
}

extension ClusterKey {
    /// The key's public name (its fingerprint).
    public var id: ClusterKeyID { ClusterKeyID(bytes: fingerprint)! }
}

/// The installed cluster keys: seals with the primary, opens with any, so the cluster key can be
/// rotated without a flag day.
public struct Keyring: Sendable, Equatable {
    /// The key new messages are sealed with.
    public private(set) var primary: ClusterKey
    /// Every installed key, primary first.
    public private(set) var keys: [ClusterKey]

    public init(primary: ClusterKey, others: [ClusterKey] = []) {
        self.primary = primary
        self.keys = [primary] + others.filter { $0 != primary }
    }

    /// Adds a key that can open messages; does not change the primary.
    public mutating func install(_ key: ClusterKey) {
        if !keys.contains(key) { keys.append(key) }
    }

    /// Makes an installed (or new) key the primary.
    public mutating func use(_ key: ClusterKey) {
        install(key)
        primary = key
        keys = [key] + keys.filter { $0 != key }
    }

    /// Removes a non-primary key; returns false if it is the primary or unknown.
    @discardableResult
    public mutating func remove(_ key: ClusterKey) -> Bool {
        guard key != primary, let i = keys.firstIndex(of: key) else { return false }
        keys.remove(at: i)
        return true
    }

    /// The ids of the installed keys, primary first.
    public var ids: [ClusterKeyID] { keys.map(\.id) }

    /// The installed key named `id`, if any.
    public func key(id: ClusterKeyID) -> ClusterKey? { keys.first { $0.id == id } }

    public func seal(_ plaintext: [UInt8], associatedData: [UInt8]) -> [UInt8] {
        primary.seal(plaintext, associatedData: associatedData)
    }

    /// Opens with the first key that authenticates the message.
    public func open<S: Collection>(_ sealed: S, associatedData: [UInt8]) throws -> [UInt8] where S.Element == UInt8 {
        try openReportingKey(sealed, associatedData: associatedData).plaintext
    }

    /// Opens with the first key that authenticates the message and tells which one it was (its
    /// index in `keys`, 0 for the primary): during a rotation, who still seals with another key.
    public func openReportingKey<S: Collection>(_ sealed: S, associatedData: [UInt8]) throws -> (plaintext: [UInt8], keyIndex: Int)
    where S.Element == UInt8 {
        var lastError: Error = SealError.authenticationFailed
        for (i, key) in keys.enumerated() {
            do { return (try key.open(sealed, associatedData: associatedData), i) } catch { lastError = error }
        }
        throw lastError
    }
}
