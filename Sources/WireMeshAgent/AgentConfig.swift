import Foundation
import IPNetwork
import Logging
import Membership
// YAML through jpsim/Yams rather than TOML through TOMLKit: Yams wraps libyaml (plain C, builds in
// seconds) where TOMLKit needs C++ interop with toml++; Yams exposes the parsed node tree with line
// and column marks, which lets every error name the key and the line; and YAML is the format operators
// of systemd/Kubernetes hosts already write for the agents next to this one.
import Yams

/// The agent's settings after merging defaults, the config file, environment variables and flags.
public struct AgentConfig: Sendable, Equatable {
    /// Where keys and cluster state live.
    public var stateDirectory: String = StateStore.defaultDirectory
    /// The root-only unix socket the CLI talks to.
    public var controlSocket: String = AgentConfig.defaultControlSocket
    /// The WireGuard interface name.
    public var interface: String = "wm0"
    /// The underlay address other nodes reach this one at (nil: pick the default route's source).
    public var advertiseAddress: IPAddress?
    /// UDP port of the membership gossip.
    public var gossipPort: UInt16 = 7946
    /// UDP port WireGuard listens on.
    public var wireGuardPort: UInt16 = 51820
    /// Interface MTU; nil means underlay MTU − 80 (see `effectiveMTU`).
    public var mtu: Int?
    /// WireGuard persistent keepalive (nil: off), for nodes behind NAT.
    public var persistentKeepalive: Duration?
    /// Scheduled WireGuard key rotation interval (nil: only on `wiremesh rotate-key`).
    public var keyRotationInterval: Duration?
    /// How long an old cluster key still opens gossip after the new one became primary (cluster-key
    /// rotation). Default: the failure timeout plus a few anti-entropy rounds, so every member has
    /// promoted the new key before any drops the old one.
    public var clusterKeyGrace: Duration = .seconds(30)
    /// Anti-entropy swaps whole member tables over the line port (TCP) when two views are far apart
    /// (a mass join, a healed partition), instead of only datagram-sized digests. Members that do not
    /// answer push/pulls are still reached by UDP anti-entropy. On by default: a 1000-node heal in
    /// 4.6 s instead of 8.9 (simulator), a mass join of 1000 seen by every agent in 30 s instead of
    /// 47, the same bytes on a quiet or lossy LAN (BENCHMARKS.md).
    public var pushPull: Bool = true
    /// Log verbosity.
    public var logLevel: Logger.Level = .info
    /// How log lines are written: readable text, or one JSON object per line.
    public var logFormat: LogFormat = .text
    /// Where Prometheus metrics are served (nil: not served).
    public var metricsAddress: Endpoint?
    /// Where the agent writes this node's CNI config list for container runtimes (ContainerNetwork.swift).
    public var cniConfigDirectory: String = AgentConfig.defaultCNIConfigDirectory
    /// What this run was told explicitly (config file, environment, flags), without defaults or the
    /// node's saved settings: `init`/`join`/`agent` save it (`SavedSettings.swift`).
    public var explicit = ConfigLayer()

    /// The default control socket (inside the unit's RuntimeDirectory).
    public static let defaultControlSocket = "/run/wiremesh/wiremesh.sock"
    /// The config file read when none is given and it exists.
    public static let defaultConfigFile = "/etc/wiremesh/config.yaml"
    /// Where CNI runtimes (containerd, CRI-O, podman with CNI) look for network configs.
    public static let defaultCNIConfigDirectory = "/etc/cni/net.d"
    /// Bytes WireGuard adds to a packet over IPv6 (40 IPv6 + 8 UDP + 32 WireGuard): the default
    /// MTU headroom, which is also safe over IPv4.
    public static let wireGuardOverhead = 80

    public init() {}

    /// The interface MTU to use over an underlay with `underlayMTU`.
    public func effectiveMTU(underlayMTU: Int) -> Int { mtu ?? (underlayMTU - Self.wireGuardOverhead) }

