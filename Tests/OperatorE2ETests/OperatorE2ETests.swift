import Foundation
import TestSupport
import Testing

/// The cases of scripts/e2e/operator.sh (issue 14, an operator's day), one test each.
enum OperatorCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case settingsKept = "settings-kept"
    case statusDir = "status-dir"
    case lock
    case unhealthy
    case foreignInterface = "foreign-interface"
    case rejoin
    case lateChecks = "late-checks"
    case joinPortFlood = "join-port-flood"
    case concurrentJoins = "concurrent-joins"

    var testDescription: String {
        switch self {
        case .settingsKept: return "settings given to join are kept by a plain 'wiremesh agent'; a new --interface moves the node and sticks"
        case .statusDir: return "status --state-dir finds that node's control socket"
        case .lock: return "a second agent on a running node's state directory is refused"
        case .unhealthy: return "a dead wireguard-go is replaced; a black-holed node: status exits 1 naming why, heals; a taken port stops the agent at start"
        case .foreignInterface: return "an interface wiremesh did not set up is refused untouched; --adopt-interface takes it over"
        case .rejoin: return "a rejoin after leave keeps the name, the block and the key"
        case .lateChecks: return "non-root, a veth, a taken gossip port, a foreign address: refused before state or token use"
        case .joinPortFlood: return "300 idle connections from one host cannot exhaust the join port; status and joins still work"
        case .concurrentJoins: return "joins admitted at once by one member get different blocks"
        }
    }
}

/// One run of the script per test process, shared by the cases.
actor OperatorRun {
    static let shared = OperatorRun()
    private var running: Task<[String: ScriptCase], Error>?

    func results() async throws -> [String: ScriptCase] {
        if let running { return try await running.value }
        let task = Task<[String: ScriptCase], Error> {
            let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/operator.sh", [])
            guard !cases.isEmpty else { throw ScriptError(status: status) }
            return cases
        }
        running = task
        return try await task.value
    }

    struct ScriptError: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "operator.sh printed no RESULT line (exit \(status)); its stderr is above" }
    }
}

@Suite(.serialized) struct OperatorE2ETests {
    @Test(arguments: OperatorCase.allCases) func operatorCase(_ c: OperatorCase) async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "jq", "python3", "setpriv"]) {
            print("OperatorE2ETests skipped: \(reason)")
            return
        }
        let result = try #require(try await OperatorRun.shared.results()[c.rawValue], "case \(c.rawValue) did not run")
        #expect(result.pass, "\(c.rawValue): \(result.detail)")
    }
}
