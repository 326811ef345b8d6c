import Foundation
import IPNetwork
import WireMeshCrypto
import WireMeshJoin

/// Everything `wiremesh init` or `wiremesh join` writes into a fresh state directory.
public struct InitialState: Sendable {
    public var clusterID: String
    public var settings: ClusterSettings
    public var node: NodeAssignment
    /// Seed of this node's Ed25519 identity (signs its node records).
    public var identity: SigningIdentity
    /// This node's WireGuard private key.
    public var wireGuardKey: Key
    /// The cluster (gossip) keys.
    public var keyring: Keyring
    /// The cluster-wide join-signing identity (shared by every member so any member can admit).
    public var joinSigning: SigningIdentity
    /// Members known at creation time (opaque, encoded by the membership layer); may be empty.
    public var members: [UInt8]

    public init(clusterID: String, settings: ClusterSettings, node: NodeAssignment, identity: SigningIdentity,
                wireGuardKey: Key, keyring: Keyring, joinSigning: SigningIdentity, members: [UInt8] = []) {
        self.clusterID = clusterID
        self.settings = settings
        self.node = node
        self.identity = identity
        self.wireGuardKey = wireGuardKey
        self.keyring = keyring
        self.joinSigning = joinSigning
        self.members = members
    }
}

/// The persisted state of an initialised node, as loaded at agent start.
public struct NodeState: Sendable {
    public var clusterID: String
    public var settings: ClusterSettings
    public var node: NodeAssignment
    public var identity: SigningIdentity
    /// The WireGuard private key in use.
    public var wireGuardKey: Key
    /// The next WireGuard key of a rotation in progress (announced, not yet switched to), if any.
    public var pendingWireGuardKey: Key?
    public var keyring: Keyring
    /// Generations and retirement times of the keys in `keyring` (cluster key rotation).
    public var clusterKeys: ClusterKeyRotation
    public var joinSigning: SigningIdentity
    /// When this WireGuard key was first saved (for the key age in `status` and scheduled rotation).
    public var wireGuardKeyCreatedAt: Date
}

/// Errors about the state directory a person reads; each names the directory or file and what to do.
public enum StateError: Error, Equatable, CustomStringConvertible {
    case alreadyInitialised(directory: String, clusterID: String)
    case notInitialised(directory: String)
    case left(directory: String, clusterID: String, at: Date)
    case corrupted(file: String, reason: String)
    case io(FileError)
    /// Another agent holds the directory's lock (`StateLock`); pid nil when it could not be read.
    case inUse(directory: String, pid: Int32?)

    public var description: String {
        switch self {
        case .alreadyInitialised(let dir, let cluster):
            return "state directory \(dir) already initialised (cluster \(cluster)): start this node with 'wiremesh agent --state-dir \(dir)', or use another --state-dir for a new node"
        case .left(let dir, let cluster, let at):
            return "this node left cluster \(cluster) at \(StateStore.timestamp(at)) (state directory \(dir)): run 'wiremesh join TOKEN' to rejoin"
        case .notInitialised(let dir):
            return "state directory \(dir) is not initialised: run 'wiremesh init' or 'wiremesh join TOKEN'"
        case .corrupted(let file, let reason):
            return "state file \(file) is corrupted (\(reason)): restore it from a backup, or remove the state directory and join the cluster again with a new token"
        case .io(let e):
            return e.description
        case .inUse(let dir, let pid):
            let who = pid.map { "another wiremesh agent (pid \($0))" } ?? "another wiremesh agent"
            return "state directory \(dir) is in use by \(who): stop it first ('systemctl stop wiremesh' or kill that pid), or give this one its own --state-dir"
        }
    }
}

