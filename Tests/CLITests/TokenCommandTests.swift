import Foundation
import TestSupport
import Testing
import WireMeshAgent

#if canImport(Glibc)
import Glibc
import WireMeshJoin
#endif

/// A one-node cluster for CLI tests: `wiremesh init` (which then runs the agent) in a network
/// namespace of its own, with wireguard-go. Everything carries a per-run prefix; `stop()` kills the
/// agent and removes the namespaces, wireguard-go and files (scripts/lib/netns.sh `netns_cleanup`).
final class OneNodeCluster {
    let prefix: String
    let directory: String
    let socket: String
    let logPath: String
    /// The token `init` printed.
    private(set) var firstToken = ""
    /// The agent (`ip netns exec` execs wiremesh in place: this is its pid).
    private var agent: pid_t?

    init() throws {
        prefix = "wmc" + String(format: "%06x", UInt32.random(in: 0...0xFFFFFF))
        directory = "/tmp/\(prefix)"
        socket = directory + "/wm.sock"
        logPath = directory + "/agent.log"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        do { try start() } catch {
            stop()
            throw error
        }
    }

    private func start() throws {
        let setup = try run(["bash", "-c", ". \"$1/scripts/lib/netns.sh\" && netns_underlay \"$2\" && netns_node \"$2\" 1",
                             "setup", packageRoot, prefix])
        guard setup.status == 0 else { throw CLITestError("namespace setup failed: \(setup)") }
        let environment = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WIREMESH_") }
        let pid = try spawn(["/usr/sbin/ip", "netns", "exec", "\(prefix)-n1", try wiremeshBinary(), "init",
                             "--state-dir", directory + "/state", "--control-socket", socket, "--interface", "\(prefix)w1",
                             "--advertise-address", "10.99.0.1", "--name", "n1", "--token-ttl", "1h",
                             "--cni-config-dir", directory + "/cni"],
                            environment: environment, stdout: directory + "/init.out", stderr: logPath)
        agent = pid
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if try wiremesh(["status"] + socketFlag).status == 0 {
                firstToken = (try? String(contentsOfFile: directory + "/init.out", encoding: .utf8))?
                    .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
                return
            }
            guard childIsRunning(pid) else {
                agent = nil
                break
            }
            usleep(200_000)
        }
        throw CLITestError("the agent did not become ready; its log:\n\(log)")
    }

    var socketFlag: [String] { ["--control-socket", socket] }

    /// Adds node `index`'s namespace on the underlay (10.99.0.INDEX), removed by `stop()` with the rest.
    func addNode(_ index: Int) throws {
        let r = try run(["bash", "-c", ". \"$1/scripts/lib/netns.sh\" && netns_node \"$2\" \"$3\"", "node", packageRoot, prefix, "\(index)"])
        guard r.status == 0 else { throw CLITestError("namespace of node \(index): \(r)") }
    }

    /// `wiremesh join ARGS --prepare-only` in node `index`'s namespace, as `name`, with its own state
    /// directory and interface.
    func prepareJoin(_ arguments: [String], node index: Int, name: String, stdin: String = "") throws -> CommandResult {
        try run(["/usr/sbin/ip", "netns", "exec", "\(prefix)-n\(index)", try wiremeshBinary(), "join"] + arguments
                + ["--name", name, "--state-dir", "\(directory)/\(name)", "--control-socket", "\(directory)/\(name).sock",
                   "--interface", "\(prefix)j\(index)", "--advertise-address", "10.99.0.\(index)", "--prepare-only"], stdin: stdin)
    }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Runs `wiremesh ARGS --control-socket SOCKET`.
    func cli(_ arguments: [String], stdin: String = "") throws -> CommandResult {
        try wiremesh(arguments + socketFlag, stdin: stdin)
    }

    func stop() {
        if let agent {
            kill(agent, SIGKILL)
            var status: Int32 = 0
            while waitpid(agent, &status, 0) < 0 && errno == EINTR {}
            self.agent = nil
        }
        _ = try? run(["bash", "-c", ". \"$1/scripts/lib/netns.sh\" && netns_cleanup \"$2\"", "cleanup", packageRoot, prefix])
        try? FileManager.default.removeItem(atPath: directory)
    }
}

private func missingPrerequisite() -> String? { missingNetnsPrerequisite(tools: ["wireguard-go", "ip"]) }

