#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Netlink
import Testing
import WireGuard
import WireMeshCrypto
@testable import WireMeshAgent

/// The pure and file-level parts of issue 14 (an operator's day); scripts/e2e/operator.sh runs the rest.
@Suite("Operator's day")
struct OperatorDayTests {
    /// `join` becomes `wiremesh agent`: what the operator typed on join's command line is typed again,
    /// so a WIREMESH_* variable left in the environment cannot override it (saved settings sit under
    /// the environment). Found by joining with --cni-config-dir while WIREMESH_CNI_CONFIG_DIR was set.
    @Test func theAgentJoinBecomesGetsEveryFlagJoinWasGiven() {
        let argv = Lifecycle.agentArguments(stateDirectory: "/var/lib/wm", configFile: "/etc/wm.yaml",
                                            flags: [.cniConfigDir: "/etc/cni/net.d", .controlSocket: "/run/wm.sock",
                                                    .stateDir: "/ignored", .logLevel: "debug"],
                                            adoptInterface: true)
        #expect(argv == ["wiremesh", "agent", "--state-dir", "/var/lib/wm", "--config", "/etc/wm.yaml",
                         "--control-socket", "/run/wm.sock", "--log-level", "debug", "--cni-config-dir", "/etc/cni/net.d",
                         "--adopt-interface"])
        #expect(Lifecycle.agentArguments(stateDirectory: "/s", configFile: nil, flags: [:], adoptInterface: false)
                == ["wiremesh", "agent", "--state-dir", "/s"])
    }

    /// Loads the config as the CLI does, with a config file of `yaml` (nil: none).
    func load(_ dir: String, yaml: String? = nil, environment: [String: String] = [:],
              flags: [ConfigKey: String]) throws -> AgentConfig {
        var file = dir + "/absent.yaml"
        if let yaml {
            file = dir + "/config.yaml"
            try AtomicFile.write(yaml, to: file, mode: 0o644)
        }
        // The default config file is only read when it exists; an explicit missing one is an error.
        return try AgentConfig.load(configFile: yaml == nil ? nil : file, environment: environment,
                                    flags: try ConfigLayer(flags: flags), withSavedSettings: true)
    }

    @Test func whatJoinWasToldComesBackUnderTheFileTheEnvironmentAndTheFlags() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let state = dir + "/state"
            try AtomicFile.makeDirectory(state, mode: 0o700)
            let store = StateStore(directory: state)
            // join --interface wmx --gossip-port 7950 --persistent-keepalive 25s --cluster-key-grace 1500ms --log-level debug
            let join = try load(dir, flags: [.stateDir: state, .interface: "wmx", .gossipPort: "7950",
                                             .persistentKeepalive: "25s", .clusterKeyGrace: "1500ms", .logLevel: "debug"])
            try join.saveSettings(to: store)
            let saved = try store.loadNodeSettings()
            #expect(saved == ["interface": "wmx", "gossip-port": "7950", "persistent-keepalive": "25s", "cluster-key-grace": "1500ms"])
            #expect(AtomicFile.mode(of: store.settingsPath) == 0o644)

            // `wiremesh agent` with nothing but the state directory: the node as it was set up.
            let plain = try load(dir, flags: [.stateDir: state])
            #expect(plain.interface == "wmx" && plain.gossipPort == 7950 && plain.persistentKeepalive == .seconds(25))
            #expect(plain.clusterKeyGrace == .milliseconds(1500))
            #expect(plain.logLevel == .info, "the log level is one run's, not the node's")

            // The file, then the environment, then the flags override what was saved.
            let layered = try load(dir, yaml: "interface: wmf\nwireguard-port: 51000\n",
                                   environment: ["WIREMESH_WIREGUARD_PORT": "51001"], flags: [.stateDir: state, .gossipPort: "7000"])
            #expect(layered.interface == "wmf" && layered.wireGuardPort == 51001 && layered.gossipPort == 7000)
            #expect(layered.persistentKeepalive == .seconds(25))

            // A run that is told something new saves it over the old: the last explicit value sticks.
            try layered.saveSettings(to: store)
            #expect(try load(dir, flags: [.stateDir: state]).interface == "wmf")
            #expect(try store.loadNodeSettings()["persistent-keepalive"] == "25s")
        }
    }

    @Test func aDamagedSettingsFileIsAnErrorNamingIt() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let state = dir + "/state"
            try AtomicFile.makeDirectory(state, mode: 0o700)
            let store = StateStore(directory: state)
            try store.saveNodeSettings(["gossip-port": "99999"])
            let error = try #require(throws: ConfigError.self) { try load(dir, flags: [.stateDir: state]) }
            #expect(error.description.contains(store.settingsPath) && error.description.contains("gossip-port"))
            try store.saveNodeSettings(["state-dir": "/elsewhere"])
            #expect(throws: ConfigError.self) { try load(dir, flags: [.stateDir: state]) }
            try AtomicFile.write("{not json", to: store.settingsPath, mode: 0o644)
            #expect(throws: StateError.self) { try load(dir, flags: [.stateDir: state]) }
        }
    }

    @Test func aStateDirectoryWithoutSettingsLoadsTheDefaults() throws {
        try withTemporaryDirectory { (dir: String) throws in
            #expect(try load(dir, flags: [.stateDir: dir + "/never-initialised"]) == {
                var c = AgentConfig()
                c.stateDirectory = dir + "/never-initialised"
                c.explicit.stateDirectory = c.stateDirectory
                return c
            }())
        }
    }

    // MARK: The state lock

    @Test func aSecondAgentOnOneStateDirectoryIsRefusedNamingTheFirst() throws {
        try withTemporaryDirectory { (dir: String) throws in
            #expect(StateLock.holder(directory: dir) == nil)
            #expect(!FileManager.default.fileExists(atPath: dir + "/" + StateLock.fileName), "holder() must not create the file")
            var first: StateLock? = try StateLock.acquire(directory: dir)
            #expect(StateLock.holder(directory: dir) == getpid())
            let error = try #require(throws: StateError.self) { try StateLock.acquire(directory: dir) }
            #expect(error == .inUse(directory: dir, pid: getpid()))
            #expect(error.description.contains("pid \(getpid())"))
            first = nil
            _ = first
            // Released with its holder (as when a process ends): the next agent takes it.
            #expect(StateLock.holder(directory: dir) == nil)
            _ = try StateLock.acquire(directory: dir)
        }
    }

    // MARK: Preflight

    @Test func netAdminIsReadFromTheEffectiveCapabilities() {
        #expect(Preflight.hasNetAdmin(procStatus: "Name:\tx\nCapInh:\t0\nCapEff:\t000001ffffffffff\n") == true)
        #expect(Preflight.hasNetAdmin(procStatus: "CapEff:\t0000000000000000\n") == false)
        #expect(Preflight.hasNetAdmin(procStatus: "CapEff:\t0000000000001000\n") == true)   // bit 12 alone
        #expect(Preflight.hasNetAdmin(procStatus: "CapEff:\t0000000000000fff\n") == false)
        #expect(Preflight.hasNetAdmin(procStatus: "Name:\tx\n") == nil)
        #expect(throws: AgentError.self) { try Preflight.checkPrivileges(status: "CapEff:\t0000000000000000\n") }
        #expect(throws: Never.self) { try Preflight.checkPrivileges(status: "CapEff:\t0000000000001000\n") }
    }

    // MARK: Interfaces that are not ours

    @Test func anInterfaceIsOursOnlyWithOurKeyOrBlank() throws {
        let mine = Key.generatePrivate(), theirs = Key.generatePrivate()
        let peer = Peer(publicKey: Key.generatePrivate().publicKey(), allowedIPs: [try IPPrefix("10.1.0.0/24")])
        let own: Set<Key> = [mine.publicKey()]
        #expect(throws: Never.self) { try LinkManager.checkOwnership(Device(name: "x", privateKey: mine, peers: [peer]), interface: "x", ownKeys: own) }
        #expect(throws: Never.self) { try LinkManager.checkOwnership(Device(name: "x"), interface: "x", ownKeys: own) }
        let foreign = try #require(throws: AgentError.self) {
            try LinkManager.checkOwnership(Device(name: "ux5", privateKey: theirs, listenPort: 51899, peers: [peer]), interface: "ux5", ownKeys: own)
        }
        #expect(foreign.description.contains("--adopt-interface") && foreign.description.contains("1 peer(s)"))
        #expect(!foreign.description.contains(theirs.base64) && !foreign.description.contains(theirs.publicKey().base64))
        // No key but peers: someone's half-made device, not a blank one.
        #expect(throws: AgentError.self) { try LinkManager.checkOwnership(Device(name: "x", peers: [peer]), interface: "x", ownKeys: own) }
    }

    // MARK: Errors that say what to do

    @Test func aTakenWireGuardPortIsNamedWithWhatToDo() {
        var config = AgentConfig()
        config.wireGuardPort = 51840
        let text = Agent.explain(WireGuardError.rejected(device: "wm0", errno: EADDRINUSE, message: ""), config: config)
        #expect(text.contains("WireGuard port 51840 is in use") && text.contains("--wireguard-port"))
        #expect(Agent.explain(WireGuardError.noSuchDevice("wm0"), config: config) == WireGuardError.noSuchDevice("wm0").description)
    }

    @Test func theAlreadyInitialisedErrorPointsAtTheAgent() {
        let text = StateError.alreadyInitialised(directory: "/var/lib/wiremesh", clusterID: "c1").description
        #expect(text.contains("wiremesh agent --state-dir /var/lib/wiremesh"))
    }
}

