import ArgumentParser
import Foundation
import IPNetwork
import Logging
import WireGuard
import WireMeshAgent
import WireMeshJoin

/// Flags every agent-facing command takes, so several agents can share one machine.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("state-dir"), help: ArgumentHelp(ConfigKey.stateDir.help, valueName: "dir"))
    var stateDir: String?
    @Option(name: .customLong("control-socket"), help: ArgumentHelp(ConfigKey.controlSocket.help, valueName: "path"))
    var controlSocket: String?
    @Option(name: .customLong("config"),
            help: ArgumentHelp("YAML config file; 'wiremesh --help' lists its keys (default: \(AgentConfig.defaultConfigFile) if it exists).",
                               valueName: "file"))
    var configFile: String?

    var flags: [ConfigKey: String] {
        var f: [ConfigKey: String] = [:]
        if let stateDir { f[.stateDir] = stateDir }
        if let controlSocket { f[.controlSocket] = controlSocket }
        return f
    }
}

/// Flags of the commands that start a node: one per `ConfigKey` (help texts from `ConfigKey.help`).
struct NodeFlags: ParsableArguments {
    @Option(help: ArgumentHelp(ConfigKey.interface.help, valueName: "name")) var interface: String?
    @Option(name: .customLong("advertise-address"), help: ArgumentHelp(ConfigKey.advertiseAddress.help, valueName: "address"))
    var advertiseAddress: String?
    @Option(name: .customLong("gossip-port"), help: ArgumentHelp(ConfigKey.gossipPort.help, valueName: "port")) var gossipPort: String?
    @Option(name: .customLong("wireguard-port"), help: ArgumentHelp(ConfigKey.wireGuardPort.help, valueName: "port"))
    var wireGuardPort: String?
    @Option(help: ArgumentHelp(ConfigKey.mtu.help, valueName: "bytes")) var mtu: String?
    @Option(name: .customLong("persistent-keepalive"), help: ArgumentHelp(ConfigKey.persistentKeepalive.help, valueName: "duration"))
    var keepalive: String?
    @Option(name: .customLong("log-level"), help: ArgumentHelp(ConfigKey.logLevel.help, valueName: "level")) var logLevel: String?
    @Option(name: .customLong("log-format"), help: ArgumentHelp(ConfigKey.logFormat.help, valueName: "text|json")) var logFormat: String?
    @Option(name: .customLong("key-rotation-interval"), help: ArgumentHelp(ConfigKey.keyRotationInterval.help, valueName: "duration"))
    var keyRotationInterval: String?
    @Option(name: .customLong("cluster-key-grace"), help: ArgumentHelp(ConfigKey.clusterKeyGrace.help, valueName: "duration"))
    var clusterKeyGrace: String?
    @Option(name: .customLong("push-pull"), help: ArgumentHelp(ConfigKey.pushPull.help, valueName: "on|off"))
    var pushPull: String?
    @Flag(name: .customLong("adopt-interface"),
          help: "Take over an existing WireGuard interface that this node did not set up (its key, port and peers are replaced).")
    var adoptInterface = false
    @Option(name: .customLong("metrics-address"), help: ArgumentHelp(ConfigKey.metricsAddress.help, valueName: "address:port"))
    var metricsAddress: String?
    @Option(name: .customLong("cni-config-dir"), help: ArgumentHelp(ConfigKey.cniConfigDir.help, valueName: "dir"))
    var cniConfigDir: String?

    var flags: [ConfigKey: String] {
        var f: [ConfigKey: String] = [:]
        if let interface { f[.interface] = interface }
        if let advertiseAddress { f[.advertiseAddress] = advertiseAddress }
        if let gossipPort { f[.gossipPort] = gossipPort }
        if let wireGuardPort { f[.wireGuardPort] = wireGuardPort }
        if let mtu { f[.mtu] = mtu }
        if let keepalive { f[.persistentKeepalive] = keepalive }
        if let logLevel { f[.logLevel] = logLevel }
        if let logFormat { f[.logFormat] = logFormat }
        if let keyRotationInterval { f[.keyRotationInterval] = keyRotationInterval }
        if let clusterKeyGrace { f[.clusterKeyGrace] = clusterKeyGrace }
        if let pushPull { f[.pushPull] = pushPull }
        if let metricsAddress { f[.metricsAddress] = metricsAddress }
        if let cniConfigDir { f[.cniConfigDir] = cniConfigDir }
        return f
    }
}

