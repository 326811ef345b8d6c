import Foundation
import IPNetwork
import Testing
import WireMeshJoin
@testable import WireMeshAgent

@Suite("AgentConfig")
struct AgentConfigTests {
    @Test("the view bound follows the node blocks the cluster range holds: a cluster of more than 4096 nodes fits")
    func viewBound() throws {
        func blocks(_ range: String, _ prefix: Int) throws -> UInt64 {
            try IPAM(clusterRange: try IPPrefix(range), nodePrefixLength: prefix).blockCount
        }
        let c = AgentConfig.merge()
        let floor = c.membership.maxMembers
        #expect(floor == 4096)
        // 256 nodes at most: the core's default stays.
        #expect(c.membership(nodeBlocks: try blocks("10.244.0.0/16", 24)).maxMembers == floor)
        // 4096 nodes: twice that, so a freed block's dead holder and its new one both fit.
        #expect(c.membership(nodeBlocks: try blocks("10.240.0.0/12", 24)).maxMembers == 8192)
        #expect(c.membership(nodeBlocks: try blocks("10.0.0.0/8", 26)).maxMembers == AgentConfig.maxViewBound)
        // Counts past Int or the cap do not trap.
        #expect(AgentConfig.viewBound(nodeBlocks: UInt64.max, floor: floor) == AgentConfig.maxViewBound)
        #expect(AgentConfig.viewBound(nodeBlocks: UInt64(AgentConfig.maxViewBound) / 2 + 1, floor: floor) == AgentConfig.maxViewBound)
        // Everything else is the push/pull setting's config.
        var sized = c.membership(nodeBlocks: 1 << 16)
        sized.maxMembers = c.membership.maxMembers
        #expect(sized == c.membership)
    }

    @Test func defaults() {
        let c = AgentConfig.merge()
        #expect(c.stateDirectory == "/var/lib/wiremesh")
        #expect(c.controlSocket == "/run/wiremesh/wiremesh.sock")
        #expect(c.interface == "wm0")
        #expect(c.gossipPort == 7946)
        #expect(c.wireGuardPort == 51820)
        #expect(c.mtu == nil)
        #expect(c.effectiveMTU(underlayMTU: 1500) == 1420)
        #expect(c.effectiveMTU(underlayMTU: 9001) == 8921)
        #expect(c.persistentKeepalive == nil)
        #expect(c.keyRotationInterval == nil)
        #expect(c.logLevel == .info)
        #expect(c.metricsAddress == nil)
    }

    @Test func fullFileParses() throws {
        let yaml = """
        # wiremesh config
        state-dir: /srv/wm
        control-socket: /run/wm/ctl.sock
        interface: mesh0
        advertise-address: 192.0.2.10
        gossip-port: 8000
        wireguard-port: 51999
        mtu: 1400
        persistent-keepalive: 25
        key-rotation-interval: 1h30m
        log-level: debug
        metrics-address: 127.0.0.1:9586
        """
        let c = AgentConfig.merge(file: try ConfigLayer(yaml: yaml, file: "/etc/wiremesh/config.yaml"))
        #expect(c.stateDirectory == "/srv/wm")
        #expect(c.controlSocket == "/run/wm/ctl.sock")
        #expect(c.interface == "mesh0")
        #expect(c.advertiseAddress == (try IPAddress("192.0.2.10")))
        #expect(c.gossipPort == 8000)
        #expect(c.wireGuardPort == 51999)
        #expect(c.mtu == 1400)
        #expect(c.effectiveMTU(underlayMTU: 1500) == 1400)
        #expect(c.persistentKeepalive == .seconds(25))
        #expect(c.keyRotationInterval == .seconds(5400))
        #expect(c.logLevel == .debug)
        #expect(c.metricsAddress == (try Endpoint("127.0.0.1:9586")))
    }

    @Test("push-pull is read from the file (YAML booleans or on/off), the environment and the flag, and saved with the node")
    func pushPullFromEveryLayer() throws {
        #expect(try AgentConfig.merge(file: ConfigLayer(yaml: "push-pull: true\n", file: "f.yaml")).pushPull == true)
        #expect(try AgentConfig.merge(file: ConfigLayer(yaml: "push-pull: on\n", file: "f.yaml")).pushPull == true)
        let file = try ConfigLayer(yaml: "push-pull: on\n", file: "f.yaml")
        let env = try ConfigLayer(environment: ["WIREMESH_PUSH_PULL": "off"])
        #expect(AgentConfig.merge(file: file, environment: env).pushPull == false)
        let flags = try ConfigLayer(flags: [.pushPull: "ON"])
        #expect(AgentConfig.merge(file: file, environment: env, flags: flags).pushPull == true)
        #expect(flags.savedValues["push-pull"] == "on")
        #expect(try ConfigLayer(saved: ["push-pull": "off"], file: "settings.json").pushPull == false)
    }

