import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The cases agent-e2e.sh reports, one `RESULT {"case", "pass", "detail"}` line each.
enum AgentE2ECase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case mesh, capture, kill9, restart, stop, leave, crash
    case returning = "return"
    case tokenAnyMember = "token-any-member"
    case badTokenRevokedElsewhere = "bad-token-revoked-elsewhere"
    case badRevokedToken = "bad-revoked-token"
    case badOtherClusterToken = "bad-other-cluster-token"
    case badGarbledToken = "bad-garbled-token"
    case badSecondInit = "bad-second-init"
    case badPodCIDR = "bad-pod-cidr"
    case badPortInUse = "bad-port-in-use"
    case badExpiredToken = "bad-expired-token"

    var testDescription: String {
        switch self {
        case .mesh: return "4 nodes (init + token + 3 joins): every pod pings every other pod"
        case .capture: return "underlay capture during the pings: no pod ICMP, only WireGuard/gossip UDP"
        case .kill9: return "kill -9 of an agent: pods to and from its node still ping while it is down"
        case .restart: return "agent restart without a token rejoins: every peer sees it alive, pings work"
        case .stop: return "stopping an agent (SIGTERM) is not a leave: peers keep it, pings work, restart rejoins"
        case .returning: return "a node declared dead that comes back: its pod's first packets flow (peers start a handshake)"
        case .tokenAnyMember: return "only authorities mint tokens; a second authority (a copy of authority.key) admits while node 1 is stopped"
        case .badTokenRevokedElsewhere: return "a token revoked on one member is refused by another member"
        case .leave: return "wiremesh leave: node gone from every peer; interface, wireguard-go, routes removed; restart refused until a new join"
        case .crash: return "crashed node removed once dead and silent on WireGuard for 30 s; traffic to its pod range dropped, not in clear"
        case .badRevokedToken: return "join with a revoked token is refused"
        case .badOtherClusterToken: return "join with another cluster's token is refused"
        case .badGarbledToken: return "join with a garbled token is refused"
        case .badSecondInit: return "a second init over an existing state directory is refused"
        case .badPodCIDR: return "a pod CIDR outside the cluster range is refused (join and init)"
        case .badPortInUse: return "init/join with the gossip port in use are refused before writing state"
        case .badExpiredToken: return "join with an expired token is refused"
        }
    }
}

/// What one run of the script reported.
struct AgentE2EReport: Sendable {
    /// case name → what the script reported
    var results: [String: ScriptCase] = [:]
    var exitStatus: Int32 = -1
    var stdout = ""
    var stderr = ""
    var logDirectory = ""

    /// Every case reported: the script ran to its end.
    var finished: Bool { AgentE2ECase.allCases.allSatisfy { results[$0.rawValue] != nil } }

    /// The transcript the script wrote for `name`, for failure messages.
    func transcript(_ name: String) -> String {
        (try? String(contentsOfFile: logDirectory + "/" + name + ".log", encoding: .utf8)) ?? "(no transcript)"
    }
}

/// Runs Tests/AgentE2ETests/agent-e2e.sh once per test process; every case awaits the same run.
actor AgentE2ERun {
    static let shared = AgentE2ERun()
    private var running: Task<AgentE2EReport, Never>?

    func report() async -> AgentE2EReport {
        if let running { return await running.value }
        let task = Task<AgentE2EReport, Never> {
            // The script takes minutes: wait on a Dispatch thread, not on the cooperative pool.
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: Self.runScript()) }
            }
        }
        running = task
        return await task.value
    }

    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    static func runScript() -> AgentE2EReport {
        var report = AgentE2EReport()
        let scratch = FileManager.default.temporaryDirectory.path + "/wme-swift-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        report.logDirectory = scratch + "/logs"
        do {
            try FileManager.default.createDirectory(atPath: report.logDirectory, withIntermediateDirectories: true)
            let outPath = scratch + "/stdout", errPath = scratch + "/stderr"
            var environment = ProcessInfo.processInfo.environment
            environment["WIREMESH"] = environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
            environment["E2E_LOGDIR"] = report.logDirectory
            // Files, not pipes: nothing can block on a full pipe, and the output survives for reading.
            report.exitStatus = try spawnAndWait(
                ["/bin/bash", packageRoot + "/Tests/AgentE2ETests/agent-e2e.sh"],
                environment: environment, stdout: outPath, stderr: errPath)
            report.stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
            report.stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        } catch {
            report.stderr = "could not run agent-e2e.sh: \(error)"
        }
        report.results = resultCases(in: report.stdout)
        // Logs are kept for a failed run only (the failure messages name the directory).
        if report.finished && report.results.values.allSatisfy(\.pass) {
            try? FileManager.default.removeItem(atPath: scratch)
        }
        return report
    }
}

@Suite("Agent host e2e: 4 nodes in network namespaces with wireguard-go (agent-e2e.sh)",
       .enabled(if: geteuid() == 0, "needs root: creates network namespaces and TUN devices"))
struct AgentE2ETests {
    @Test("the script ran every case to the end")
    func scriptFinished() async {
        let report = await AgentE2ERun.shared.report()
        #expect(report.finished, "agent-e2e.sh stopped early (exit \(report.exitStatus)):\n\(report.stdout)\n\(report.stderr)")
        if let setup = report.results["setup"] {
            Issue.record("setup failed: \(setup.detail)")
        }
        let unknown = Set(report.results.keys).subtracting(AgentE2ECase.allCases.map(\.rawValue))
        #expect(unknown.isEmpty, "cases the suite does not know: \(unknown.sorted())")
    }

    @Test(arguments: AgentE2ECase.allCases)
    func agentCase(_ c: AgentE2ECase) async throws {
        let report = await AgentE2ERun.shared.report()
        let result = try #require(report.results[c.rawValue],
                                  "agent-e2e.sh reported nothing for '\(c.rawValue)':\n\(report.stdout)\n\(report.stderr)")
        #expect(result.pass, "\(c.rawValue): \(result.detail)\n--- transcript (agent logs in \(report.logDirectory))\n\(report.transcript(c.rawValue))")
    }
}