/// The column offsets of a table's header titles (each title's first character); nil when one is missing.
private func columnOffsets(_ header: String, titles: [String]) -> [Int]? {
    let offsets = titles.compactMap { header.range(of: $0)?.lowerBound.utf16Offset(in: header) }
    return offsets.count == titles.count ? offsets : nil
}

@Suite(.serialized) struct TokenCommandTests {
    @Test("token create/list/revoke against a one-node agent: output for scripts and people, no token echoed, exit codes")
    func anOperatorsTokenDay() throws {
        if let reason = missingPrerequisite() {
            print("TokenCommandTests skipped: \(reason)")
            return
        }
        let cluster = try OneNodeCluster()
        defer { cluster.stop() }

        // create: stdout is the token alone, stderr one line with id, expiry and uses.
        let created = try cluster.cli(["token", "create", "--ttl", "1h", "--uses", "2"])
        #expect(created.status == 0, "\(created)")
        let token = created.stdout.trimmingCharacters(in: .newlines)
        #expect(created.stdout == token + "\n" && token.hasPrefix(JoinToken.prefix), "\(created)")
        let id = try TokenReference.id(from: token)
        let info = created.stderr.split(separator: "\n")
        #expect(info.count == 1 && info[0].contains(id) && info[0].contains("2 uses") && info[0].contains("expires"), "\(created)")
        #expect(!created.stderr.contains(token))

        // create --json: the four fields; one use unless --uses says otherwise.
        let json = try cluster.cli(["token", "create", "--json"])
        #expect(json.status == 0 && json.stderr.isEmpty, "\(json)")
        // Checked without stopping here, so that the rest runs against any build.
        let object = (try? JSONSerialization.jsonObject(with: Data(json.stdout.utf8))) as? [String: Any] ?? [:]
        #expect(Set(object.keys) == ["token", "id", "expires_at", "uses_limit"], "\(json.stdout)")
        let jsonToken = object["token"] as? String ?? ""
        #expect(object["id"] as? String == (try? TokenReference.id(from: jsonToken)))
        #expect(object["uses_limit"] as? Int == 1, "a token is single-use by default: \(json.stdout)")
        #expect((object["expires_at"] as? String).flatMap { try? Date($0, strategy: .iso8601) } != nil, "\(json.stdout)")
        let limited = try cluster.cli(["token", "create", "--json", "--uses", "1"])
        #expect(limited.stdout.contains("\"uses_limit\" : 1"), "\(limited)")

        // list: a header, and every column starts where its title does.
        let list = try cluster.cli(["token", "list"])
        #expect(list.status == 0, "\(list)")
        let lines = list.stdout.split(separator: "\n").map(String.init)
        let titles = ["ID", "STATE", "EXPIRES", "USED", "ISSUED BY"]
        #expect(lines.first?.hasPrefix("ID ") == true, "\(list.stdout)")
        #expect(lines.count == 5, "a header, init's token and the three created: \(list.stdout)")
        if let header = lines.first, let offsets = columnOffsets(header, titles: titles) {
            for line in lines.dropFirst() {
                let cells = line.split(separator: " ", omittingEmptySubsequences: true)
                for (title, offset) in zip(titles, offsets).dropFirst() where offset < line.count {
                    let start = line.index(line.startIndex, offsetBy: offset)
                    #expect(line[line.index(before: start)] == " " && line[start] != " ", "column \(title) misaligned:\n\(list.stdout)")
                }
                #expect(cells.first.map(String.init).map { $0.count == TokenReference.idDigits } == true)
            }
        }
        #expect(lines.contains { $0.hasPrefix(id + " ") && $0.contains("0/2") && $0.contains("n1") }, "\(list.stdout)")

        // JSON never escapes slashes (pod CIDRs, paths).
        let status = try cluster.cli(["status", "--json"])
        #expect(status.status == 0 && status.stdout.contains("/") && !status.stdout.contains("\\/"), "\(status)")

        // revoke with the whole token: only the id goes to the agent and comes back.
        let revoked = try cluster.cli(["token", "revoke", token])
        #expect(revoked.status == 0, "\(revoked)")
        #expect(revoked.stdout.contains("token \(id) revoked"), "\(revoked)")
        let tokenBody = String(token.dropFirst(JoinToken.prefix.count))
        for text in [revoked.stdout, revoked.stderr] {
            #expect(!text.lowercased().contains(tokenBody.lowercased().prefix(16)), "the token is echoed: \(revoked)")
        }
        let afterRevoke = try cluster.cli(["token", "list", "--json"])
        let tokens = (try? JSONSerialization.jsonObject(with: Data(afterRevoke.stdout.utf8))) as? [[String: Any]] ?? []
        #expect(tokens.first { $0["id"] as? String == id }?["state"] as? String == "revoked", "\(afterRevoke.stdout)")

        // revoke - reads the token from stdin (out of the process list).
        let another = try cluster.cli(["token", "create"]).stdout
        let fromStdin = try cluster.cli(["token", "revoke", "-"], stdin: another)
        #expect(fromStdin.status == 0 && fromStdin.stdout.contains("revoked"), "\(fromStdin)")

        // An id nobody knows: named, exit 2 (bad input), not a "malformed request".
        let unknown = try cluster.cli(["token", "revoke", "FFFFFFFFFFFFFFFF"])
        #expect(unknown.status == 2, "\(unknown)")
        #expect(unknown.stderr == "wiremesh: no token with id ffffffffffffffff in this cluster: 'wiremesh token list' shows them\n",
                "\(unknown)")

