import Foundation
import Testing
import WireMeshAgent

@Suite("CLI: version, help texts, exit codes, environment")
struct HelpAndExitTests {
    @Test func versionPrintsTheVersionConstant() throws {
        let r = try wiremesh(["--version"])
        #expect(r.status == 0)
        #expect(r.stdout == WireMeshVersion.current + "\n", "\(r)")
    }

    @Test func everyArgumentOfEveryCommandHasHelp() throws {
        // argument-parser's own `help` command is not ours to document.
        for (path, node) in try commandTree().walk() where path.last != "help" {
            #expect(!(node.abstract ?? "").isEmpty, "\(path.joined(separator: " ")) has no abstract")
            for argument in node.arguments ?? [] where argument.shouldDisplay {
                let name = argument.longNames.first.map { "--" + $0 } ?? "<\(argument.valueName ?? "?")>"
                #expect(!(argument.abstract ?? "").isEmpty, "\(path.joined(separator: " ")) \(name) has no help text")
            }
        }
    }

    @Test func defaultsAreWrittenOneWay() throws {
        // argument-parser writes "(default: X)"; hand-written help must not say "(default X)".
        for (path, _) in try commandTree().walk() where path.count > 1 {
            let r = try wiremesh(Array(path.dropFirst()) + ["--help"])
            #expect(r.status == 0, "\(path): \(r)")
            let text = r.stdout.replacingOccurrences(of: "\n", with: " ")
            #expect(text.firstMatch(of: /\(default [^:]/) == nil, "\(path.joined(separator: " ")): \(r.stdout)")
        }
    }

    @Test func topLevelHelpListsEverySettingWithFlagAndVariable() throws {
        let help = try wiremesh(["--help"]).stdout
        let tree = try commandTree()
        for key in ConfigKey.allCases {
            #expect(help.contains("\(key.flag) ") && help.contains(key.environmentVariable), "\(key.rawValue) missing from --help")
            // The settings the agent reads can be given on the commands that start it.
            for command in ["init", "join", "agent"] {
                #expect(tree.subcommand(command)?.options.contains(key.rawValue) == true, "\(command) has no \(key.flag)")
            }
        }
    }

    @Test(arguments: [["token", "revoke"], ["status", "--no-such-flag"], ["token", "create", "--uses", "many"], ["no-such-command"]])
    func usageErrorsExit2(arguments: [String]) throws {
        let r = try wiremesh(arguments + ["--control-socket", "/nonexistent/wm.sock"])
        #expect(r.status == 2, "\(r)")
        #expect(r.stdout.isEmpty)
    }

    @Test func badTokenValuesExit2BeforeAskingTheAgent() throws {
        // No agent at the socket: these must fail on the input (2), not on the missing agent (1).
        let socket = ["--control-socket", "/nonexistent/wm.sock"]
        let uses = try wiremesh(["token", "create", "--uses", "0"] + socket)
        #expect(uses.status == 2 && uses.stderr.contains("--uses must be 1-65535"), "\(uses)")
        let ttl = try wiremesh(["token", "create", "--ttl", "0s"] + socket)
        #expect(ttl.status == 2 && ttl.stderr.contains("--ttl"), "\(ttl)")
        let secretish = "ThisCouldBeAPastedSecret-0123456789abcdefXYZ"
        let revoke = try wiremesh(["token", "revoke", secretish] + socket)
        #expect(revoke.status == 2, "\(revoke)")
        #expect(!revoke.stderr.contains(secretish) && revoke.stderr.contains("16 hex digits"), "\(revoke)")
        let damaged = try wiremesh(["token", "revoke", "wmj3.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] + socket)
        #expect(damaged.status == 2 && damaged.stderr.contains("damaged") && !damaged.stderr.contains("AAAAAAAA"), "\(damaged)")
        // A well-formed id reaches the socket: the missing agent is an operational failure.
        let id = try wiremesh(["token", "revoke", "00112233AABBCCDD"] + socket)
        #expect(id.status == 1 && id.stderr.contains("agent is not running"), "\(id)")
    }

    @Test func unknownWiremeshVariablesWarnAndTheCommandGoesOn() throws {
        var env = ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WIREMESH_") }
        env["WIREMESH_GOSIP_PORT"] = "value-not-shown"
        env["WIREMESH_CONTROL_SOCKET"] = "/nonexistent/wm.sock"  // a known one still applies
        let r = try wiremesh(["status"], environment: env)
        #expect(r.status == 1, "\(r)")
        let lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "\(r)")
        #expect(lines.first?.contains("WIREMESH_GOSIP_PORT") == true && lines.first?.contains("WIREMESH_GOSSIP_PORT") == true, "\(r)")
        #expect(!r.stderr.contains("value-not-shown"))
        #expect(lines.last?.contains("no socket at /nonexistent/wm.sock") == true, "\(r)")
    }
}