    /// The membership protocol's timings and knobs these settings ask for (push/pull on or off).
    public var membership: MembershipConfig { pushPull ? .wiremeshPushPull : .wiremeshDefaults }

    /// `membership` for a cluster whose pod range holds `nodeBlocks` node blocks: the view bound
    /// grows with the cluster the range allows, so a cluster of more than the core's default never
    /// stalls with views that refuse its members.
    public func membership(nodeBlocks: UInt64) -> MembershipConfig {
        var c = membership
        c.maxMembers = Self.viewBound(nodeBlocks: nodeBlocks, floor: c.maxMembers)
        return c
    }

    /// Most members a view holds: twice the node blocks (a freed block's last holder stays in views,
    /// dead, until reaped, while a new node holds it), at least `floor`, at most `maxViewBound`.
    public static func viewBound(nodeBlocks: UInt64, floor: Int) -> Int {
        let wanted = nodeBlocks > UInt64(maxViewBound) / 2 ? UInt64(maxViewBound) : nodeBlocks * 2
        return min(maxViewBound, max(floor, Int(wanted)))
    }

    /// The largest view bound: 65,536 members' records and state are ~35 MB per agent (README "Limits":
    /// a larger range works up to this many nodes).
    public static let maxViewBound = 65_536

    /// Applies a layer over this config (set values in the layer win).
    public func applying(_ layer: ConfigLayer) -> AgentConfig {
        var c = self
        if let v = layer.stateDirectory { c.stateDirectory = v }
        if let v = layer.controlSocket { c.controlSocket = v }
        if let v = layer.interface { c.interface = v }
        if let v = layer.advertiseAddress { c.advertiseAddress = v }
        if let v = layer.gossipPort { c.gossipPort = v }
        if let v = layer.wireGuardPort { c.wireGuardPort = v }
        if let v = layer.mtu { c.mtu = v }
        if let v = layer.persistentKeepalive { c.persistentKeepalive = v == .zero ? nil : v }
        if let v = layer.keyRotationInterval { c.keyRotationInterval = v == .zero ? nil : v }
        if let v = layer.clusterKeyGrace { c.clusterKeyGrace = v }
        if let v = layer.pushPull { c.pushPull = v }
        if let v = layer.logLevel { c.logLevel = v }
        if let v = layer.logFormat { c.logFormat = v }
        if let v = layer.metricsAddress { c.metricsAddress = v }
        if let v = layer.cniConfigDirectory { c.cniConfigDirectory = v }
        return c
    }

    /// Merges the sources by precedence: defaults < config file < environment < flags.
    public static func merge(file: ConfigLayer = ConfigLayer(), environment: ConfigLayer = ConfigLayer(),
                             flags: ConfigLayer = ConfigLayer()) -> AgentConfig {
        AgentConfig().applying(file).applying(environment).applying(flags)
    }

    /// Reads and merges every source. `configFile` nil means the default file if it exists; a file
    /// given explicitly (flag or WIREMESH_CONFIG) must exist. `warn` gets one line for each problem
    /// that does not stop the command (unknown `WIREMESH_` variables).
    public static func load(configFile: String?, environment: [String: String], flags: ConfigLayer,
                            warn: (String) -> Void = { _ in }) throws -> AgentConfig {
        let given = try explicitLayer(configFile: configFile, environment: environment, flags: flags, warn: warn)
        var config = AgentConfig().applying(given)
        config.explicit = given
        return config
    }

    /// The config file, the environment and the flags merged (later wins), without defaults.
    static func explicitLayer(configFile: String?, environment: [String: String], flags: ConfigLayer,
                              warn: (String) -> Void = { _ in }) throws -> ConfigLayer {
        if let warning = ConfigLayer.unknownVariablesWarning(environment) { warn(warning) }
        let explicit = configFile ?? environment[ConfigLayer.configFileVariable]
        let path = explicit ?? defaultConfigFile
        var fileLayer = ConfigLayer()
        if let bytes = try? AtomicFile.readIfExists(path) {
            fileLayer = try ConfigLayer(yaml: String(decoding: bytes, as: UTF8.self), file: path)
        } else if explicit != nil {
            throw ConfigError(key: nil, source: "config file \(path)", message: "cannot be read (missing or no permission)")
        }
        return fileLayer.applying(try ConfigLayer(environment: environment)).applying(flags)
    }
}

