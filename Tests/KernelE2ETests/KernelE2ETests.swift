import Foundation
import TestSupport
import Testing

// Real-kernel WireGuard end-to-end tests. The host kernel has no WireGuard, so these boot the Debian
// kernel under qemu (vm/kernel-e2e) ONCE per test process; inside the VM a shell script drives the
// project binary (`wiremesh link|device|route`) and checks the result with the reference tools
// (`wg show dump`, `ip`). Each case prints `WMTEST NAME PASS|FAIL detail` plus its output between
// markers; every @Test below asserts one case and shows that case's output when it fails.

/// One case's outcome as printed on the VM's serial console.
struct VMCase: Sendable {
    let name: String
    let passed: Bool
    let detail: String
    let output: String
}

/// The whole VM run: the cases by name and the console text (for diagnostics).
struct VMRun: Sendable {
    let cases: [String: VMCase]
    let console: String
    let finished: Bool
    let problem: String?

    /// The console's last `lines` lines, to show why a case is missing.
    func tail(_ lines: Int = 60) -> String {
        console.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}

/// Parses the console protocol of vm/guest/lib.sh (`WMTEST-BEGIN`, `WMTEST-END`, `WMTEST NAME STATUS detail`).
func parseConsole(_ console: String) -> [String: VMCase] {
    var cases: [String: VMCase] = [:]
    var outputs: [String: [Substring]] = [:]
    var current: String?
    for line in console.split(separator: "\n", omittingEmptySubsequences: false) {
        if line.hasPrefix("WMTEST-BEGIN ") {
            current = String(line.dropFirst("WMTEST-BEGIN ".count))
            outputs[current!] = []
        } else if line.hasPrefix("WMTEST-END ") {
            current = nil
        } else if let name = current {
            outputs[name, default: []].append(line)
        } else if line.hasPrefix("WMTEST ") {
            let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count >= 3 else { continue }
            let name = String(parts[1])
            cases[name] = VMCase(
                name: name, passed: parts[2] == "PASS", detail: parts.count > 3 ? String(parts[3]) : "",
                output: (outputs[name] ?? []).joined(separator: "\n"))
        }
    }
    return cases
}

/// Boots the VM once per process and hands every test the same result.
enum KernelVM {
    // The boot blocks for minutes: on a thread of its own, not on the cooperative pool.
    static let run: Task<VMRun, Never> = Task { try! await onThread { boot() } }

    /// The repository root, found from this file's path (Tests/KernelE2ETests/<file>).
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// The `wiremesh` binary under test: $WIREMESH_BIN, else the one of this build, which sits next to
    /// the test bundle in .build/<triple>/<config>/.
    static func projectBinary() -> String? {
        if let path = ProcessInfo.processInfo.environment["WIREMESH_BIN"] {
            return FileManager.default.isExecutableFile(atPath: path) ? path : nil
        }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // The test bundle may be a directory (…/wiremeshPackageTests.xctest/…); walk up to .build/<triple>/<config>.
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("wiremesh").path
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate, isDirectory: &isDir), !isDir.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
            dir.deleteLastPathComponent()
        }
        let fallback = repository.appendingPathComponent(".build/debug/wiremesh").path
        return FileManager.default.isExecutableFile(atPath: fallback) ? fallback : nil
    }

    static func boot() -> VMRun {
        guard let binary = projectBinary() else {
            return VMRun(
                cases: [:], console: "", finished: false,
                problem: "the wiremesh binary was not found next to the tests (or at $WIREMESH_BIN): run 'swift build' before 'swift test'")
        }
        let script = repository.appendingPathComponent("vm/kernel-e2e").path
        let log = FileManager.default.temporaryDirectory
            .appendingPathComponent("wiremesh-kernel-e2e-\(getpid()).log")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script, "--binary", binary, "--log", log.path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        let errors = Pipe()
        process.standardError = errors
        do {
            try process.run()
        } catch {
            return VMRun(cases: [:], console: "", finished: false, problem: "cannot start \(script): \(error)")
        }
        let stderrText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let console = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: log)
        let finished = console.contains("WMTEST-DONE")
        var problem: String?
        if !finished {
            problem = "the VM did not finish its script (vm/kernel-e2e exit \(process.terminationStatus)): \(stderrText)"
        }
        return VMRun(cases: parseConsole(console), console: console, finished: finished, problem: problem)
    }

    /// The named case from the single VM run; fails the calling test when the VM or the case is missing.
    static func result(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> VMCase {
        let run = await run.value
        if let problem = run.problem {
            Issue.record("\(problem)\nconsole tail:\n\(run.tail())", sourceLocation: sourceLocation)
        }
        return try #require(
            run.cases[name], "case \(name) printed no result line; console tail:\n\(run.tail())",
            sourceLocation: sourceLocation)
    }
}