/// Loads file + environment + flags; bad config exits 2 with the key named.
func loadConfig(_ common: CommonOptions, _ node: NodeFlags? = nil) throws -> AgentConfig {
    do {
        let flags = common.flags.merging(node?.flags ?? [:]) { a, _ in a }
        let file = common.configFile ?? (FileManager.default.fileExists(atPath: AgentConfig.defaultConfigFile) ? AgentConfig.defaultConfigFile : nil)
        // The node's saved settings (settings.json) sit under the file, the environment and the flags.
        return try AgentConfig.load(configFile: file, environment: ProcessInfo.processInfo.environment,
                                    flags: try ConfigLayer(flags: flags), withSavedSettings: true, warn: { printError($0) })
    } catch {
        printError("\(error)")
        throw ExitCode(ExitStatus.usage)
    }
}

func makeLogger(_ config: AgentConfig) -> Logger {
    switch config.logFormat {
    case .text: LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    case .json: LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
    }
    var logger = Logger(label: "wiremesh")
    logger.logLevel = config.logLevel
    return logger
}

/// Runs `body`, turning any error into one line on stderr and exit code `code`.
func failing<T>(_ code: Int32 = 1, _ body: () throws -> T) throws -> T {
    do { return try body() } catch let e as ExitCode { throw e } catch {
        printError("\(error)")
        throw ExitCode(code)
    }
}

/// Exit code for an error: 2 for bad input (tokens, config, state dir in use), 1 otherwise.
func statusCode(for error: Error) -> Int32 {
    switch error {
    case is JoinError, is TokenRequestError, is TokenInputError, is ConfigError, is StateError, is IPAMError, is IPParseError: return ExitStatus.usage
    default: return ExitStatus.failure
    }
}

func hostName() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    gethostname(&buf, buf.count)
    return String(cString: buf)
}

struct InitCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init", abstract: "Create a new cluster on this node, print a join token, then run the agent.",
        discussion: "The token goes alone to stdout, its id, expiry and uses (one: it joins one node) to stderr.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var node: NodeFlags
    @Option(name: .customLong("cluster-cidr"), help: "The cluster's pod range.") var clusterCIDR = "10.244.0.0/16"
    @Option(name: .customLong("node-prefix"), help: "Prefix length of each node's pod block.") var nodePrefix = 24
    @Option(name: .customLong("cluster-cidr-v6"), help: "An IPv6 pod range beside the IPv4 one (dual-stack), e.g. fd42:1::/48: every node gets a block of each.")
    var clusterCIDRV6: String?
    @Option(name: .customLong("node-prefix-v6"), help: "Prefix length of each node's IPv6 pod block (with --cluster-cidr-v6).")
    var nodePrefixV6 = ClusterSettings.defaultNodePrefixLengthV6
    @Option(help: "This node's name, unique in the cluster (default: the host name; give each agent on one machine its own).")
    var name: String?
    @Option(name: .customLong("pod-cidr"), help: "Use this pod CIDR instead of assigning one.") var podCIDR: String?
    @Option(name: .customLong("token-ttl"), help: "Lifetime of the first join token, e.g. 24h.") var tokenTTL = "24h"
    @Flag(name: .customLong("prepare-only"), help: "Create the state and print the token; do not run the agent.")
    var prepareOnly = false

    func run() async throws {
        let config = try loadConfig(common, node)
        let token: String
        do {
            let cidr = try IPPrefix(clusterCIDR)
            let cidrV6 = try clusterCIDRV6.map { try IPPrefix($0) }
            let pod = try podCIDR.map { try IPPrefix($0) }
            let ttl = try parseDuration(tokenTTL)
            try Preflight.check(config, startsAgent: !prepareOnly, adoptInterface: node.adoptInterface)
            token = try Lifecycle.initCluster(config: config, node: NodeOptions(name: name ?? hostName(), podCIDR: pod),
                                              clusterCIDR: cidr, nodePrefix: nodePrefix,
                                              clusterCIDRV6: cidrV6, nodePrefixV6: nodePrefixV6,
                                              tokenTTL: Double(ttl.components.seconds))
        } catch {
            printError("init: \(error)")
            throw ExitCode(statusCode(for: error))
        }
        // Unbuffered: scripts read the token while the agent keeps running.
        FileHandle.standardOutput.write(Data((token + "\n").utf8))
        if let first = try? JoinToken(parsing: token) {
            printError("first join token \(first.idText): expires \(first.expiresAt.formatted(.iso8601)), "
                       + "\(CLIText.uses(first.usesLimit)) (it joins one node; 'wiremesh token create [--uses N]' makes more)")
        }
        if prepareOnly { printError(startHint(config)) } else { try await runAgent(config, adoptInterface: node.adoptInterface) }
    }
}