    @Test("a push-pull value that is not on or off names the key and the source")
    func pushPullRefusesOtherValues() {
        #expect(throws: ConfigError(key: "push-pull", source: "flag --push-pull", message: "'yes please' is not on or off")) {
            try ConfigLayer(flags: [.pushPull: "yes please"])
        }
        // A quoted YAML string is text, not a boolean.
        #expect(throws: ConfigError(key: "push-pull", source: "config file f.yaml line 1", message: "wrong type: expected on or off, got the string 'on'")) {
            try ConfigLayer(yaml: "push-pull: \"on\"\n", file: "f.yaml")
        }
        #expect(throws: ConfigError(key: "push-pull", source: "environment variable WIREMESH_PUSH_PULL", message: "'1' is not on or off")) {
            try ConfigLayer(environment: ["WIREMESH_PUSH_PULL": "1"])
        }
    }

    @Test func precedenceIsFlagsOverEnvironmentOverFile() throws {
        let file = try ConfigLayer(yaml: "interface: from-file\ngossip-port: 1000\nmtu: 1300\nlog-level: error\n", file: "f.yaml")
        let env = try ConfigLayer(environment: ["WIREMESH_INTERFACE": "from-env", "WIREMESH_GOSSIP_PORT": "2000", "PATH": "/bin"])
        let flags = try ConfigLayer(flags: [.interface: "from-flag"])
        let c = AgentConfig.merge(file: file, environment: env, flags: flags)
        #expect(c.interface == "from-flag")
        #expect(c.gossipPort == 2000)
        #expect(c.mtu == 1300)
        #expect(c.logLevel == .error)
        #expect(c.wireGuardPort == 51820)
    }

    @Test func keyRotationIntervalFromEveryLayer() throws {
        let file = try ConfigLayer(yaml: "key-rotation-interval: 24h\n", file: "f.yaml")
        #expect(AgentConfig.merge(file: file).keyRotationInterval == .seconds(86_400))
        let env = try ConfigLayer(environment: ["WIREMESH_KEY_ROTATION_INTERVAL": "12h"])
        #expect(AgentConfig.merge(file: file, environment: env).keyRotationInterval == .seconds(43_200))
        let flags = try ConfigLayer(flags: [.keyRotationInterval: "20s"])
        #expect(AgentConfig.merge(file: file, environment: env, flags: flags).keyRotationInterval == .seconds(20))
        #expect(throws: ConfigError.self) { try ConfigLayer(environment: ["WIREMESH_KEY_ROTATION_INTERVAL": "10s"]) }
    }

    @Test func zeroSwitchesOffWhatALowerLayerSet() throws {
        let file = try ConfigLayer(yaml: "persistent-keepalive: 25s\nkey-rotation-interval: 24h\n", file: "f.yaml")
        let flags = try ConfigLayer(flags: [.persistentKeepalive: "0", .keyRotationInterval: "0s"])
        let c = AgentConfig.merge(file: file, flags: flags)
        #expect(c.persistentKeepalive == nil)
        #expect(c.keyRotationInterval == nil)
    }

    @Test(arguments: [
        ("gossip-port: 0", "gossip-port", "out of range"),
        ("gossip-port: 70000", "gossip-port", "out of range"),
        ("wireguard-port: abc", "wireguard-port", "wrong type"),
        ("wireguard-port: \"51820\"", "wireguard-port", "wrong type"),
        ("mtu: [1400]", "mtu", "wrong type"),
        ("mtu: 500", "mtu", "out of range"),
        ("key-rotation-interval: 5 parsecs", "key-rotation-interval", "not a duration"),
        ("key-rotation-interval: 14s", "key-rotation-interval", "shorter than 15 seconds"),
        ("persistent-keepalive: 2d", "persistent-keepalive", "longer than the maximum"),
        ("advertise-address: 300.1.1.1", "advertise-address", "not an IP address"),
        ("metrics-address: localhost", "metrics-address", "ADDRESS:PORT"),
        ("log-level: loud", "log-level", "not a log level"),
        ("interface: this-name-is-way-too-long", "interface", "not a valid interface name"),
        ("interfaces: wm0", "interfaces", "unknown key"),
        ("state-dir:", "state-dir", "no value"),
        ("mtu: 1400\nmtu: 1300", "mtu", "twice"),
    ])
    func invalidFileNamesKeyFileAndLine(yaml: String, key: String, problem: String) {
        do {
            _ = try ConfigLayer(yaml: "# header\n" + yaml + "\n", file: "/etc/wiremesh/config.yaml")
            Issue.record("'\(yaml)' was accepted")
        } catch let e as ConfigError {
            #expect(e.key == key)
            #expect(e.source.hasPrefix("config file /etc/wiremesh/config.yaml line "), "\(e.source)")
            #expect(e.description.contains(problem), "\(e.description)")
            #expect(e.description.contains(key))
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    /// Spotted while writing the yaml-config fuzz target: a bare number of seconds up to Int.max was
    /// accepted, and saving it (settings.json, in milliseconds) trapped on overflow.
    @Test func durationsTooLongToSaveAreRefused() throws {
        #expect {
            _ = try ConfigLayer(yaml: "key-rotation-interval: 9223372036854776\n", file: "c.yaml").savedValues
        } throws: { ($0 as? ConfigError)?.description.contains("too long") == true }
        // The longest accepted value saves and reads back.
        let layer = try ConfigLayer(yaml: "key-rotation-interval: 9223372036854775\n", file: "c.yaml")
        #expect(layer.savedValues["key-rotation-interval"] == "9223372036854775s")
        #expect(try ConfigLayer(saved: layer.savedValues, file: "settings.json") == layer)
    }

    @Test func lineNumberPointsAtTheKey() {
        #expect(throws: ConfigError(key: "gossip-port", source: "config file c.yaml line 3", message: "port 0 out of range: expected 1-65535")) {
            try ConfigLayer(yaml: "interface: wm1\n\ngossip-port: 0\n", file: "c.yaml")
        }
    }

    @Test func syntaxErrorsAndNonMappingsAreFileErrors() {
        for yaml in ["interface: [unclosed", "- a\n- b\n", "just text"] {
            do {
                _ = try ConfigLayer(yaml: yaml, file: "c.yaml")
                Issue.record("'\(yaml)' was accepted")
            } catch let e as ConfigError {
                #expect(e.key == nil)
                #expect(e.description.hasPrefix("invalid config file c.yaml: "), "\(e.description)")
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect((try? ConfigLayer(yaml: "", file: "c.yaml")) == ConfigLayer())
        #expect(ConfigError.exitCode == 2)
    }

    @Test func environmentErrorsNameTheVariable() {
        do {
            _ = try ConfigLayer(environment: ["WIREMESH_MTU": "huge"])
            Issue.record("accepted")
        } catch let e as ConfigError {
            #expect(e.description == "invalid mtu in environment variable WIREMESH_MTU: wrong type: expected a whole number, got 'huge'")
        } catch { Issue.record("\(error)") }
        // Non-setting WIREMESH_ variables the CLI reads itself are allowed.
        #expect((try? ConfigLayer(environment: ["WIREMESH_CONFIG": "/x.yaml", "WIREMESH_TOKEN": "wmj1.x"])) == ConfigLayer())
    }

    @Test func unknownEnvironmentVariablesAreSkippedAndNamedInOneWarning() throws {
        let env = ["WIREMESH_GOSIP_PORT": "1", "WIREMESH_BIN": "/x/secret-value", "WIREMESH_MTU": "1300", "PATH": "/bin",
                   "WIREMESH_CONFIG": "/x.yaml", "WIREMESH_TOKEN": "t"]
        let layer = try ConfigLayer(environment: env)
        #expect(layer.mtu == 1300, "known variables still apply")
        #expect(layer.gossipPort == nil)
        #expect(ConfigLayer.unknownVariables(in: env) == ["WIREMESH_BIN", "WIREMESH_GOSIP_PORT"])
        let warning = try #require(ConfigLayer.unknownVariablesWarning(env))
        #expect(warning.contains("WIREMESH_BIN, WIREMESH_GOSIP_PORT"), "\(warning)")
        for key in ConfigKey.allCases { #expect(warning.contains(key.environmentVariable), "\(warning)") }
        #expect(warning.contains("WIREMESH_CONFIG"))
        #expect(!warning.contains("secret-value"), "a variable's value is never repeated")
        #expect(ConfigLayer.unknownVariablesWarning(["WIREMESH_MTU": "1300", "HOME": "/root"]) == nil)

        // load() goes on, hands the warning over once, and applies the known variables.
        var warnings: [String] = []
        let c = try AgentConfig.load(configFile: nil, environment: env.filter { $0.key != "WIREMESH_CONFIG" },
                                     flags: ConfigLayer(), warn: { warnings.append($0) })
        #expect(c.mtu == 1300)
        #expect(warnings == [ConfigLayer.unknownVariablesWarning(env)!])
    }

    /// (yaml, what libyaml complains about) for files whose error libyaml places after the last character.
    @Test(arguments: [
        ("interface: \"wm0\n", "quoted scalar"),
        ("interface: \"wm0", "quoted scalar"),
        ("interface: wm0\nmtu: 'x\n\n", "quoted scalar"),
        ("interface: wm0\njust text\n", "simple key"),
        ("interface: wm0\njust text", "simple key"),
        ("interface: [unclosed", "flow sequence"),
        ("gossip-port: 7946\ninterface: {a\n", "flow mapping"),
        ("interface: wm0\n\tmtu: 3\n", "tab"),
    ])
    func yamlErrorPositionsAreInsideTheFile(yaml: String, construct: String) throws {
        let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        do {
            _ = try ConfigLayer(yaml: yaml, file: "c.yaml")
            Issue.record("accepted \(yaml.debugDescription)")
        } catch let e as ConfigError {
            let text = e.description
            #expect(text.contains(construct), "\(text)")
            // Every "line L, column C" the message names is a character of the file.
            let marks = text.matches(of: /line (\d+), column (\d+)/).map { (Int($0.1)!, Int($0.2)!) }
            #expect(!marks.isEmpty, "\(text)")
            for (line, column) in marks {
                #expect(line >= 1 && line <= lines.count, "line \(line) outside \(yaml.debugDescription): \(text)")
                guard line >= 1 && line <= lines.count else { continue }
                let width = lines[line - 1].unicodeScalars.count
                #expect(column >= 1 && column <= max(1, width), "column \(column) outside line \(line) of \(yaml.debugDescription): \(text)")
            }
        }
    }

    @Test func anUnterminatedQuoteNamesTheEndOfTheFileAndWhereTheQuoteOpened() {
        #expect(throws: ConfigError(key: nil, source: "config file c.yaml", message: "not valid YAML: found unexpected end of stream "
                                    + "at the end of the file (line 2, column 9), while scanning a quoted scalar that starts at line 2, column 6")) {
            try ConfigLayer(yaml: "interface: wm0\nmtu: 'x13\n", file: "c.yaml")
        }
    }

    @Test func flagErrorsNameTheFlag() {
        do {
            _ = try ConfigLayer(flags: [.wireGuardPort: "-1"])
            Issue.record("accepted")
        } catch let e as ConfigError {
            #expect(e.description == "invalid wireguard-port in flag --wireguard-port: port -1 out of range: expected 1-65535")
        } catch { Issue.record("\(error)") }
        let long = "/" + String(repeating: "s", count: 120)
        #expect(throws: ConfigError.self) { try ConfigLayer(flags: [.controlSocket: long]) }
    }

    @Test func loadReadsExplicitFileAndRejectsAMissingOne() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/config.yaml"
            try AtomicFile.write("interface: wmx\n", to: path, mode: 0o644)
            let c = try AgentConfig.load(configFile: path, environment: ["WIREMESH_GOSSIP_PORT": "7000"],
                                         flags: try ConfigLayer(flags: [.mtu: "1300"]))
            #expect(c.interface == "wmx" && c.gossipPort == 7000 && c.mtu == 1300)
            let viaEnv = try AgentConfig.load(configFile: nil, environment: ["WIREMESH_CONFIG": path], flags: ConfigLayer())
            #expect(viaEnv.interface == "wmx")
            #expect(throws: ConfigError.self) {
                try AgentConfig.load(configFile: dir + "/absent.yaml", environment: [:], flags: ConfigLayer())
            }
        }
    }

    @Test(arguments: [("24h", 86_400_000), ("30m", 1_800_000), ("1h30m", 5_400_000), ("90s", 90_000), ("1d2h", 93_600_000), ("250ms", 250)])
    func durations(text: String, milliseconds: Int64) throws {
        #expect(try parseDuration(text) == .milliseconds(milliseconds))
    }

    @Test(arguments: ["", "h", "10", "1.5h", "-1h", "1w", "1h 30m", "99999999999999999999h"])
    func badDurations(text: String) {
        #expect(throws: DurationError.self) { try parseDuration(text) }
    }
}