/// The on-disk state of one node.
///
/// Layout (directory 0700; every write atomic via `AtomicFile`):
/// ```
/// cluster.json            0644  cluster id, settings, this node's name/pod CIDR/overlay address (written
///                               last by `initialise`: its presence means "initialised")
/// identity.key            0600  base64 Ed25519 seed of this node's identity
/// wireguard.key           0600  base64 WireGuard private key in use
/// wireguard.key.created   0644  ISO 8601 time the key above was created
/// wireguard-next.key      0600  base64 next private key while a rotation is in progress
/// keyring.json            0600  cluster keys, base64, primary first (+ generations, retire_at)
/// join-signing.key        0600  base64 Ed25519 seed of the cluster's join-signing identity
/// tokens.json             0600  this member's join-token entries (issued/revoked here, joins admitted
///                               here and their nonces); no secret: token keys are derived again
/// members.bin             0600  last-known members (opaque bytes of the membership layer)
/// left.json               0644  written by `wiremesh leave`: the agent refuses to start until a new join
/// settings.json           0644  this node's settings as `init`/`join`/`agent` were given them (interface,
///                               ports, addresses, ...): a plain `wiremesh agent` comes up the same way
/// agent.lock              0600  flock(2) of the running agent (`StateLock`), with its pid
/// ```
/// Text formats on purpose: an operator can inspect (and back up) every file with `cat`.
public struct StateStore: Sendable {
    /// The default state directory.
    public static let defaultDirectory = "/var/lib/wiremesh"

    /// The state directory this store reads and writes.
    public let directory: String

    /// A store over `directory` (trailing slashes ignored); nothing is touched until a read or write.
    public init(directory: String = StateStore.defaultDirectory) {
        var d = directory
        while d.count > 1 && d.hasSuffix("/") { d.removeLast() }
        self.directory = d
    }

    enum File: String, CaseIterable {
        case cluster = "cluster.json"
        case identity = "identity.key"
        case wireGuardKey = "wireguard.key"
        case wireGuardKeyCreated = "wireguard.key.created"
        case pendingWireGuardKey = "wireguard-next.key"
        case keyring = "keyring.json"
        case joinSigning = "join-signing.key"
        case tokens = "tokens.json"
        case members = "members.bin"
        case left = "left.json"
        case settings = "settings.json"
    }

    func path(_ file: File) -> String { "\(directory)/\(file.rawValue)" }

    // MARK: Lifecycle

    /// True when `cluster.json` exists (the last file `initialise` writes).
    public var isInitialised: Bool { AtomicFile.mode(of: path(.cluster)) != nil }

    /// The cluster id recorded in the directory, or nil when it is not initialised.
    public func recordedClusterID() throws -> String? {
        guard isInitialised else { return nil }
        return try readCluster().clusterID
    }

    /// Creates the state of a new node. Refuses an initialised directory and leaves it unchanged;
    /// writes every secret first and `cluster.json` last, so an interrupted run leaves a directory
    /// that is still "not initialised" and can simply be retried.
    public func initialise(_ state: InitialState, now: Date = Date()) throws {
        let rejoin = (try? leftMarker()) != nil
        if !rejoin, let existing = try? recordedClusterID() {
            throw StateError.alreadyInitialised(directory: directory, clusterID: existing)
        }
        if !rejoin, isInitialised {
            throw StateError.alreadyInitialised(directory: directory, clusterID: "unknown: \(path(.cluster)) is unreadable")
        }
        try io { try AtomicFile.makeDirectory(directory, mode: 0o700) }
        try writeKey(state.identity.seed, to: .identity)
        try saveWireGuardKey(state.wireGuardKey, createdAt: now)
        try saveKeyring(state.keyring)
        try writeKey(state.joinSigning.seed, to: .joinSigning)
        try saveTokens([])
        try saveMembers(state.members)
        try writeCluster(ClusterFile(clusterID: state.clusterID, settings: state.settings, node: state.node))
        // Last: until here a node that left still refuses to start with its old state.
        if rejoin { try io { try AtomicFile.remove(path(.left)) } }
    }