struct JoinCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "join", abstract: "Join the cluster a token names, then run the agent.")

    @Argument(help: ArgumentHelp(
        "The join token, or - to read it from standard input. A token given here is visible to every local user "
            + "in the process list while join runs: prefer --token-file.",
        valueName: "token"))
    var token: String?
    @Option(name: .customLong("token-file"), help: ArgumentHelp(
        "Read the join token ('wiremesh token create' on any member) from FILE, or from standard input with -: "
            + "it stays out of the process list. Keep FILE readable by its owner only (mode 0600).",
        valueName: "file"))
    var tokenFile: String?
    @OptionGroup var common: CommonOptions
    @OptionGroup var node: NodeFlags
    @Option(help: "This node's name, unique in the cluster (default: its name before 'wiremesh leave', else the host name; give each agent on one machine its own).")
    var name: String?
    @Option(name: .customLong("pod-cidr"), help: "Use this pod CIDR instead of the one the cluster assigns.") var podCIDR: String?
    @Flag(name: .customLong("prepare-only"), help: "Join and save the state; do not run the agent.") var prepareOnly = false

    func validate() throws {
        // Never echo what was given: it is a secret.
        switch (token, tokenFile) {
        case (nil, nil):
            throw ValidationError("no join token: give it with --token-file FILE (or --token-file - for standard input)")
        case (.some, .some):
            throw ValidationError("two join tokens: give either --token-file FILE or TOKEN, not both")
        default:
            break
        }
    }

    func run() async throws {
        let config = try loadConfig(common, node)
        do {
            // The token first: a missing or unreadable file is named before any check of the host.
            let text: String
            switch (tokenFile, token) {
            case ("-"?, _), (nil, "-"?): text = try TokenInput.standardInput()
            case (let path?, _): text = try TokenInput.file(path, warn: { printError("join: warning: \($0)") })
            case (nil, let given?): text = given
            case (nil, nil): throw TokenInputError.none  // validate() refused this already
            }
            _ = try JoinToken(parsing: text)  // a damaged token is refused before the host is checked
            let pod = try podCIDR.map { try IPPrefix($0) }
            try Preflight.check(config, startsAgent: !prepareOnly, adoptInterface: node.adoptInterface)
            let nodeName = name ?? Lifecycle.previousName(config: config) ?? hostName()
            let joined = try await Lifecycle.join(token: text, config: config, node: NodeOptions(name: nodeName, podCIDR: pod))
            print("joined cluster \(joined.clusterID) as \(joined.node.name), pod CIDR \(joined.node.podCIDRs.map(\.description).joined(separator: " "))")
        } catch {
            printError("join: \(error)")
            throw ExitCode(statusCode(for: error))
        }
        if prepareOnly { return printError(startHint(config)) }
        // The token is spent but still in this process's argv, which every local user can read in
        // /proc/PID/cmdline: the agent runs as a fresh `wiremesh agent` (what join was told is saved
        // in the state directory, so it needs only that and what is not saved).
        let argv = Lifecycle.agentArguments(stateDirectory: config.stateDirectory, configFile: common.configFile,
                                            flags: common.flags.merging(node.flags) { a, _ in a }, adoptInterface: node.adoptInterface)
        fflush(nil)  // every stream: the "joined" line may sit in a buffer when stdout is a file
        execAgent(argv)
        printError("join: could not start the agent as a new process (\(String(cString: strerror(errno)))); running it here")
        try await runAgent(config, adoptInterface: node.adoptInterface)
    }

}

/// Where `join` reads its token from: a file (`--token-file`) or standard input. What was read is
/// never repeated in an error or a warning.
enum TokenInput {
    /// A token is a few hundred bytes; anything much larger is not a token file.
    static let maxFileBytes = 64 * 1024

    /// One line from standard input, trimmed.
    static func standardInput() throws -> String {
        guard let line = readLine(strippingNewline: true)?.trimmingCharacters(in: .whitespaces), !line.isEmpty else {
            throw TokenInputError.emptyStandardInput
        }
        return line
    }