        // Values the agent refuses are bad input (2); the CLI refuses --uses 0 itself.
        let tooLong = try cluster.cli(["token", "create", "--ttl", "100000d"])
        #expect(tooLong.status == 2 && tooLong.stderr.contains("token lifetime") && !tooLong.stderr.contains("malformed"), "\(tooLong)")
        let zeroUses = try cluster.cli(["token", "create", "--uses", "0"])
        #expect(zeroUses.status == 2 && zeroUses.stderr.contains("--uses must be 1-65535"), "\(zeroUses)")

        // cluster-key rotate on a lone node counts it: nobody else to wait for.
        let rotate = try cluster.cli(["cluster-key", "rotate"])
        #expect(rotate.status == 0 && rotate.stdout.contains("this node is the only live member"), "\(rotate)")

        // No token ever reaches the agent's log.
        let log = cluster.log
        for t in [token, jsonToken, cluster.firstToken] where !t.isEmpty {
            #expect(!log.contains(String(t.dropFirst(JoinToken.prefix.count).prefix(20))), "a token is in the agent log")
        }
    }

    @Test("join --token-file and -: the token from a file or stdin, single use by default, init's first token too")
    func joiningWithATokenFile() throws {
        if let reason = missingPrerequisite() {
            print("TokenCommandTests skipped: \(reason)")
            return
        }
        let cluster = try OneNodeCluster()
        defer { cluster.stop() }
        try cluster.addNode(2)
        // init said what its token is worth, on stderr (stdout is the token alone).
        #expect(cluster.log.contains("first join token ") && cluster.log.contains(", 1 use "), "\(cluster.log)")

        // init's first token, from a file only its owner reads: joined, no warning.
        let file = cluster.directory + "/first.token"
        #expect(FileManager.default.createFile(atPath: file, contents: Data((cluster.firstToken + "\n").utf8),
                                               attributes: [.posixPermissions: 0o600]))
        let first = try cluster.prepareJoin(["--token-file", file], node: 2, name: "j1")
        #expect(first.status == 0 && first.stdout.contains("as j1"), "\(first)")
        #expect(!first.stderr.contains("warning"), "\(first)")
        // It had one use: a second node with the same file is refused, saying so.
        let again = try cluster.prepareJoin(["--token-file", file], node: 2, name: "j2")
        #expect(again.status == 2 && again.stderr.contains("no uses left"), "\(again)")

        // token create without --uses: one node, read from standard input with --token-file -.
        let created = try cluster.cli(["token", "create", "--ttl", "10m"])
        #expect(created.stderr.contains("1 use;"), "\(created)")
        let piped = try cluster.prepareJoin(["--token-file", "-"], node: 2, name: "j3", stdin: created.stdout)
        #expect(piped.status == 0 && piped.stdout.contains("as j3"), "\(piped)")
        let reused = try cluster.prepareJoin(["-"], node: 2, name: "j4", stdin: created.stdout)
        #expect(reused.status == 2 && reused.stderr.contains("no uses left"), "\(reused)")

        // A file others may read still works, with a warning that names it (never its content).
        let shared = cluster.directory + "/shared.token"
        let two = try cluster.cli(["token", "create", "--uses", "2"]).stdout
        #expect(FileManager.default.createFile(atPath: shared, contents: Data(two.utf8), attributes: [.posixPermissions: 0o644]))
        let warned = try cluster.prepareJoin(["--token-file", shared], node: 2, name: "j5")
        #expect(warned.status == 0, "\(warned)")
        #expect(warned.stderr.contains("warning: token file \(shared) is readable by every local user (mode 0644)"), "\(warned)")
        let token = two.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(!warned.stderr.contains(String(token.dropFirst(JoinToken.prefix.count).prefix(12))), "\(warned)")
        #expect(try cluster.prepareJoin(["--token-file", shared], node: 2, name: "j6").status == 0, "--uses 2: a second node")
    }
}

