import Foundation
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// What a finished command printed and how it exited.
struct CommandResult: CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

struct CLITestError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The `wiremesh` binary under test: $WIREMESH_BIN, else the debug build.
func wiremeshBinary() throws -> String {
    let path = ProcessInfo.processInfo.environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw CLITestError("wiremesh binary not found at \(path): run 'swift build' first or set WIREMESH_BIN")
    }
    return path
}

/// Runs `argv` (argv[0] a path, or a name looked up in PATH) with `environment` (default: this
/// process's, without WIREMESH_* variables) and `stdin`, and waits for it.
func run(_ argv: [String], environment: [String: String]? = nil, stdin: String = "") throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    p.environment = environment ?? ProcessInfo.processInfo.environment.filter { !$0.key.hasPrefix("WIREMESH_") }
    let out = Pipe(), err = Pipe(), input = Pipe()
    p.standardOutput = out
    p.standardError = err
    p.standardInput = input
    try p.run()
    input.fileHandleForWriting.write(Data(stdin.utf8))
    try input.fileHandleForWriting.close()
    // stderr is read on another thread so that neither pipe can fill up and block the child.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    let errHandle = err.fileHandleForReading
    DispatchQueue.global().async(group: group) { errBox.data = errHandle.readDataToEndOfFile() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    group.wait()
    return CommandResult(status: p.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
                         stderr: String(decoding: errBox.data, as: UTF8.self))
}

/// Runs the wiremesh binary with `arguments`.
func wiremesh(_ arguments: [String], environment: [String: String]? = nil, stdin: String = "") throws -> CommandResult {
    try run([try wiremeshBinary()] + arguments, environment: environment, stdin: stdin)
}

/// One command of the CLI as argument-parser describes it (`wiremesh --experimental-dump-help`).
struct CommandNode: Decodable {
    struct Name: Decodable {
        var kind: String
        var name: String
    }

    struct Argument: Decodable {
        var kind: String
        var names: [Name]?
        var valueName: String?
        var abstract: String?
        var shouldDisplay: Bool

        /// The `--long` names (without dashes).
        var longNames: [String] { (names ?? []).filter { $0.kind == "long" }.map(\.name) }
    }

    var commandName: String
    var abstract: String?
    var arguments: [Argument]?
    var subcommands: [CommandNode]?

    /// Every command under this one (itself first) with its path of names.
    func walk(_ path: [String] = []) -> [(path: [String], node: CommandNode)] {
        let here = path + [commandName]
        return [(here, self)] + (subcommands ?? []).flatMap { $0.walk(here) }
    }

    func subcommand(_ name: String) -> CommandNode? { subcommands?.first { $0.commandName == name } }

    /// The long option names this command accepts (argument-parser's -h/--help left out).
    var options: Set<String> {
        Set((arguments ?? []).filter { $0.kind != "positional" }.flatMap(\.longNames)).subtracting(["help"])
    }
}

/// The command tree of the binary under test.
func commandTree() throws -> CommandNode {
    let r = try wiremesh(["--experimental-dump-help"])
    guard r.status == 0 else { throw CLITestError("--experimental-dump-help failed: \(r)") }
    struct ToolInfo: Decodable { var command: CommandNode }
    return try JSONDecoder().decode(ToolInfo.self, from: Data(r.stdout.utf8)).command
}


/// True while `pid` (a child of this process) has not exited; reaps it once it has.
func childIsRunning(_ pid: pid_t) -> Bool {
    var status: Int32 = 0
    return waitpid(pid, &status, WNOHANG) == 0
}
