import Foundation
import IPNetwork
import Membership
import WireMeshCrypto
import WireMeshJoin

/// The on-disk state of one node.
///
/// Layout (directory 0700; every write atomic via `AtomicFile`):
/// ```
/// cluster.json            0644  cluster id, settings, this node's name/pod CIDR/overlay address, the
///                               authority's public key and this node's certificate (written
///                               last by `initialise`: its presence means "initialised")
/// identity.key            0600  base64 Ed25519 seed of this node's identity
/// wireguard.key           0600  base64 WireGuard private key in use
/// wireguard.key.created   0644  ISO 8601 time the key above was created
/// wireguard-next.key      0600  base64 next private key while a rotation is in progress
/// keyring.json            0600  cluster keys, base64, primary first (+ generations, retire_at)
/// authority.key           0600  base64 Ed25519 seed of the cluster authority (authority nodes only: it
///                               signs certificates, evictions and join answers, and keys the tokens)
/// revocations.bin         0644  the authority's newest signed revocation list (absent: none)
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
        case authority = "authority.key"
        case revocations = "revocations.bin"
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
        if let authority = state.authority {
            try writeKey(authority.seed, to: .authority)
        } else {
            // A rejoin over an old authority node's directory must not keep a seed it was not given.
            try io { try AtomicFile.remove(path(.authority)) }
        }
        try saveRevocations(state.revocations)
        try saveTokens([])
        try saveMembers(state.members)
        try writeCluster(ClusterFile(clusterID: state.clusterID, settings: state.settings, node: state.node,
                                     authority: state.authorityKey, certificate: state.certificate))
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
        let authority = try readKeyIfExists(.authority).map { SigningIdentity(seed: $0) }
        if let authority, authority.publicKey != cluster.authority {
            throw StateError.corrupted(file: path(.authority), reason: "it is not the seed of this cluster's authority (cluster.json names another key): copy the right authority.key from an authority node, or remove this file to run as an ordinary member")
        }
        guard cluster.certificate.verify(clusterID: cluster.clusterID, name: cluster.node.name, identity: identity.publicKey,
                                         authority: cluster.authority),
              cluster.certificate.podCIDRs == cluster.node.podCIDRs, cluster.certificate.overlayAddress == cluster.node.overlayAddress else {
            throw StateError.corrupted(file: path(.cluster), reason: "its certificate is not the authority's for this node's name, identity and pod CIDR")
        }
        return NodeState(clusterID: cluster.clusterID, settings: cluster.settings, node: cluster.node,
                         identity: identity, wireGuardKey: current, pendingWireGuardKey: pending,
                         keyring: keyring, clusterKeys: clusterKeys, authorityKey: cluster.authority, authority: authority,
                         certificate: cluster.certificate, revocations: try loadRevocations(clusterID: cluster.clusterID, authority: cluster.authority),
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

    // MARK: Revocations

    /// Saves the newest revocation list (nil: removes the file).
    public func saveRevocations(_ list: RevocationList?) throws {
        if let list {
            try io { try AtomicFile.write(list.encoded, to: path(.revocations), mode: 0o644) }
        } else {
            try io { try AtomicFile.remove(path(.revocations)) }
        }
    }

    /// The saved revocation list, checked against the authority (a list it did not sign is corruption).
    public func loadRevocations(clusterID: String, authority: IdentityPublicKey) throws -> RevocationList? {
        guard let bytes = try io({ try AtomicFile.readIfExists(path(.revocations)) }) else { return nil }
        guard let list = try? RevocationList(decoding: bytes), list.verify(clusterID: clusterID, authority: authority) else {
            throw StateError.corrupted(file: path(.revocations), reason: "not a revocation list signed by this cluster's authority")
        }
        return list
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
}