/// `join`'s token input, refused before any check of the host or contact with a member.
@Suite struct JoinTokenInputTests {
    let secretish = "wmj3.ThisCouldBeAPastedSecret0123456789abcdefXYZ"

    @Test func exactlyOneOfTokenFileAndTokenIsRequired() throws {
        let none = try wiremesh(["join", "--state-dir", "/nonexistent/wm"])
        #expect(none.status == 2 && none.stderr.contains("no join token") && none.stderr.contains("--token-file"), "\(none)")
        let both = try wiremesh(["join", secretish, "--token-file", "/nonexistent/token", "--state-dir", "/nonexistent/wm"])
        #expect(both.status == 2 && both.stderr.contains("not both"), "\(both)")
        #expect(!both.stderr.contains(secretish) && !both.stdout.contains(secretish), "\(both)")
    }

    @Test func anUnreadableOrEmptyTokenFileIsNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("wm-token-input-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let state = ["--state-dir", dir + "/state"]

        let missing = try wiremesh(["join", "--token-file", dir + "/missing"] + state)
        #expect(missing.status == 2 && missing.stderr.contains("cannot read the token file \(dir)/missing: No such file or directory"), "\(missing)")
        let directory = try wiremesh(["join", "--token-file", dir] + state)
        #expect(directory.status == 2 && directory.stderr.contains("token file \(dir): it is a directory"), "\(directory)")
        FileManager.default.createFile(atPath: dir + "/empty", contents: Data("\n \n".utf8), attributes: [.posixPermissions: 0o600])
        let empty = try wiremesh(["join", "--token-file", dir + "/empty"] + state)
        #expect(empty.status == 2 && empty.stderr.contains("token file \(dir)/empty is empty"), "\(empty)")
        let noStdin = try wiremesh(["join", "--token-file", "-"] + state, stdin: "")
        #expect(noStdin.status == 2 && noStdin.stderr.contains("no token on standard input"), "\(noStdin)")

        // Group-readable and damaged: a warning, then the damage; the content is in neither.
        FileManager.default.createFile(atPath: dir + "/group", contents: Data((secretish + "\n").utf8), attributes: [.posixPermissions: 0o640])
        let group = try wiremesh(["join", "--token-file", dir + "/group"] + state)
        #expect(group.status == 2, "\(group)")
        #expect(group.stderr.contains("token file \(dir)/group is readable by its group (mode 0640)"), "\(group)")
        #expect(group.stderr.contains("garbled join token") || group.stderr.contains("damaged"), "\(group)")
        #expect(!group.stderr.contains("ThisCouldBe"), "\(group)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/state"), "nothing written")
    }

    @Test func theTokenArgumentsHelpPointsToTokenFile() throws {
        let help = try wiremesh(["join", "--help"]).stdout.replacingOccurrences(of: "\n", with: " ")
            .replacingOccurrences(of: #" +"#, with: " ", options: .regularExpression)
        #expect(help.contains("visible to every local user in the process list"), "\(help)")
        #expect(help.contains("prefer --token-file"), "\(help)")
        #expect(help.contains("--token-file <file>"), "\(help)")
        let create = try wiremesh(["token", "create", "--help"]).stdout.replacingOccurrences(of: "\n", with: " ")
            .replacingOccurrences(of: #" +"#, with: " ", options: .regularExpression)
        #expect(create.contains("One by default: a leaked token admits one node at most"), "\(create)")
    }
}