    /// Loads the state of an initialised node; a missing or malformed file is an error naming it.
    public func load() throws -> NodeState {
        guard isInitialised else { throw StateError.notInitialised(directory: directory) }
        if let left = try leftMarker() {
            throw StateError.left(directory: directory, clusterID: left.clusterID, at: left.leftAt)
        }
        let cluster = try readCluster()
        let identity = SigningIdentity(seed: try readKey(.identity))
        let current = try readKey(.wireGuardKey)
        var pending = try readKeyIfExists(.pendingWireGuardKey)
        // A crash after promoting the pending key but before removing its file leaves both equal.
        if pending == current { pending = nil }
        let created = try readKeyCreated()
        let (keyring, clusterKeys) = try loadClusterKeys()
        return NodeState(clusterID: cluster.clusterID, settings: cluster.settings, node: cluster.node,
                         identity: identity, wireGuardKey: current, pendingWireGuardKey: pending,
                         keyring: keyring, clusterKeys: clusterKeys, joinSigning: SigningIdentity(seed: try readKey(.joinSigning)),
                         wireGuardKeyCreatedAt: created)
    }

    // MARK: WireGuard key and rotation

    /// Replaces the WireGuard key in use.
    public func saveWireGuardKey(_ key: Key, createdAt: Date = Date()) throws {
        try writeKey(key, to: .wireGuardKey)
        try io { try AtomicFile.write(Self.timestamp(createdAt) + "\n", to: path(.wireGuardKeyCreated), mode: 0o644) }
    }

    /// Records the next key of a rotation before it is announced, so a crash cannot lose a key a
    /// peer may already have installed.
    public func savePendingWireGuardKey(_ key: Key) throws {
        try writeKey(key, to: .pendingWireGuardKey)
    }

    /// Makes the pending key the key in use and forgets the old one (file replaced atomically).
    /// Crash-safe in every order: see `load()`.
    public func promotePendingWireGuardKey(now: Date = Date()) throws {
        guard let pending = try readKeyIfExists(.pendingWireGuardKey) else {
            throw StateError.corrupted(file: path(.pendingWireGuardKey), reason: "no pending key to promote")
        }
        try saveWireGuardKey(pending, createdAt: now)
        try io { try AtomicFile.remove(path(.pendingWireGuardKey)) }
    }

    /// Drops a pending key (rotation abandoned).
    public func discardPendingWireGuardKey() throws {
        try io { try AtomicFile.remove(path(.pendingWireGuardKey)) }
    }

    // MARK: Keyring

    /// Saves the cluster keyring (primary first).
    public func saveKeyring(_ keyring: Keyring) throws {
        try writeJSON(KeyringFile(keys: keyring.keys.map { $0.key.base64 }), to: .keyring, mode: 0o600)
    }

    /// Saves the keyring with its rotation state in one atomic write, so a crash never separates a
    /// key from its generation or deadline. `rotation` must list the keyring's keys in its order.
    public func saveKeyring(_ keyring: Keyring, rotation: ClusterKeyRotation) throws {
        precondition(keyring.ids == rotation.entries.map(\.id), "keyring and rotation state disagree")
        let file = KeyringFile(keys: keyring.keys.map { $0.key.base64 },
                               generations: rotation.entries.map(\.generation),
                               retireAt: rotation.entries.map { $0.retireAt.map { Date(timeIntervalSince1970: $0) } })
        try writeJSON(file, to: .keyring, mode: 0o600)
    }

    /// Loads the cluster keyring.
    public func loadKeyring() throws -> Keyring { try loadClusterKeys().0 }