/// cluster.json is read back only if it is something `init`/`join` could have written (issue 10's
/// smaller items: a /0 pod block or a prefix length of 99 used to load).
@Suite struct ClusterFileValidationTests {
    @Test(arguments: [
        ("\"pod_cidr\" : \"10.244.7.0/24\"", "\"pod_cidr\" : \"0.0.0.0/0\"", "pod_cidr"),
        ("\"node_prefix_length\" : 24", "\"node_prefix_length\" : 99", "pod_range"),
        ("\"pod_range\" : \"10.244.0.0/16\"", "\"pod_range\" : \"0.0.0.0/0\"", "pod_range"),
        ("\"pod_cidr\" : \"10.244.7.0/24\"", "\"pod_cidr\" : \"10.99.0.0/24\"", "pod_cidr"),
        ("\"overlay_address\" : \"10.244.7.0\"", "\"overlay_address\" : \"192.0.2.1\"", "overlay_address"),
    ])
    func aClusterFileOutsideItsOwnRangeIsCorrupted(_ edit: (String, String, String)) throws {
        try withTemporaryDirectory { (tmp: String) throws in
            let store = StateStore(directory: tmp + "/state")
            try store.initialise(try StateStoreTests.sampleState())
            let path = store.directory + "/cluster.json"
            let text = try #require(fileText(path))
            try #require(text.contains(edit.0), "cluster.json has no \(edit.0): \(text)")
            try AtomicFile.write(text.replacingOccurrences(of: edit.0, with: edit.1), to: path, mode: 0o644)
            let error = try #require(throws: StateError.self) { try store.load() }
            guard case .corrupted(let file, let reason) = error else { Issue.record("\(error)"); return }
            #expect(file == path && reason.contains(edit.2), "\(reason)")
        }
    }