/// A config key, its environment variable and its flag.
public enum ConfigKey: String, CaseIterable, Sendable {
    case stateDir = "state-dir"
    case controlSocket = "control-socket"
    case interface
    case advertiseAddress = "advertise-address"
    case gossipPort = "gossip-port"
    case wireGuardPort = "wireguard-port"
    case mtu
    case persistentKeepalive = "persistent-keepalive"
    case keyRotationInterval = "key-rotation-interval"
    case clusterKeyGrace = "cluster-key-grace"
    case pushPull = "push-pull"
    case logLevel = "log-level"
    case logFormat = "log-format"
    case metricsAddress = "metrics-address"
    case cniConfigDir = "cni-config-dir"

    /// e.g. `WIREMESH_GOSSIP_PORT`.
    public var environmentVariable: String {
        "WIREMESH_" + rawValue.uppercased().replacingOccurrences(of: "-", with: "_")
    }

    /// e.g. `--gossip-port`.
    public var flag: String { "--" + rawValue }
}

/// An invalid setting: names the key, where it came from, and what is wrong. The CLI exits with 2.
public struct ConfigError: Error, Equatable, CustomStringConvertible {
    /// The offending key (nil for whole-file problems such as a YAML syntax error).
    public var key: String?
    /// "config file PATH line N", "environment variable WIREMESH_X" or "flag --x".
    public var source: String
    public var message: String

    /// The process exit status for a configuration error.
    public static let exitCode: Int32 = 2

    public init(key: String?, source: String, message: String) {
        self.key = key
        self.source = source
        self.message = message
    }

    public var description: String {
        if let key { return "invalid \(key) in \(source): \(message)" }
        return "invalid \(source): \(message)"
    }
}

/// One source of settings; nil means "not set here".
public struct ConfigLayer: Sendable, Equatable {
    public var stateDirectory: String?
    public var controlSocket: String?
    public var interface: String?
    public var advertiseAddress: IPAddress?
    public var gossipPort: UInt16?
    public var wireGuardPort: UInt16?
    public var mtu: Int?
    /// `.zero` switches keepalive off (overriding a lower layer).
    public var persistentKeepalive: Duration?
    /// `.zero` switches scheduled rotation off.
    public var keyRotationInterval: Duration?
    public var clusterKeyGrace: Duration?
    public var pushPull: Bool?
    public var logLevel: Logger.Level?
    public var logFormat: LogFormat?
    public var metricsAddress: Endpoint?
    public var cniConfigDirectory: String?

    /// The environment variable naming the config file (for containers).
    public static let configFileVariable = "WIREMESH_CONFIG"
    /// `WIREMESH_` variables that are read elsewhere (config file path, join token) and so are not typos.
    public static let otherEnvironmentVariables: Set<String> = [configFileVariable, "WIREMESH_TOKEN"]

    public init() {}