@Suite("Kernel WireGuard under qemu", .timeLimit(.minutes(10)))
struct KernelE2ETests {
    private func check(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let c = try await KernelVM.result(name, sourceLocation: sourceLocation)
        #expect(c.passed, "VM case \(name) failed: \(c.detail)\n--- case output ---\n\(c.output)", sourceLocation: sourceLocation)
    }

    @Test("without the module, 'wiremesh link add' fails with a one-line 'no WireGuard' error and creates nothing")
    func noModule() async throws { try await check("no_module") }

    @Test("two netns: links by rtnetlink, config by genetlink, routes; wg show dump is exact; they ping over v4 and v6")
    func twoNamespaces() async throws { try await check("two_netns") }

    @Test("'wiremesh route list' shows exactly the project's tagged routes")
    func routeList() async throws { try await check("route_list") }

    @Test("1000 peers x 3 allowed IPs (chunked both ways, IPv6 endpoints): wg dump == wiremesh dump == config")
    func bigDevice() async throws { try await check("big_device") }

    @Test("removing one peer by delta leaves the other 999 intact and sends a few bytes")
    func deltaRemove() async throws { try await check("delta_remove") }

    @Test("3 agents on kernel WireGuard: init, token, join; every node pings the others through the mesh")
    func agentMesh() async throws { try await check("agent_mesh") }

    @Test("rotate-key on kernel WireGuard under 200 pps pings both ways and a TCP stream: the stream completes, every peer holds only the new key")
    func rotation() async throws {
        try await check("rotation")
        // The loss is reported, not judged (the benchmark does that): print the case's result line.
        let c = try await KernelVM.result("rotation")
        for line in c.output.split(separator: "\n") where line.hasPrefix("ROTATION ") || line.hasPrefix("lost per flow") {
            print("kernel rotation: \(line)")
        }
    }

    @Test("3 pods made by calling the CNI plugins with each agent's conflist as a runtime does (ADD, then DEL): addresses from the node's block (IPv4 and IPv6: the cluster is dual-stack), pod-to-pod by own address over kernel WireGuard in both families, a published port (portmap), DEL frees the address")
    func cni() async throws { try await check("cni") }

    @Test("the VM ran every case to the end")
    func finished() async throws {
        let run = await KernelVM.run.value
        #expect(run.finished, "\(run.problem ?? "")\nconsole tail:\n\(run.tail())")
        #expect(Set(run.cases.keys) == ["no_module", "two_netns", "route_list", "big_device", "delta_remove", "agent_mesh", "rotation", "cni"])
    }
}

@Suite("VM console protocol parser")
struct ConsoleParserTests {
    @Test("a passing and a failing case with output and interleaved kernel lines")
    func parsesCases() {
        let console = """
            WMTEST-BOOTED kernel=6.1.0 nproc=1
            WMTEST-BEGIN a
            line 1
            WMTEST-END a
            WMTEST a PASS all good
            [   1.0] some kernel line
            WMTEST-BEGIN b
            FAIL: broken thing
            WMTEST-END b
            WMTEST b FAIL broken thing
            WMTEST-DONE rc=0
            """
        let cases = parseConsole(console)
        #expect(cases.count == 2)
        #expect(cases["a"]?.passed == true)
        #expect(cases["a"]?.detail == "all good")
        #expect(cases["a"]?.output == "line 1")
        #expect(cases["b"]?.passed == false)
        #expect(cases["b"]?.output == "FAIL: broken thing")
    }
}