    /// Loads the cluster keyring and its rotation state (generations unknown in files written before
    /// a rotation, or handed over by a join grant: learned from the members' records).
    public func loadClusterKeys() throws -> (Keyring, ClusterKeyRotation) {
        let file: KeyringFile = try readJSON(.keyring)
        guard !file.keys.isEmpty else {
            throw StateError.corrupted(file: path(.keyring), reason: "no keys")
        }
        let keys: [ClusterKey]
        do {
            keys = try file.keys.map { ClusterKey(key: try Key(base64: $0)) }
        } catch {
            throw StateError.corrupted(file: path(.keyring), reason: "\(error)")
        }
        guard Set(keys).count == keys.count else {
            throw StateError.corrupted(file: path(.keyring), reason: "a key is listed twice")
        }
        for (name, count) in [("generations", file.generations?.count), ("retire_at", file.retireAt?.count)] {
            if let count, count != keys.count {
                throw StateError.corrupted(file: path(.keyring), reason: "\(name) has \(count) entries for \(keys.count) keys")
            }
        }
        let entries = keys.indices.map { i in
            ClusterKeyRotation.Entry(id: keys[i].id, generation: file.generations?[i] ?? nil,
                                     retireAt: (file.retireAt?[i] ?? nil)?.timeIntervalSince1970)
        }
        return (Keyring(primary: keys[0], others: Array(keys.dropFirst())), ClusterKeyRotation(entries: entries))
    }

    // MARK: Node assignment

    /// Replaces this node's pod CIDR / overlay address (after a lost double claim).
    public func saveNodeAssignment(_ node: NodeAssignment) throws {
        var cluster = try readCluster()
        cluster.node = node
        try writeCluster(cluster)
    }

    // MARK: Tokens

    /// Saves this member's join-token entries.
    public func saveTokens(_ tokens: [TokenRecord]) throws {
        try writeJSON(TokensFile(version: 2, tokens: tokens), to: .tokens, mode: 0o600)
    }

    /// Loads this member's join-token entries (none when the file is absent, and none from a file of
    /// format 1: its tokens are format 1, which members no longer accept).
    public func loadTokens() throws -> [TokenRecord] {
        guard AtomicFile.mode(of: path(.tokens)) != nil else { return [] }
        let file: TokensFile = try readJSON(.tokens)
        return file.version == nil ? [] : file.tokens
    }

    // MARK: Leave

    /// What `wiremesh leave` records: the cluster this node left, and when.
    public struct LeftMarker: Codable, Sendable, Equatable {
        public var clusterID: String
        public var leftAt: Date
        enum CodingKeys: String, CodingKey { case clusterID = "cluster_id", leftAt = "left_at" }
    }

    /// Records that this node left its cluster (the agent then refuses to start).
    public func markLeft(clusterID: String, at date: Date = Date()) throws {
        let whole = Date(timeIntervalSince1970: date.timeIntervalSince1970.rounded(.down))
        try writeJSON(LeftMarker(clusterID: clusterID, leftAt: whole), to: .left, mode: 0o644)
    }

    /// The leave record, nil when the node has not left (or joined again since).
    public func leftMarker() throws -> LeftMarker? {
        guard AtomicFile.mode(of: path(.left)) != nil else { return nil }
        return try readJSON(.left) as LeftMarker
    }

    /// The identity and WireGuard key of a node that left, for `join` to reuse: the cluster knows the
    /// node's name by its identity (a leave is remembered), so a rejoin under the same name needs it.
    /// Its name too: a rejoin keeps it unless told otherwise (and with the name, the block it held
    /// while that is still free: the cluster resolves block claims by node name).
    public func keysOfLeftNode() throws -> (identity: SigningIdentity, wireGuardKey: Key, name: String?)? {
        guard try leftMarker() != nil else { return nil }
        return (SigningIdentity(seed: try readKey(.identity)), try readKey(.wireGuardKey), try? readCluster().node.name)
    }

    // MARK: Node settings

    /// Saves this node's settings (what `init`/`join`/`agent` were told), as config-key text values.
    public func saveNodeSettings(_ values: [String: String]) throws {
        try writeJSON(SettingsFile(version: 1, settings: values), to: .settings, mode: 0o644)
    }

    /// This node's saved settings (empty when never saved, e.g. a state directory from before they were).
    public func loadNodeSettings() throws -> [String: String] {
        guard AtomicFile.mode(of: path(.settings)) != nil else { return [:] }
        let file: SettingsFile = try readJSON(.settings)
        guard file.version == 1 else {
            throw StateError.corrupted(file: path(.settings), reason: "unsupported version \(file.version)")
        }
        return file.settings
    }