    /// Parses a YAML config file: a mapping of the keys in `ConfigKey`. Unknown keys, wrong types and
    /// bad values are errors naming the key, the file and the line.
    public init(yaml: String, file: String) throws {
        self.init()
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch YamlError.duplicatedKeysInMapping(let duplicates, let context) {
            // Name the line of the repeated key, not the start of the mapping Yams points at.
            let key = duplicates.sorted().first ?? "?"
            let lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            let hits = lines.indices.filter { lines[$0].hasPrefix(key) && lines[$0].dropFirst(key.count).trimmingCharacters(in: .whitespaces).hasPrefix(":") }
            let line = hits.count > 1 ? hits[1] + 1 : context.mark.line
            throw ConfigError(key: key, source: "config file \(file) line \(line)", message: "set twice")
        } catch {
            throw ConfigError(key: nil, source: "config file \(file)", message: "not valid YAML: \(Self.yamlProblem(error, in: yaml))")
        }
        guard let root else { return } // an empty file sets nothing
        guard let mapping = root.mapping else {
            throw ConfigError(key: nil, source: "config file \(file)", message: "expected a mapping of settings such as 'interface: wm0'")
        }
        var seen = Set<String>()
        for (keyNode, valueNode) in mapping {
            let line = keyNode.mark.map { " line \($0.line)" } ?? ""
            let source = "config file \(file)\(line)"
            guard let name = keyNode.scalar?.string, let key = ConfigKey(rawValue: name) else {
                let name = keyNode.scalar?.string ?? "(non-text key)"
                throw ConfigError(key: name, source: source,
                                  message: "unknown key; known keys: \(ConfigKey.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard seen.insert(name).inserted else { throw ConfigError(key: name, source: source, message: "set twice") }  // Yams catches most
            guard let scalar = valueNode.scalar else {
                throw ConfigError(key: name, source: source, message: "wrong type: expected a single value, not a list or mapping")
            }
            if scalar.style == .plain && ["", "~", "null", "Null", "NULL"].contains(scalar.string) {
                throw ConfigError(key: name, source: source, message: "no value given")
            }
            let quoted = scalar.style != .plain
            try set(key, scalar.string, quoted: quoted, source: source)
        }
    }

    /// Reads the `WIREMESH_*` variables of `ConfigKey`; a bad value is an error naming the variable.
    /// Unknown `WIREMESH_` variables are skipped (`unknownVariables` lists them for a warning): a
    /// variable left over in a unit file or a shell must not stop every command.
    public init(environment: [String: String]) throws {
        self.init()
        let byVariable = Dictionary(uniqueKeysWithValues: ConfigKey.allCases.map { ($0.environmentVariable, $0) })
        for (name, value) in environment.sorted(by: { $0.key < $1.key }) {
            guard let key = byVariable[name] else { continue }
            try set(key, value, quoted: false, source: "environment variable \(name)")
        }
    }

    /// Every `WIREMESH_` variable wiremesh reads: one per `ConfigKey`, then `WIREMESH_CONFIG`.
    public static var knownEnvironmentVariables: [String] {
        ConfigKey.allCases.map(\.environmentVariable) + [configFileVariable]
    }

    /// The `WIREMESH_` variables in `environment` that wiremesh does not read (most likely typos), sorted.
    public static func unknownVariables(in environment: [String: String]) -> [String] {
        let known = Set(knownEnvironmentVariables).union(otherEnvironmentVariables)
        return environment.keys.filter { $0.hasPrefix("WIREMESH_") && !known.contains($0) }.sorted()
    }

    /// One line naming the unknown `WIREMESH_` variables (never their values) and the known ones, or
    /// nil when there are none.
    public static func unknownVariablesWarning(_ environment: [String: String]) -> String? {
        let unknown = unknownVariables(in: environment)
        guard !unknown.isEmpty else { return nil }
        let names = unknown.joined(separator: ", ")
        return "warning: ignoring unknown environment variable\(unknown.count == 1 ? "" : "s") \(names) (a typo?); "
            + "wiremesh reads \(knownEnvironmentVariables.joined(separator: ", "))"
    }

    /// Builds the flags layer from the values the CLI received (as typed by the user).
    public init(flags: [ConfigKey: String]) throws {
        self.init()
        for (key, value) in flags.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            try set(key, value, quoted: false, source: "flag \(key.flag)")
        }
    }

    /// Parses `text` as the value of `key`. `quoted` marks a YAML string, which is not accepted where a
    /// number is expected (a wrong type, e.g. `gossip-port: "7946"`).
    mutating func set(_ key: ConfigKey, _ text: String, quoted: Bool, source: String) throws {
        func fail(_ message: String) -> ConfigError { ConfigError(key: key.rawValue, source: source, message: message) }
        func integer() throws -> Int {
            guard !quoted, let v = Int(text) else { throw fail("wrong type: expected a whole number, got '\(text)'") }
            return v
        }
        func port() throws -> UInt16 {
            let v = try integer()
            guard (1...65535).contains(v) else { throw fail("port \(v) out of range: expected 1-65535") }
            return UInt16(v)
        }
        func path() throws -> String {
            guard !text.isEmpty, !text.contains("\0") else { throw fail("expected a path, got an empty value") }
            return text
        }
        func duration(max: Duration? = nil) throws -> Duration {
            // A bare number is seconds; otherwise Go-style "1h30m", "90s", "24h".
            let d: Duration
            if !quoted, let seconds = Int(text) {
                guard seconds >= 0 else { throw fail("duration must not be negative, got '\(text)'") }
                // The bound parseDuration has (Int64 milliseconds), which the saved form relies on.
                guard seconds <= Int64.max / 1000 else { throw fail("duration '\(text)' is too long") }
                d = .seconds(seconds)
            } else {
                do { d = try parseDuration(text) } catch let e as DurationError { throw fail(e.description) }
            }
            if let max, d > max { throw fail("duration '\(text)' is longer than the maximum \(max)") }
            return d
        }
        switch key {
        case .stateDir: stateDirectory = try path()
        case .controlSocket:
            let p = try path()
            // sun_path holds 108 bytes including the terminating NUL.
            guard p.utf8.count <= 107 else { throw fail("path is \(p.utf8.count) bytes long; unix socket paths are limited to 107") }
            controlSocket = p
        case .interface:
            guard !text.isEmpty, text.utf8.count <= 15, text != ".", text != "..",
                  !text.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace }) else {
                throw fail("'\(text)' is not a valid interface name (1-15 characters, no '/', ':' or spaces)")
            }
            interface = text
        case .advertiseAddress:
            do { advertiseAddress = try IPAddress(text) } catch { throw fail("'\(text)' is not an IP address") }
        case .gossipPort: gossipPort = try port()
        case .wireGuardPort: wireGuardPort = try port()
        case .mtu:
            let v = try integer()
            guard (1280...65535).contains(v) else { throw fail("MTU \(v) out of range: expected 1280-65535") }
            mtu = v
        case .persistentKeepalive:
            // WireGuard stores the keepalive interval as 16-bit seconds.
            let d = try duration(max: .seconds(65535))
            guard d.components.attoseconds == 0 else { throw fail("keepalive must be whole seconds, got '\(text)'") }
            persistentKeepalive = d
        case .keyRotationInterval:
            let d = try duration()
            // A rotation takes up to two peer timeouts (6 s); below 15 s they would overlap.
            guard d == .zero || d >= .seconds(15) else { throw fail("rotation interval '\(text)' is shorter than 15 seconds: use e.g. 24h, or 0 to turn it off") }
            keyRotationInterval = d
        case .clusterKeyGrace:
            let d = try duration(max: .seconds(86_400))
            guard d >= .seconds(1) else { throw fail("grace '\(text)' is shorter than one second") }
            clusterKeyGrace = d
        case .pushPull:
            // YAML's booleans (plain true/false) as well as the on/off a flag takes; a quoted string is
            // a wrong type, as for numbers.
            guard !quoted else { throw fail("wrong type: expected on or off, got the string '\(text)'") }
            switch text.lowercased() {
            case "on", "true": pushPull = true
            case "off", "false": pushPull = false
            default: throw fail("'\(text)' is not on or off")
            }
        case .logLevel:
            guard let level = Logger.Level(rawValue: text.lowercased()) else {
                throw fail("'\(text)' is not a log level: expected one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            logLevel = level
        case .logFormat:
            guard let format = LogFormat(rawValue: text.lowercased()) else {
                throw fail("'\(text)' is not a log format: expected text or json")
            }
            logFormat = format
        case .metricsAddress:
            do { metricsAddress = try Endpoint(text) } catch { throw fail("'\(text)' is not ADDRESS:PORT (e.g. 127.0.0.1:9586)") }
        case .cniConfigDir: cniConfigDirectory = try path()
        }
    }

    /// libyaml's problem text with positions inside `yaml`, plus where the construct it was reading
    /// began (an unterminated quote: its opening quote).
    static func yamlProblem(_ error: Error, in yaml: String) -> String {
        if let y = error as? YamlError {
            switch y {
            case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
                 .composer(let context, let problem, let mark, _):
                var text = "\(problem) " + describePosition(line: mark.line, column: mark.column, in: yaml)
                if let context {
                    let start = position(line: context.mark.line, column: context.mark.column, in: yaml)
                    text += ", \(context.text) that starts at line \(start.line), column \(start.column)"
                }
                return text
            default: break
            }
        }
        return "\(error)"
    }

    /// "at line L, column C", or "at the end of the file (line L, column C)" when libyaml points past
    /// the last character (it reports end-of-stream errors on the line after the file's last).
    static func describePosition(line: Int, column: Int, in yaml: String) -> String {
        let p = position(line: line, column: column, in: yaml)
        return p.endOfFile ? "at the end of the file (line \(p.line), column \(p.column))" : "at line \(p.line), column \(p.column)"
    }

    /// A libyaml mark (1-based line and column, columns in Unicode scalars) moved onto a character
    /// that exists in `yaml`: a mark past the end of a line is its last character; past the last
    /// line, the file's last character (`endOfFile`). An empty line or file gives column 1.
    static func position(line: Int, column: Int, in yaml: String) -> (line: Int, column: Int, endOfFile: Bool) {
        var lines = yaml.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasSuffix("\r") ? $0.dropLast() : $0 }
        if lines.count > 1, lines.last?.isEmpty == true { lines.removeLast() }  // the final newline ends a line
        let lastLine = lines.count
        func width(_ n: Int) -> Int { lines[n - 1].unicodeScalars.count }
        if line > lastLine || (line == lastLine && column > width(lastLine)) {
            return (lastLine, max(1, width(lastLine)), true)
        }
        let l = max(1, line)
        return (l, min(max(1, column), max(1, width(l))), false)
    }
}

