import Foundation

// The help texts of the settings, next to `ConfigKey` so that the flags' help, the top-level help and
// the README test all read one list (a new key without a text does not compile).

extension ConfigKey {
    /// What the setting does, one sentence for help texts.
    public var summary: String {
        switch self {
        case .stateDir: return "Directory of this node's keys and cluster state."
        case .controlSocket: return "Unix socket the CLI talks to the agent through (root-only)."
        case .interface: return "WireGuard interface name."
        case .advertiseAddress: return "Underlay address other nodes reach this one at."
        case .gossipPort: return "Membership gossip UDP port, and the TCP port for joins and key requests."
        case .wireGuardPort: return "WireGuard UDP port."
        case .mtu: return "WireGuard interface MTU, 1280-65535."
        case .persistentKeepalive: return "WireGuard keepalive for nodes behind NAT, e.g. 25s; 0 turns it off."
        case .keyRotationInterval:
            return "Rotate this node's WireGuard key by itself this often, e.g. 24h (±10 % per node, at least 15s); 0 turns it off."
        case .clusterKeyGrace: return "How long an old cluster key still opens gossip after a cluster key rotation."
        case .pushPull: return "on: members whose views are far apart (a mass join, a healed partition) swap whole member tables over the gossip port's TCP; off: datagram-sized anti-entropy only."
        case .logLevel: return "Log level: trace, debug, info, notice, warning or error."
        case .logFormat: return "Log lines as readable text, or json: one object per line (time, level, node, event, fields)."
        case .metricsAddress: return "ADDRESS:PORT serving Prometheus metrics at /metrics, plus /healthz and /readyz (off by default; keep it on loopback or a management network)."
        case .cniConfigDir: return "Directory the agent writes this node's CNI network config (10-wiremesh.conflist, network wiremesh) in."
        }
    }

    /// The default, as a person reads it (taken from `AgentConfig()` where it is a value).
    public var defaultText: String {
        let d = AgentConfig()
        switch self {
        case .stateDir: return d.stateDirectory
        case .controlSocket: return d.controlSocket
        case .interface: return d.interface
        case .advertiseAddress: return d.advertiseAddress.map { "\($0)" } ?? "the source address of the default route"
        case .gossipPort: return "\(d.gossipPort)"
        case .wireGuardPort: return "\(d.wireGuardPort)"
        case .mtu: return d.mtu.map { "\($0)" } ?? "underlay MTU - \(AgentConfig.wireGuardOverhead)"
        case .persistentKeepalive: return d.persistentKeepalive.map(Self.seconds) ?? "off"
        case .keyRotationInterval: return d.keyRotationInterval.map(Self.seconds) ?? "off"
        case .clusterKeyGrace: return Self.seconds(d.clusterKeyGrace)
        case .pushPull: return d.pushPull ? "on" : "off"
        case .logLevel: return d.logLevel.rawValue
        case .logFormat: return d.logFormat.rawValue
        case .metricsAddress: return d.metricsAddress.map { "\($0)" } ?? "off"
        case .cniConfigDir: return d.cniConfigDirectory
        }
    }

    /// The help of the setting's flag: what it does and its default, written "(default: X)" like
    /// argument-parser writes the defaults of the other options.
    public var help: String { "\(summary) (default: \(defaultText))" }

    private static func seconds(_ d: Duration) -> String { "\(d.components.seconds)s" }
}

/// The settings reference at the end of `wiremesh --help`, generated from `ConfigKey.allCases`.
public enum ConfigReference {
    /// Lines are at most `width` columns, so argument-parser prints them unchanged on an 80-column terminal.
    public static let width = 78

    /// Every key with its flag, environment variable, meaning and default, and how the sources merge.
    public static var text: String {
        let intro = """
            SETTINGS: each comes from its flag, else its environment variable, else the config file \
            (YAML; \(AgentConfig.defaultConfigFile), or --config FILE, or \(ConfigLayer.configFileVariable)=FILE), \
            else its default. In the file the key is the flag without '--', e.g. 'interface: wm0'. \
            init, join and agent take every flag below; the other agent commands take --state-dir, \
            --control-socket and --config. Unknown WIREMESH_* variables are ignored with a warning.
            """
        var out = wrap(intro.split(separator: " ").map(String.init), indent: 0) + "\n\n"
        for key in ConfigKey.allCases {
            // Built on every start of the CLI (argument-parser reads the root's discussion): no Foundation.
            out += "  " + key.flag + String(repeating: " ", count: max(0, 25 - key.flag.utf8.count)) + key.environmentVariable + "\n"
            // "(default: X)" stays on one line.
            let words = key.summary.split(separator: " ").map(String.init) + ["(default: \(key.defaultText))"]
            out += wrap(words, indent: 6) + "\n"
        }
        return out
    }

    /// `words` in lines of at most `width` columns (a longer word gets a line of its own), each
    /// indented by `indent` spaces.
    static func wrap(_ words: [String], indent: Int) -> String {
        var lines: [String] = []
        var line = ""
        for word in words {
            if !line.isEmpty && indent + line.count + 1 + word.count > width {
                lines.append(line)
                line = ""
            }
            line += (line.isEmpty ? "" : " ") + word
        }
        if !line.isEmpty { lines.append(line) }
        return lines.map { String(repeating: " ", count: indent) + $0 }.joined(separator: "\n")
    }
}