    /// The path of the settings file, for error messages.
    public var settingsPath: String { path(.settings) }

    // MARK: Members

    /// Saves the last-known members (opaque bytes from the membership layer).
    public func saveMembers(_ blob: [UInt8]) throws {
        try io { try AtomicFile.write(blob, to: path(.members), mode: 0o600) }
    }

    /// Loads the last-known members (empty when never saved).
    public func loadMembers() throws -> [UInt8] {
        try io { try AtomicFile.readIfExists(path(.members)) } ?? []
    }

    // MARK: Encoding

    struct ClusterFile: Codable, Equatable {
        var clusterID: String
        var settings: ClusterSettings
        var node: NodeAssignment

        enum CodingKeys: String, CodingKey {
            case version, clusterID = "cluster_id", podRange = "pod_range", nodePrefixLength = "node_prefix_length"
            case nodeName = "node_name", podCIDR = "pod_cidr", overlayAddress = "overlay_address"
        }

        init(clusterID: String, settings: ClusterSettings, node: NodeAssignment) {
            self.clusterID = clusterID
            self.settings = settings
            self.node = node
        }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let version = try c.decode(Int.self, forKey: .version)
            guard version == 1 else {
                throw DecodingError.dataCorruptedError(forKey: .version, in: c, debugDescription: "unsupported version \(version)")
            }
            clusterID = try c.decode(String.self, forKey: .clusterID)
            settings = ClusterSettings(podRange: try c.decodePrefix(.podRange),
                                       nodePrefixLength: try c.decode(Int.self, forKey: .nodePrefixLength))
            node = NodeAssignment(name: try c.decode(String.self, forKey: .nodeName),
                                  podCIDR: try c.decodePrefix(.podCIDR),
                                  overlayAddress: try c.decodeAddress(.overlayAddress))
            // What loads is what `init`/`join` could have written: a block that is not one of the
            // range's (0.0.0.0/0, a prefix length of 99) would route the wrong traffic into the mesh.
            let ipam: IPAM
            do { ipam = try IPAM(clusterRange: settings.podRange, nodePrefixLength: settings.nodePrefixLength) } catch {
                throw DecodingError.dataCorruptedError(forKey: .podRange, in: c, debugDescription: "\(error)")
            }
            guard ipam.clusterRange.contains(node.podCIDR), node.podCIDR.length == settings.nodePrefixLength,
                  node.podCIDR == node.podCIDR.network else {
                throw DecodingError.dataCorruptedError(forKey: .podCIDR, in: c, debugDescription:
                    "\(node.podCIDR) is not a /\(settings.nodePrefixLength) block of the cluster range \(settings.podRange)")
            }
            guard node.podCIDR.contains(node.overlayAddress) else {
                throw DecodingError.dataCorruptedError(forKey: .overlayAddress, in: c, debugDescription:
                    "\(node.overlayAddress) is not inside this node's pod CIDR \(node.podCIDR)")
            }
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(1, forKey: .version)
            try c.encode(clusterID, forKey: .clusterID)
            try c.encode(settings.podRange.description, forKey: .podRange)
            try c.encode(settings.nodePrefixLength, forKey: .nodePrefixLength)
            try c.encode(node.name, forKey: .nodeName)
            try c.encode(node.podCIDR.description, forKey: .podCIDR)
            try c.encode(node.overlayAddress.description, forKey: .overlayAddress)
        }
    }

    struct KeyringFile: Codable {
        var keys: [String]
        /// Per key (same order): its generation, nil when unknown.
        var generations: [UInt64?]?
        /// Per key: when it is removed, nil when it is not retiring.
        var retireAt: [Date?]?
        enum CodingKeys: String, CodingKey { case keys, generations, retireAt = "retire_at" }
    }
    struct SettingsFile: Codable {
        var version: Int
        var settings: [String: String]
    }

    /// `version` is absent in files of format 1 (token records with a stored key hash).
    struct TokensFile: Codable {
        var version: Int?
        var tokens: [TokenRecord]
        init(version: Int, tokens: [TokenRecord]) { self.version = version; self.tokens = tokens }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            version = try c.decodeIfPresent(Int.self, forKey: .version)
            tokens = version == nil ? [] : try c.decode([TokenRecord].self, forKey: .tokens)
        }
    }

    /// ISO 8601 text of a time (UTC, whole seconds), as state files and messages show it.
    static func timestamp(_ date: Date) -> String { date.formatted(.iso8601) }

    /// Parses `timestamp(_:)` output.
    static func parseTimestamp(_ text: String) -> Date? { try? Date(text, strategy: .iso8601) }

    private func readCluster() throws -> ClusterFile { try readJSON(.cluster) }

    private func writeCluster(_ cluster: ClusterFile) throws {
        try writeJSON(cluster, to: .cluster, mode: 0o644)
    }

    private func writeKey(_ key: Key, to file: File) throws {
        try io { try AtomicFile.write(key.base64 + "\n", to: path(file), mode: 0o600) }
    }

    private func readKey(_ file: File) throws -> Key {
        guard let key = try readKeyIfExists(file) else {
            throw StateError.corrupted(file: path(file), reason: "missing")
        }
        return key
    }

    private func readKeyIfExists(_ file: File) throws -> Key? {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(file)) }) else { return nil }
        do {
            return try Key(base64: String(decoding: bytes, as: UTF8.self))
        } catch {
            throw StateError.corrupted(file: path(file), reason: "\(error)")
        }
    }

    private func readKeyCreated() throws -> Date {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(.wireGuardKeyCreated)) }) else {
            throw StateError.corrupted(file: path(.wireGuardKeyCreated), reason: "missing")
        }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard let date = Self.parseTimestamp(text) else {
            throw StateError.corrupted(file: path(.wireGuardKeyCreated), reason: "'\(text)' is not an ISO 8601 time")
        }
        return date
    }

    private func writeJSON<T: Encodable>(_ value: T, to file: File, mode: mode_t) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        let data = try encoder.encode(value)
        try io { try AtomicFile.write(Array(data) + [0x0A], to: path(file), mode: mode) }
    }

    private func readJSON<T: Decodable>(_ file: File) throws -> T {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(file)) }) else {
            throw StateError.corrupted(file: path(file), reason: "missing")
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        do {
            return try decoder.decode(T.self, from: Data(bytes))
        } catch let error as DecodingError {
            throw StateError.corrupted(file: path(file), reason: Self.describe(error))
        } catch {
            throw StateError.corrupted(file: path(file), reason: "\(error)")
        }
    }

    private func io<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as FileError { throw StateError.io(e) }
    }

    /// A one-line reason for a JSON decoding failure (field path and what was wrong).
    static func describe(_ error: DecodingError) -> String {
        func path(_ keys: [CodingKey]) -> String {
            keys.isEmpty ? "top level" : keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case .dataCorrupted(let c):
            return c.codingPath.isEmpty ? "not valid JSON" : "\(path(c.codingPath)): \(c.debugDescription)"
        case .keyNotFound(let key, let c): return "missing field '\(path(c.codingPath + [key]))'"
        case .typeMismatch(_, let c): return "\(path(c.codingPath)): wrong type"
        case .valueNotFound(_, let c): return "\(path(c.codingPath)): missing value"
        @unknown default: return "\(error)"
        }
    }
}

extension KeyedDecodingContainer {
    /// Decodes a CIDR string, naming the field when it does not parse.
    func decodePrefix(_ key: Key) throws -> IPPrefix {
        let text = try decode(String.self, forKey: key)
        do { return try IPPrefix(text) } catch {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(error)")
        }
    }

    /// Decodes an IP address string, naming the field when it does not parse.
    func decodeAddress(_ key: Key) throws -> IPAddress {
        let text = try decode(String.self, forKey: key)
        do { return try IPAddress(text) } catch {
            throw DecodingError.dataCorruptedError(forKey: key, in: self, debugDescription: "\(error)")
        }
    }
}
