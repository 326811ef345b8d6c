import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The cases scripts/e2e/netns-lib.sh reports for scripts/lib/netns.sh (the topology under
/// scripts/lib/harness.sh, the e2e scripts' and `bench join`'s harness, and the demo's).
enum NetnsLibraryCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case source, topology, badInput = "bad-input", wgGoPids = "wg-go-pids", cleanup, trap

    var testDescription: String {
        switch self {
        case .source: return "sourcing netns.sh or harness.sh under set -euo pipefail defines functions only"
        case .topology: return "underlay, nodes and pods: pods ping across nodes"
        case .badInput: return "bad prefix, index or pod address: refused with the value named, nothing created"
        case .wgGoPids: return "wireguard-go pids by exact command line (w1 is not w11)"
        case .cleanup: return "cleanup removes the run's namespaces, processes, sockets; another run's stay"
        case .trap: return "cleanup from netns_trap after a failing command, after TERM, and when TERM comes during the cleanup"
        }
    }
}

/// What one run of the script printed.
struct NetnsLibraryReport: Sendable {
    var exitStatus: Int32 = -1
    var stdout = ""
    var stderr = ""
}

/// One run of the script per test process; every case reads its line. Spawned like agent-e2e.sh
/// (`spawnAndWait`: no blocked signals), since one case sends TERM to a script.
actor NetnsLibraryRun {
    static let shared = NetnsLibraryRun()
    private var running: Task<NetnsLibraryReport, Never>?

    func report() async -> NetnsLibraryReport {
        if let running { return await running.value }
        let task = Task<NetnsLibraryReport, Never> {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: Self.runScript()) }
            }
        }
        running = task
        return await task.value
    }

    static func runScript() -> NetnsLibraryReport {
        var report = NetnsLibraryReport()
        let scratch = FileManager.default.temporaryDirectory.path + "/wml-swift-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let outPath = scratch + ".out", errPath = scratch + ".err"
        defer { try? FileManager.default.removeItem(atPath: outPath); try? FileManager.default.removeItem(atPath: errPath) }
        do {
            report.exitStatus = try spawnAndWait(
                ["/bin/bash", AgentE2ERun.packageRoot + "/scripts/e2e/netns-lib.sh"],
                environment: ProcessInfo.processInfo.environment, stdout: outPath, stderr: errPath)
            report.stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            report.stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        } catch {
            report.stderr = "could not run netns-lib.sh: \(error)"
        }
        return report
    }
}

@Suite(.enabled(if: geteuid() == 0, "needs root: creates network namespaces"))
struct NetnsLibraryTests {
    @Test(arguments: NetnsLibraryCase.allCases)
    func netnsLibrary(_ c: NetnsLibraryCase) async throws {
        let r = await NetnsLibraryRun.shared.report()
        let found = try #require(resultCases(in: r.stdout)[c.rawValue],
                                 "no RESULT line for \(c.rawValue) (exit \(r.exitStatus)):\n\(r.stdout)\n\(r.stderr)")
        #expect(found.pass, "\(c.rawValue): \(found.detail)\n\(r.stderr)")
    }
}
