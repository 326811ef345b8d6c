import Foundation
import TestSupport
import Testing

/// The cases of scripts/e2e/hostile.sh (issue 10: a member's stolen secrets against real agents), one test each.
enum HostileCase: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case claimBlock = "claim-block"
    case outsideRange = "outside-range"
    case forgedCertificate = "forged-certificate"
    case maxNumbers = "max-numbers"
    case revocationSerial = "revocation-serial"
    case keyGeneration = "key-generation"
    case forgedLiveness = "forged-liveness"
    case replay
    case memberFlood = "member-flood"
    case mintToken = "mint-token"
    case keyringAfterEviction = "keyring-after-eviction"
    case oldKeyClosed = "old-key-closed"
    case stranger
    case allowedIPsStable = "allowed-ips-stable"
    case pingContinuity = "ping-continuity"
    case agentsUp = "agents-up"

    var testDescription: String {
        switch self {
        case .claimBlock: return "another node's block claimed (new identity and old version, its name, the member's own identity): refused, counted untrusted"
        case .outsideRange: return "prefixes outside the cluster range (a /17, the underlay, 0.0.0.0/0, IPv6 blocks in an IPv4 cluster): refused, counted"
        case .forgedCertificate: return "certificates the member forged (own key, cluster key, another's re-used): refused, counted"
        case .maxNumbers: return "versions, incarnations and sequence numbers at their maximum: no agent stops, the victim refutes"
        case .keyGeneration: return "a cluster key of generation 2^64 - 1 advertised and handed over: nobody installs it, rotation still works"
        case .revocationSerial: return "a revocation serial the member does not hold, re-announced every second: asked at most 3 times in 30 s, warned"
        case .forgedLiveness: return "forged suspect/dead claims about a healthy node: never declared dead, its peer never removed"
        case .replay: return "captured gossip datagrams sent again: dropped as replays"
        case .memberFlood: return "3000 fake members: none enters a view, all counted"
        case .mintToken: return "tokens minted from every secret the member holds: no join port admits, wiremesh join refused"
        case .keyringAfterEviction: return "the evicted member asks for the keyring: refused (evicted) everywhere"
        case .oldKeyClosed: return "after the old cluster key is retired the member's gossip opens nowhere (bad_key)"
        case .stranger: return "a stranger without the cluster key gets nothing; the join port tells it nothing, not even which names exist"
        case .allowedIPsStable: return "allowed IPs on honest nodes never moved to the attacker (wg show, sampled every 0.5 s)"
        case .pingContinuity: return "pings between honest pods and overlay addresses never stopped for more than 2 s"
        case .agentsUp: return "every honest agent ran throughout and answers status"
        }
    }
}

/// One run of the script per test process, shared by the cases.
actor HostileRun {
    static let shared = HostileRun()
    private var running: Task<[String: ScriptCase], Error>?

    func results() async throws -> [String: ScriptCase] {
        if let running { return try await running.value }
        let task = Task<[String: ScriptCase], Error> {
            let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/hostile.sh", [])
            guard !cases.isEmpty else { throw ScriptError(status: status) }
            return cases
        }
        running = task
        return try await task.value
    }

    struct ScriptError: Error, CustomStringConvertible {
        var status: Int32
        var description: String { "hostile.sh printed no RESULT line (exit \(status)); its stderr is above" }
    }
}

@Suite(.serialized) struct HostileE2ETests {
    @Test(arguments: HostileCase.allCases) func hostileCase(_ c: HostileCase) async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "jq", "python3", "tcpdump"]) {
            print("HostileE2ETests skipped: \(reason)")
            return
        }
        let tool = ProcessInfo.processInfo.environment["WIREMESH_HOSTILE_BIN"] ?? packageRoot + "/.build/debug/wiremesh-hostile"
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            print("HostileE2ETests skipped: \(tool) not built: run 'swift build' first")
            return
        }
        let cases = try await HostileRun.shared.results()
        if let setup = cases["setup"] { Issue.record("setup failed: \(setup.detail)") }
        let result = try #require(cases[c.rawValue], "case \(c.rawValue) did not run")
        #expect(result.pass, "\(c.rawValue): \(result.detail)")
    }
}
