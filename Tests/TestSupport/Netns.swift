import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The package root (this file is Tests/TestSupport/Netns.swift).
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// Why this host cannot run a network-namespace e2e suite that needs `tools`, or nil when it can:
/// root (namespaces need CAP_SYS_ADMIN), a built `wiremesh` ($WIREMESH_BIN or the debug build), and
/// each tool installed (scripts/setup installs them).
public func missingNetnsPrerequisite(tools: [String]) -> String? {
    if geteuid() != 0 { return "not root: network namespaces need CAP_SYS_ADMIN" }
    let binary = ProcessInfo.processInfo.environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
    if !FileManager.default.isExecutableFile(atPath: binary) { return "\(binary) not built: run 'swift build' first" }
    for tool in tools where !["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"]
        .contains(where: { FileManager.default.isExecutableFile(atPath: $0 + tool) }) {
        return "'\(tool)' is not installed: run scripts/setup"
    }
    return nil
}

/// Runs an e2e script (stderr passes through) on a thread of its own, prints its stdout, and returns
/// the JSON after its last "RESULT " line (nil when it printed none) with its exit status.
public func runResultScript(_ path: String, _ arguments: [String]) async throws -> (result: Data?, status: Int32) {
    let (text, status) = try await runScript(path, arguments)
    let line = text.split(separator: "\n").last { $0.hasPrefix("RESULT ") }
    return (line.map { Data($0.dropFirst("RESULT ".count).utf8) }, status)
}

/// Runs a script (stderr passes through) on a thread of its own, prints its stdout and returns it with the exit status.
private func runScript(_ path: String, _ arguments: [String]) async throws -> (stdout: String, status: Int32) {
    let (text, status) = try await onThread { () throws -> (String, Int32) in
        var template = Array("/tmp/wm-result-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw SpawnError(description: "mkstemp: \(String(cString: strerror(errno)))") }
        close(fd)
        let out = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        defer { unlink(out) }
        let status = try spawnAndWait([path] + arguments, stdout: out, stderr: nil)
        return ((try? String(contentsOfFile: out, encoding: .utf8)) ?? "", status)
    }
    print(text)
    return (text, status)
}

/// One case an e2e script reported on a `RESULT {"case": …, "pass": …, "detail": …, …}` line
/// (scripts/lib/harness.sh `result`); `json` is the whole object, for the case's own keys.
public struct ScriptCase: Sendable {
    public var name: String
    public var pass: Bool
    public var detail: String
    public var json: Data
}

/// The cases of a script's output by name (a later line of the same case wins); lines that are not
/// RESULT lines, or not of that shape, are skipped.
public func resultCases(in text: String) -> [String: ScriptCase] {
    struct Head: Decodable { var `case`: String; var pass: Bool; var detail: String }
    var cases: [String: ScriptCase] = [:]
    for line in text.split(separator: "\n") where line.hasPrefix("RESULT ") {
        let json = Data(line.dropFirst("RESULT ".count).utf8)
        guard let head = try? JSONDecoder().decode(Head.self, from: json) else { continue }
        cases[head.case] = ScriptCase(name: head.case, pass: head.pass, detail: head.detail, json: json)
    }
    return cases
}

/// Runs an e2e script that reports several cases (as `runResultScript`); its cases by name and exit status.
public func runResultCases(_ path: String, _ arguments: [String]) async throws -> (cases: [String: ScriptCase], status: Int32) {
    let (text, status) = try await runScript(path, arguments)
    return (resultCases(in: text), status)
}