/// Why a duration text was rejected.
public struct DurationError: Error, Equatable, CustomStringConvertible {
    public var text: String
    public var description: String {
        "'\(text)' is not a duration: use a number with a unit, e.g. 90s, 30m, 24h or 1h30m (units ms, s, m, h, d)"
    }
}

/// Parses Go-style durations: one or more `NUMBER UNIT` parts, units ms, s, m, h, d ("1h30m", "24h").
public func parseDuration(_ text: String) throws -> Duration {
    let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
    var rest = Substring(text.trimmingCharacters(in: .whitespaces))
    guard !rest.isEmpty else { throw DurationError(text: text) }
    var totalMilliseconds: Int64 = 0
    while !rest.isEmpty {
        let digits = rest.prefix(while: { $0.isASCII && $0.isNumber })
        guard !digits.isEmpty, let number = Int64(digits) else { throw DurationError(text: text) }
        rest = rest.dropFirst(digits.count)
        let unitText = rest.prefix(while: { $0.isASCII && $0.isLetter })
        guard let unit = units.first(where: { $0.0 == unitText }) else { throw DurationError(text: text) }
        rest = rest.dropFirst(unitText.count)
        let (product, overflow) = number.multipliedReportingOverflow(by: unit.1)
        let (sum, overflow2) = totalMilliseconds.addingReportingOverflow(product)
        guard !overflow, !overflow2 else { throw DurationError(text: text) }
        totalMilliseconds = sum
    }
    return .milliseconds(totalMilliseconds)
}
