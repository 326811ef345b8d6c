import Foundation
import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireMeshAgent
import WireMeshJoin

@Suite("StateStore")
struct StateStoreTests {
    static func sampleState(cluster: String = "c0ffee00c0ffee00", identity: SigningIdentity = .generate(),
                            wireGuardKey: Key = .generatePrivate()) throws -> InitialState {
        InitialState.certified(clusterID: cluster,
                     settings: ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24),
                     node: NodeAssignment(name: "node-a", podCIDR: try IPPrefix("10.244.7.0/24"), overlayAddress: try IPAddress("10.244.7.0")),
                     identity: identity, wireGuardKey: wireGuardKey,
                     keyring: Keyring(primary: .generate(), others: [.generate()]),
                     authority: .generate(), members: [9, 8, 7])
    }

    @Test func initialiseThenLoadRoundTrips() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state/")
            #expect(!store.isInitialised)
            let initial = try Self.sampleState()
            let created = Date(timeIntervalSince1970: 1_800_000_000)
            try store.initialise(initial, now: created)
            #expect(store.isInitialised)

            let loaded = try store.load()
            #expect(loaded.clusterID == initial.clusterID)
            #expect(loaded.settings == initial.settings)
            #expect(loaded.node == initial.node)
            #expect(loaded.identity.publicKey == initial.identity.publicKey)
            #expect(loaded.wireGuardKey == initial.wireGuardKey)
            #expect(loaded.pendingWireGuardKey == nil)
            #expect(loaded.keyring == initial.keyring)
            #expect(loaded.authority?.publicKey == initial.authority?.publicKey && loaded.authorityKey == initial.authorityKey)
            #expect(loaded.certificate == initial.certificate && loaded.revocations == nil)
            #expect(loaded.wireGuardKeyCreatedAt == created)
            #expect(try store.loadMembers() == [9, 8, 7])
            #expect(try store.loadTokens() == [])
        }
    }

    @Test func secretsAre0600AndTheDirectory0700() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try Self.sampleState())
            try store.savePendingWireGuardKey(.generatePrivate())
            #expect(AtomicFile.mode(of: store.directory) == 0o700)
            for file in [StateStore.File.identity, .wireGuardKey, .pendingWireGuardKey, .keyring, .authority, .tokens, .members] {
                #expect(AtomicFile.mode(of: store.path(file)) == 0o600, "\(file.rawValue)")
            }
            #expect(AtomicFile.mode(of: store.path(.cluster)) == 0o644)
            // Keys are stored as base64 text, one line.
            let text = fileText(store.path(.wireGuardKey))!
            #expect(text.hasSuffix("=\n") && text.count == 45)
        }
    }

    @Test func secondInitialiseIsRefusedAndChangesNothing() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try Self.sampleState(cluster: "first0000000000"))
            let before = directoryEntries(store.directory).map { ($0, fileText(store.directory + "/" + $0)) }
            do {
                try store.initialise(try Self.sampleState(cluster: "second000000000"))
                Issue.record("second initialise succeeded")
            } catch let e as StateError {
                #expect(e == .alreadyInitialised(directory: store.directory, clusterID: "first0000000000"))
                #expect(e.description == "state directory \(store.directory) already initialised (cluster first0000000000): start this node with 'wiremesh agent --state-dir \(store.directory)', or use another --state-dir for a new node")
            }
            let after = directoryEntries(store.directory).map { ($0, fileText(store.directory + "/" + $0)) }
            #expect(before.map(\.0) == after.map(\.0))
            #expect(before.map(\.1) == after.map(\.1))
        }
    }

    @Test func loadingAnEmptyDirectorySaysHowToInitialise() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp)
            do {
                _ = try store.load()
                Issue.record("load of an empty directory succeeded")
            } catch let e as StateError {
                #expect(e.description == "state directory \(tmp) is not initialised: run 'wiremesh init' or 'wiremesh join TOKEN'")
            }
        }
    }

    /// Dual-stack state round-trips; an IPv4 cluster.json has no IPv6 key at all (files written
    /// before dual-stack load as they are, and new IPv4 files are what they always were).
    @Test func aDualStackClusterFileRoundTripsAndAnIPv4OneHasNoIPv6Keys() throws {
        try withTemporaryDirectory { tmp in
            let v4 = StateStore(directory: tmp + "/v4")
            try v4.initialise(try Self.sampleState())
            let text = String(decoding: try #require(try AtomicFile.readIfExists(v4.directory + "/cluster.json")), as: UTF8.self)
            #expect(!text.contains("_v6"), "\(text)")  // the keys; base64 may hold "v6"
            #expect(try v4.load().settings.podRangeV6 == nil)

            var dual = try Self.sampleState()
            let settings = ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24, podRangeV6: try IPPrefix("fd42:1::/48"))
            var node = dual.node
            node.podCIDRV6 = try IPPrefix("fd42:1:0:7::/64")
            let authority = SigningIdentity.generate()
            dual = InitialState.certified(clusterID: dual.clusterID, settings: settings, node: node, identity: dual.identity,
                                          wireGuardKey: dual.wireGuardKey, keyring: dual.keyring, authority: authority)
            #expect(dual.certificate.podCIDRs == [try IPPrefix("10.244.7.0/24"), try IPPrefix("fd42:1:0:7::/64")])
            let store = StateStore(directory: tmp + "/dual")
            try store.initialise(dual)
            let loaded = try store.load()
            #expect(loaded.settings == settings && loaded.node == node)
            // A block outside the IPv6 range, or an IPv6 range without a block, is named.
            let path = store.directory + "/cluster.json"
            let written = String(decoding: try #require(try AtomicFile.readIfExists(path)), as: UTF8.self)
            for (damaged, reason) in [(written.replacingOccurrences(of: "fd42:1:0:7::/64", with: "fd43:0:0:7::/64"), "IPv6 cluster range"),
                                      (written.replacingOccurrences(of: "\"pod_cidr_v6\"", with: "\"x\""), "both present")] {
                try AtomicFile.write(damaged, to: path, mode: 0o644)
                do {
                    _ = try store.load()
                    Issue.record("a damaged dual-stack cluster.json loaded")
                } catch let e as StateError {
                    #expect("\(e)".contains(reason), "\(e)")
                }
            }
        }
    }

    @Test(arguments: [
        ("wireguard.key", "not a key\n", "expected 44 characters of base64"),
        ("cluster.json", "{\"version\": 2, \"cluster_id\": 5}", "cluster_id"),
        ("cluster.json", "{ broken", "not valid JSON"),
        ("keyring.json", "{\"keys\": []}", "no keys"),
        ("identity.key", nil, "missing"),
        ("cluster.json", "{\"version\":2,\"cluster_id\":\"x\",\"pod_range\":\"10.0.0.0/33\",\"node_prefix_length\":24,\"node_name\":\"a\",\"pod_cidr\":\"10.0.1.0/24\",\"overlay_address\":\"10.0.1.0\"}", "pod_range"),
    ] as [(String, String?, String)])
    func corruptedFileIsNamed(file: String, contents: String?, reason: String) throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try Self.sampleState())
            let path = store.directory + "/" + file
            if let contents { try AtomicFile.write(contents, to: path, mode: 0o600) } else { try AtomicFile.remove(path) }
            do {
                _ = try store.load()
                Issue.record("load of a corrupted \(file) succeeded")
            } catch let e as StateError {
                guard case .corrupted(let named, let why) = e else { Issue.record("unexpected \(e)"); return }
                #expect(named == path)
                #expect(why.contains(reason), "\(why)")
                #expect(e.description.contains(path))
            }
        }
    }

    @Test func rotationPendingKeySurvivesRestartAndPromotes() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            let initial = try Self.sampleState()
            try store.initialise(initial, now: Date(timeIntervalSince1970: 1_000))
            let next = Key.generatePrivate()
            try store.savePendingWireGuardKey(next)
            var state = try store.load()  // as after a crash mid-rotation
            #expect(state.wireGuardKey == initial.wireGuardKey)
            #expect(state.pendingWireGuardKey == next)

            try store.promotePendingWireGuardKey(now: Date(timeIntervalSince1970: 2_000))
            state = try store.load()
            #expect(state.wireGuardKey == next)
            #expect(state.pendingWireGuardKey == nil)
            #expect(state.wireGuardKeyCreatedAt == Date(timeIntervalSince1970: 2_000))
            #expect(!directoryEntries(store.directory).contains("wireguard-next.key"))
            #expect(!fileText(store.path(.wireGuardKey))!.contains(initial.wireGuardKey.base64))
        }
    }

    @Test func crashBetweenPromoteStepsLoadsConsistently() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try Self.sampleState())
            let next = Key.generatePrivate()
            try store.savePendingWireGuardKey(next)
            // Promotion wrote the new key but crashed before removing the pending file.
            try store.saveWireGuardKey(next)
            let state = try store.load()
            #expect(state.wireGuardKey == next)
            #expect(state.pendingWireGuardKey == nil)
        }
    }

    @Test func keyringTokensMembersAndAssignmentAreReplaced() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try Self.sampleState())
            var ring = try store.loadKeyring()
            let newKey = ClusterKey.generate()
            ring.use(newKey)
            try store.saveKeyring(ring)
            #expect(try store.loadKeyring().primary == newKey)
            #expect(try store.loadKeyring().keys.count == 3)

            let record = TokenRecord(id: "0011223344556677", createdAt: Date(timeIntervalSince1970: 100),
                                     expiresAt: Date(timeIntervalSince1970: 200), usesLimit: 2, issued: true, used: 1, usedNonces: ["bm9uY2U="])
            try store.saveTokens([record])
            #expect(try store.loadTokens() == [record])
            #expect(AtomicFile.mode(of: tmp + "/state/tokens.json") == 0o600)
            // A file of format 1 (stored key hashes of format-1 tokens, which are refused now) reads as no tokens.
            try AtomicFile.write(Array(#"{"tokens":[{"id":"00","secret_hash":"x","created_at":"2020-01-01T00:00:00Z","expires_at":"2020-01-01T00:00:00Z","revoked":false,"used_nonces":[]}]}"#.utf8),
                                 to: tmp + "/state/tokens.json", mode: 0o600)
            #expect(try store.loadTokens() == [])

            try store.saveMembers([1, 2])
            #expect(try store.loadMembers() == [1, 2])

        }
    }

    @Test func leftNodeRefusesToStartUntilItJoinsAgain() throws {
        try withTemporaryDirectory { tmp in
            let store = StateStore(directory: tmp + "/state")
            let initial = try Self.sampleState()
            try store.initialise(initial)
            #expect(try store.leftMarker() == nil && (try store.keysOfLeftNode()) == nil)
            try store.markLeft(clusterID: initial.clusterID, at: Date(timeIntervalSince1970: 1_800_000_000.7))
            #expect(throws: StateError.left(directory: tmp + "/state", clusterID: initial.clusterID, at: Date(timeIntervalSince1970: 1_800_000_000))) {
                try store.load()
            }
            do { _ = try store.load() } catch {
                #expect("\(error)" == "this node left cluster c0ffee00c0ffee00 at 2027-01-15T08:00:00Z (state directory \(tmp)/state): run 'wiremesh join TOKEN' to rejoin")
            }
            // A join keeps the node's identity and WireGuard key, and clears the mark last.
            let kept = try #require(try store.keysOfLeftNode())
            #expect(kept.identity.publicKey == initial.identity.publicKey && kept.wireGuardKey == initial.wireGuardKey)
            let again = try Self.sampleState(cluster: "0123456789abcdef", identity: kept.identity, wireGuardKey: kept.wireGuardKey)
            try store.initialise(again)
            #expect(try store.leftMarker() == nil)
            #expect(try store.load().clusterID == "0123456789abcdef")
            #expect(try store.load().identity.publicKey == initial.identity.publicKey)
            // Without a leave, an initialised directory is still refused.
            #expect(throws: StateError.self) { try store.initialise(again) }
        }
    }
}