    /// Without --advertise-address: the default route's source (a host whose first interface is a
    /// container bridge must not advertise the bridge), else IPv4 first, else IPv6 (an IPv6-only host
    /// joined with none and got "no address to advertise"); never loopback or link-local.
    @Test func theDefaultAdvertiseAddressFollowsTheDefaultRouteThenPrefersIPv4() throws {
        func link(_ index: Int32, _ name: String, _ addresses: [String]) throws -> UnderlayView.Link {
            UnderlayView.Link(index: index, name: name, addresses: try addresses.map { try IPAddress($0) })
        }
        func defaultRoute(_ family: String, via index: Int32, metric: UInt32? = nil, source: String? = nil) throws -> Route {
            Route(destination: try IPPrefix(family), interfaceIndex: index, metric: metric,
                  preferredSource: try source.map { try IPAddress($0) }, routeProtocol: 3)
        }
        let bridge = try link(3, "docker0", ["172.17.0.1", "fe80::1"])
        let eth0 = try link(2, "eth0", ["fe80::2", "2001:db8::7", "192.0.2.7", "192.0.2.8"])
        func pick(_ links: [UnderlayView.Link], _ routes: [Route] = []) -> String? {
            UnderlayView(links: links, routes: routes).defaultAdvertiseAddress()?.description
        }
        #expect(try pick([bridge, eth0], [defaultRoute("0.0.0.0/0", via: 2)]) == "192.0.2.7")
        #expect(try pick([bridge, eth0], [defaultRoute("0.0.0.0/0", via: 2, source: "192.0.2.8")]) == "192.0.2.8")
        #expect(try pick([bridge, eth0], [defaultRoute("::/0", via: 2)]) == "2001:db8::7")
        #expect(try pick([bridge, eth0], [defaultRoute("::/0", via: 2), defaultRoute("0.0.0.0/0", via: 2)]) == "192.0.2.7")
        #expect(try pick([bridge, eth0], [defaultRoute("0.0.0.0/0", via: 3, metric: 200), defaultRoute("0.0.0.0/0", via: 2, metric: 100)]) == "192.0.2.7")
        // A default route through an interface that is down or ours (not listed) is passed over.
        #expect(try pick([bridge, eth0], [defaultRoute("0.0.0.0/0", via: 9)]) == "172.17.0.1")
        // No default route: IPv4 first, else routable IPv6.
        #expect(try pick([try link(2, "eth0", ["fe80::1", "fd99::3", "10.99.0.3"])]) == "10.99.0.3")
        #expect(try pick([try link(2, "eth0", ["fe80::1", "fd99::3"])]) == "fd99::3")
        #expect(try pick([try link(2, "veth0", ["169.254.1.1", "fe80::2"])]) == nil)
        #expect(pick([]) == nil)
    }
}
