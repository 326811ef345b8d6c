import Foundation
import TestSupport
import Testing

/// The cases of scripts/e2e/evict.sh (issue 10: `wiremesh evict`), one test each.
enum EvictCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case peerRemoved = "peer-removed"
    case listedEvicted = "listed-evicted"
    case honestTraffic = "honest-traffic"
    case oldKeyRetired = "old-key-retired"
    case restartNoPeer = "restart-no-peer"
    case oldKeyClosed = "old-key-closed"
    case oldTokenRefused = "old-token-refused"
    case memberTokenRefused = "member-token-refused"
    case rejoinRefused = "rejoin-refused"
    case secondAuthority = "second-authority"

    var testDescription: String {
        switch self {
        case .peerRemoved: return "evict node4 on the authority: its WireGuard peer is gone from nodes 1-3 (wg show) within 10 s"
        case .listedEvicted: return "'wiremesh peers' on every member lists node4 as evicted"
        case .honestTraffic: return "pods and overlay addresses of the other nodes still reach each other"
        case .oldKeyRetired: return "the eviction rotated the cluster key: nodes 1-3 hold only a key node 4 never got"
        case .restartNoPeer: return "node 4's agent restarted with its full state gets no peer anywhere and no handshake"
        case .oldKeyClosed: return "the cluster key node 4 holds no longer opens gossip: members drop its datagrams as bad_key"
        case .oldTokenRefused: return "a token created before the eviction admits nobody"
        case .memberTokenRefused: return "token create on a member without the authority key fails, saying so"
        case .rejoinRefused: return "node 4 cannot join again with its old identity (after leave, with a new token, any name)"
        case .secondAuthority: return "a copy of authority.key (0600) makes node 2 an authority: its token admits node 5"
        }
    }
}

/// One run of the script per test process, shared by the cases.
actor EvictRun {
    static let shared = EvictRun()
    private var running: Task<[String: ScriptCase], Error>?

    func results() async throws -> [String: ScriptCase] {
        if let running { return try await running.value }
        let task = Task<[String: ScriptCase], Error> {
            let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/evict.sh", [])
            guard !cases.isEmpty else { throw ScriptError(status: status) }
            return cases
        }
        running = task
        return try await task.value
    }

    struct ScriptError: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "evict.sh printed no RESULT line (exit \(status)); its stderr is above" }
    }
}

@Suite(.serialized) struct EvictE2ETests {
    @Test(arguments: EvictCase.allCases) func evictCase(_ c: EvictCase) async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "jq", "python3"]) {
            print("EvictE2ETests skipped: \(reason)")
            return
        }
        let cases = try await EvictRun.shared.results()
        // A setup failure is reported as its own case; every other case then did not run.
        if let setup = cases["setup"] { Issue.record("setup failed: \(setup.detail)") }
        let result = try #require(cases[c.rawValue], "case \(c.rawValue) did not run")
        #expect(result.pass, "\(c.rawValue): \(result.detail)")
    }
}