    /// The token in the file at `path` (surrounding blanks and newlines trimmed). `warn` hears when
    /// the file is readable by its group or by others: whoever reads it can join a node.
    static func file(_ path: String, warn: (String) -> Void) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TokenInputError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw TokenInputError.unreadable(path: path, reason: String(cString: strerror(errno))) }
        if info.st_mode & S_IFMT == S_IFDIR { throw TokenInputError.unreadable(path: path, reason: "it is a directory") }
        let mode = info.st_mode & 0o777
        if mode & 0o044 != 0 {
            warn("token file \(path) is readable by " + (mode & 0o004 != 0 ? "every local user" : "its group")
                 + " (mode 0\(String(mode, radix: 8))): anyone who reads it can join a node; 'chmod 600 \(path)'")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while bytes.count <= maxFileBytes {
            let n = read(fd, &chunk, chunk.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw TokenInputError.unreadable(path: path, reason: String(cString: strerror(errno))) }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        defer { for i in bytes.indices { bytes[i] = 0 }; for i in chunk.indices { chunk[i] = 0 } }
        guard bytes.count <= maxFileBytes else { throw TokenInputError.tooLarge(path: path) }
        let text = String(decoding: bytes, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard !text.isEmpty else { throw TokenInputError.empty(path: path) }
        return text
    }
}

/// Why `join` has no token to use. Names the file, never its content.
enum TokenInputError: Error, CustomStringConvertible {
    case none
    case emptyStandardInput
    case unreadable(path: String, reason: String)
    case empty(path: String)
    case tooLarge(path: String)

    var description: String {
        switch self {
        case .none:
            return "no join token: give it with --token-file FILE"
        case .emptyStandardInput:
            return "no token on standard input: pipe it in, e.g. 'wiremesh join --token-file - < token-file'"
        case .unreadable(let path, let reason):
            return "cannot read the token file \(path): \(reason); give the file that holds the token printed by 'wiremesh token create' (or --token-file - and pipe it in)"
        case .empty(let path):
            return "the token file \(path) is empty: write the token printed by 'wiremesh token create' into it"
        case .tooLarge(let path):
            return "\(path) is larger than \(TokenInput.maxFileBytes / 1024) KiB, so it is not a token file: give the file holding the token printed by 'wiremesh token create'"
        }
    }
}

/// Replaces this process with this executable running `argv` (returns only if that fails).
func execAgent(_ argv: [String]) {
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    _ = execv("/proc/self/exe", &cArgs)
    for p in cArgs { free(p) }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent", abstract: "Run the agent (what systemd runs); rejoins from the saved member list.")

    @OptionGroup var common: CommonOptions
    @OptionGroup var node: NodeFlags

    func run() async throws {
        try await runAgent(try loadConfig(common, node), adoptInterface: node.adoptInterface)
    }
}

/// What to run after `--prepare-only` (the settings given are saved: a plain `wiremesh agent` uses them).
func startHint(_ config: AgentConfig) -> String {
    let dir = config.stateDirectory == StateStore.defaultDirectory ? "" : " --state-dir \(config.stateDirectory)"
    return "state saved in \(config.stateDirectory); start the node with 'wiremesh agent\(dir)' (or 'systemctl enable --now wiremesh')"
}

func runAgent(_ config: AgentConfig, adoptInterface: Bool) async throws {
    let logger = makeLogger(config)
    do {
        try await Lifecycle.runAgent(config: config, logger: logger, adoptInterface: adoptInterface)
    } catch {
        printError("agent: \(error)")
        throw ExitCode(statusCode(for: error))
    }
}

/// Sends one request to the agent and returns its answer. A failure becomes one line on stderr and
/// exit 2 when the agent says the input was wrong (`ControlFailure.isBadInput`), else exit 1 (agent
/// not reachable, internal errors).
func ask(_ common: CommonOptions, _ request: ControlRequest) throws -> ControlResponse {
    let config = try loadConfig(common)
    let response: ControlResponse
    do {
        response = try ControlClient(path: config.controlSocket).send(request)
    } catch ControlSocketError.agentNotRunning(let path) {
        // The state directory knows why no agent answers better than the socket does.
        let store = StateStore(directory: config.stateDirectory)
        if let left = try? store.leftMarker() {
            printError("\(StateError.left(directory: store.directory, clusterID: left.clusterID, at: left.leftAt))")
        } else if !store.isInitialised && AtomicFile.mode(of: store.directory) != nil {
            printError("\(StateError.notInitialised(directory: store.directory))")
        } else {
            printError("\(ControlSocketError.agentNotRunning(path: path))")
        }
        throw ExitCode(ExitStatus.failure)
    } catch {
        printError("\(error)")
        throw ExitCode(ExitStatus.failure)
    }
    if case .failure(let failure) = response {
        printError(failure.message)
        throw ExitCode(failure.isBadInput ? ExitStatus.usage : ExitStatus.failure)
    }
    return response
}

/// Prints `value` as pretty JSON with sorted keys, ISO 8601 dates and unescaped slashes (CIDRs, paths).
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .iso8601
    print(String(decoding: try encoder.encode(value), as: UTF8.self))
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show this node.",
        discussion: "Exits 0 when the agent runs and has programmed its interface and routes, 1 when it is not running or not healthy (the problem is shown).")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print one JSON object (keys as in the text, e.g. name, pod_cidrs, public_key, cluster_keys).") var json = false

    func run() throws {
        guard case .status(let s) = try ask(common, .status) else { return }
        let healthy = s.healthy ?? true
        defer { if !healthy { Foundation.exit(1) } }
        if json { return try printJSON(s) }
        print("node:        \(s.nodeName) (cluster \(s.clusterID))")
        print("health:      " + (healthy ? "ok" : "NOT OK: " + (s.problems ?? []).joined(separator: "; ")))
        let mtu = s.mtu.map { ", MTU \($0)" } ?? ""
        print("interface:   \(s.interface) (\(s.backend))\(mtu), WireGuard port \(s.wireGuardPort), gossip port \(s.gossipPort)")
        if let address = s.advertiseAddress { print("advertise:   \(address)") }
        print("public key:  \(s.wireGuardPublicKey)")
        print("pod CIDRs:   \(s.podCIDRs.joined(separator: ", ")), overlay \(([s.overlayAddress] + [s.overlayAddressV6].compactMap { $0 }).joined(separator: ", "))")
        print("live peers:  \(s.livePeers)")
        let now = Date()
        func span(_ seconds: Double) -> String { DeviceFormat.duration(Int64(seconds.rounded())) }
        print("key age:     \(span(now.timeIntervalSince(s.keyCreatedAt))) (created \(s.keyCreatedAt.formatted(.iso8601)))")
        if let next = s.nextKeyRotation {
            print("next key rotation: \(next.formatted(.iso8601)) (in \(span(next.timeIntervalSince(now))))")
        } else {
            print("next key rotation: none scheduled (--key-rotation-interval; 'wiremesh rotate-key' rotates now)")
        }
        if let keys = s.clusterKeys {
            let list = keys.map { "\($0.id)@\($0.generation)" + ($0.primary ? " (primary)" : "") }.joined(separator: ", ")
            print("cluster keys: \(list); rotation \(s.clusterKeyPhase ?? "steady")")
        }
        if let problem = s.clusterKeyProblem { print("cluster key problem: \(problem)") }
    }
}

struct PeersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "peers", abstract: "List the other nodes.")
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print a JSON array, one object per node.") var json = false

    func run() throws {
        guard case .peers(let peers) = try ask(common, .peers) else { return }
        if json { return try printJSON(peers) }
        let header = ["NAME", "STATE", "POD CIDRS", "ENDPOINT", "HANDSHAKE", "PUBLIC KEY"]
        let rows = peers.map { p in
            [p.name, p.state, p.podCIDRs.joined(separator: ","), p.endpoint ?? "-",
             p.secondsSinceHandshake.map { "\($0)s ago" } ?? "never", p.publicKey]
        }
        print(CLIText.table(header: header, rows: rows), terminator: "")
    }
}

struct LeaveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "leave", abstract: "Leave the cluster, remove this node's interface and routes, and stop the agent.",
        discussion: """
            Announces a signed leave (every peer drops this node), then removes the WireGuard interface (and the \
            wireguard-go serving it) and the agent's routes. The state directory records the leave: 'wiremesh agent' \
            refuses to start until 'wiremesh join TOKEN' joins again (it keeps this node's identity and keys).
            """)
    @OptionGroup var common: CommonOptions

    func run() throws {
        if case .done(let message) = try ask(common, .leave) { print(message) }
    }
}
