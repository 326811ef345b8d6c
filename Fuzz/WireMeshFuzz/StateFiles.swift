import Foundation
import IPNetwork
import Membership
import WireMeshAgent
import WireMeshCrypto
import WireMeshJoin

/// The state directory's files as the agent loads them. The first input byte picks the file, the
/// rest is its content; every other file is the valid state `initialise` wrote, so the loaders get
/// past the files they read first.
enum StateFilesTarget {
    static let target = FuzzTarget(
        name: "state-files",
        summary: "StateStore loaders: cluster.json, keyring.json, tokens.json, settings.json, left.json, members.bin (MemberBlob.decode), key files",
        run: run, seeds: seeds)

    static let files = [
        "cluster.json", "keyring.json", "tokens.json", "settings.json", "left.json", "members.bin",
        "identity.key", "wireguard.key", "wireguard.key.created", "wireguard-next.key", "authority.key", "revocations.bin",
    ]

    /// A valid state directory (made once per process, in TMPDIR) and its files' bytes.
    struct Base {
        let store: StateStore
        let bytes: [String: [UInt8]]
    }
    nonisolated(unsafe) static var base: Base?

    static func key(_ byte: UInt8) -> Key { NetlinkWireGuardTarget.key(byte) }

    /// Writes a complete, valid state into `directory` with the project's own writers.
    static func makeState(in directory: String) throws -> StateStore {
        let store = StateStore(directory: directory)
        let identity = SigningIdentity(seed: key(11))
        let initial = InitialState(
            clusterID: "c0ffee00c0ffee00",
            settings: ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24),
            node: NodeAssignment(name: "node-a", podCIDR: try IPPrefix("10.244.7.0/24"), overlayAddress: try IPAddress("10.244.7.0")),
            identity: identity, wireGuardKey: key(12),
            keyring: Keyring(primary: ClusterKey(key: key(13)), others: [ClusterKey(key: key(14))]),
            authorityKey: SigningIdentity(seed: key(15)).publicKey, authority: SigningIdentity(seed: key(15)),
            certificate: NodeCertificate.issue(clusterID: "c0ffee00c0ffee00", name: "node-a", identity: identity.publicKey,
                                               podCIDRs: [try IPPrefix("10.244.7.0/24")], overlayAddress: try IPAddress("10.244.7.0"),
                                               issuedAt: 1_700_000_000_000, authority: SigningIdentity(seed: key(15))),
            revocations: try RevocationList.issue(adding: .init(name: "node-z", identity: SigningIdentity(seed: key(17)).publicKey,
                                                                evictedAt: 1_699_000_000_000),
                                                  to: nil, clusterID: "c0ffee00c0ffee00", authority: SigningIdentity(seed: key(15))),
            members: try members())
        try store.initialise(initial, now: Date(timeIntervalSince1970: 1_700_000_000))
        let keyring = initial.keyring
        try store.saveKeyring(keyring, rotation: ClusterKeyRotation(entries: [
            .init(id: keyring.ids[0], generation: 2), .init(id: keyring.ids[1], generation: 1, retireAt: 1_700_000_030),
        ]))
        try store.saveTokens([
            TokenRecord(id: "0123456789abcdef", createdAt: Date(timeIntervalSince1970: 1_700_000_000),
                        expiresAt: Date(timeIntervalSince1970: 1_700_086_400), usesLimit: 3, issued: true, used: 1,
                        usedNonces: ["AAECAwQFBgcICQoLDA0ODw=="]),
            TokenRecord(id: "fedcba9876543210", expiresAt: Date(timeIntervalSince1970: 1_700_003_600), usesLimit: nil, revoked: true),
        ])
        try store.saveNodeSettings(["interface": "wm0", "gossip-port": "7946", "advertise-address": "192.0.2.10",
                                    "key-rotation-interval": "86400s", "mtu": "1420"])
        return store
    }

    /// Two members' signed records, as `members.bin` holds them.
    static func members() throws -> [UInt8] {
        let records = try [(UInt8(21), "node-b", "10.244.8.0/24"), (22, "node-c", "fd00:0:0:9::/64")].map { seed, name, cidr in
            let id = SigningIdentity(seed: key(seed))
            let record = NodeRecord(
                name: name, identity: id.publicKey, version: 3, wireguardKey: key(seed + 1).publicKey(),
                wireguardEndpoints: [try Endpoint("192.0.2.\(seed):51820")], gossipAddress: try Endpoint("192.0.2.\(seed):7946"),
                podCIDRs: [try IPPrefix(cidr)], overlayAddress: try IPPrefix(cidr).firstAddress, labels: ["zone": "a"])
            return try SignedNodeRecord(signing: record, with: id)
        }
        return MemberBlob.encode(records)
    }

    static func setUp() -> Base {
        if let base { return base }
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let dir = "\(tmp)/wiremesh-fuzz-state-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        let store = try! makeState(in: dir)
        var bytes: [String: [UInt8]] = [:]
        for f in files { if let b = FileManager.default.contents(atPath: "\(dir)/\(f)") { bytes[f] = Array(b) } }
        let made = Base(store: store, bytes: bytes)
        base = made
        atexit { if let d = StateFilesTarget.base?.store.directory { try? FileManager.default.removeItem(atPath: d) } }
        return made
    }

    /// Files the current input changed (written by it or by a round trip): restored after it.
    nonisolated(unsafe) static var touched: Set<String> = []

    static func write(_ bytes: some Collection<UInt8>, to path: String) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot write \(path)")
        let all = Array(bytes)
        precondition(all.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == all.count)
        close(fd)
    }

    /// Puts the touched files back as `makeState` wrote them (files it did not write are removed).
    static func restore(_ base: Base) {
        for f in touched {
            let path = "\(base.store.directory)/\(f)"
            if let b = base.bytes[f] { write(b, to: path) } else { unlink(path) }
        }
        touched = []
    }

    /// Runs `body`; a failure must be a `StateError` (a file named, a reason given), never a trap or another type.
    @discardableResult
    static func loading<T>(_ what: String, _ body: () throws -> T) -> T? {
        do { return try body() } catch let e as StateError {
            _ = e.description
            return nil
        } catch {
            fatalError("\(what) threw \(type(of: error)), not StateError: \(error)")
        }
    }

    static func run(_ data: [UInt8]) {
        let base = setUp()
        defer { restore(base) }
        let store = base.store
        let file = files[Int(data.first ?? 0) % files.count]
        write(data.dropFirst(), to: "\(store.directory)/\(file)")
        touched = [file]

        switch file {
        case "keyring.json":
            if let (keyring, rotation) = loading("loadClusterKeys", { try store.loadClusterKeys() }) {
                touched.insert("keyring.json")
                try! store.saveKeyring(keyring, rotation: rotation)
                let again = try! store.loadClusterKeys()
                require(again.0 == keyring && again.1 == rotation, "keyring saved and loaded again differs")
            }
        case "tokens.json":
            if let tokens = loading("loadTokens", { try store.loadTokens() }) {
                touched.insert("tokens.json")
                try! store.saveTokens(tokens)
                require(try! store.loadTokens() == tokens, "tokens saved and loaded again differ")
                for t in tokens { _ = t.announcement }
            }
        case "settings.json":
            if let values = loading("loadNodeSettings", { try store.loadNodeSettings() }) {
                touched.insert("settings.json")
                try! store.saveNodeSettings(values)
                require(try! store.loadNodeSettings() == values, "settings saved and loaded again differ")
                do {
                    let layer = try ConfigLayer(saved: values, file: store.settingsPath)
                    require((try? ConfigLayer(saved: layer.savedValues, file: store.settingsPath)) == layer,
                            "settings \(values) saved again read back differently")
                } catch let e as ConfigError { _ = e.description } catch {
                    fatalError("ConfigLayer(saved:) threw \(type(of: error)), not ConfigError")
                }
            }
        case "members.bin":
            if let blob = loading("loadMembers", { try store.loadMembers() }) {
                let records = MemberBlob.decode(blob)
                require(MemberBlob.decode(MemberBlob.encode(records)) == records, "members re-encoded decode differently")
            }
        case "left.json":
            if let marker = loading("leftMarker", { try store.leftMarker() }), let marker {
                touched.insert("left.json")
                try! store.markLeft(clusterID: marker.clusterID, at: marker.leftAt)
                require(try! store.leftMarker() == marker, "leave marker saved and read again differs")
                if case .some = loading("load", { try store.load() }) { fatalError("a node that left loaded its state") }
                require(loading("keysOfLeftNode", { try store.keysOfLeftNode() }) != nil, "a node that left has no keys to rejoin with")
                return
            }
        default:
            break
        }
        // tokens, settings and members are not part of `load()`: done with them.
        guard !["tokens.json", "settings.json", "members.bin"].contains(file) else { return }
        _ = loading("recordedClusterID") { try store.recordedClusterID() }
        // The whole state as the agent loads it; what loads is saved and loaded again unchanged.
        guard let state = loading("load", { try store.load() }), file != "keyring.json" else { return }
        touched.formUnion(["wireguard.key", "wireguard.key.created", "revocations.bin"])
        try! store.saveWireGuardKey(state.wireGuardKey, createdAt: state.wireGuardKeyCreatedAt)
        try! store.saveRevocations(state.revocations)
        let again = try! store.load()
        require(again.revocations == state.revocations && again.authority?.seed == state.authority?.seed
                && again.certificate == state.certificate && again.authorityKey == state.authorityKey,
                "the trust state (authority, certificate, revocations) saved and loaded again differs")
        if let list = state.revocations {
            require(list.verify(clusterID: state.clusterID, authority: state.authorityKey), "loaded a revocation list the authority did not sign")
        }
        require(again.clusterID == state.clusterID && again.settings == state.settings && again.node == state.node
                && again.wireGuardKey == state.wireGuardKey && again.wireGuardKeyCreatedAt == state.wireGuardKeyCreatedAt
                && again.pendingWireGuardKey == state.pendingWireGuardKey && again.identity.seed == state.identity.seed,
                "state saved and loaded again differs")
    }

    static func seeds() throws -> [[UInt8]] {
        let tmp = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        let dir = "\(tmp)/wiremesh-fuzz-seeds-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let store = try makeState(in: dir)
        try store.savePendingWireGuardKey(key(16))
        try store.markLeft(clusterID: "c0ffee00c0ffee00", at: Date(timeIntervalSince1970: 1_700_000_100))
        return files.enumerated().compactMap { i, f in
            FileManager.default.contents(atPath: "\(dir)/\(f)").map { [UInt8(i)] + Array($0) }
        }
    }
}
