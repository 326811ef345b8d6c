import Foundation
import Testing

/// The cases scripts/e2e/netns-lib.sh reports for scripts/lib/netns.sh, the shared harness library of
/// the demo, the agent and cluster-key e2e scripts and `bench join`.
enum NetnsLibraryCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case source, topology, badInput = "bad-input", wgGoPids = "wg-go-pids", cleanup, trap

    var testDescription: String {
        switch self {
        case .source: return "sourcing under set -euo pipefail defines functions only"
        case .topology: return "underlay, nodes and pods: pods ping across nodes"
        case .badInput: return "bad prefix, index or pod address: refused with the value named, nothing created"
        case .wgGoPids: return "wireguard-go pids by exact command line (w1 is not w11)"
        case .cleanup: return "cleanup removes the run's namespaces, processes, sockets; another run's stay"
        case .trap: return "cleanup from netns_trap after a failing command and after TERM"
        }
    }
}

/// One run of the script per test process; every case reads its line.
actor NetnsLibraryRun {
    static let shared = NetnsLibraryRun()
    private var output: CommandResult?

    func result() throws -> CommandResult {
        if let output { return output }
        let r = try run([packageRoot + "/scripts/e2e/netns-lib.sh"])
        output = r
        return r
    }
}

@Suite(.enabled(if: runningAsRoot, "needs root: creates network namespaces"))
struct NetnsLibraryTests {
    @Test(arguments: NetnsLibraryCase.allCases)
    func netnsLibrary(_ c: NetnsLibraryCase) async throws {
        let r = try await NetnsLibraryRun.shared.result()
        let line = r.stdout.split(separator: "\n").first { $0.hasPrefix("NETNS \(c.rawValue) ") }
        let found = try #require(line, "no line for \(c.rawValue) (exit \(r.status)):\n\(r.stdout)\n\(r.stderr)")
        #expect(found.hasPrefix("NETNS \(c.rawValue) PASS"), "\(found)\n\(r.stderr)")
    }
}
