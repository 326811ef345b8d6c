import Foundation
import TestSupport
import Testing

/// Faults injected under traffic (issue 12, part 3): a 6-node mesh in network namespaces with
/// wireguard-go and pod-to-pod ping streams, each fault made on purpose; scripts/e2e/faults.sh, one
/// run shared by every case. CI-sized by default (partition 35 s, loss 30 s, 4 kill rounds: shorter
/// than the issue's, the same faults); FAULTS_FULL=1 in the environment runs the issue's 60 s
/// partition, 2 min of loss and 10 kill rounds.
@Suite(.serialized) struct FaultsE2ETests {
    @Test func theMeshSurvivesEachFaultMadeUnderTraffic() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "nft", "jq", "python3", "prlimit", "faketime", "nsenter"]) {
            Issue.record("FaultsE2ETests cannot run on this machine: \(reason)")
            return
        }
        let full = ProcessInfo.processInfo.environment["FAULTS_FULL"] == "1"
        let started = Date()
        let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/faults.sh", [])
        print("faults e2e (\(full ? "full" : "CI") lengths): \(Int(Date().timeIntervalSince(started))) s")
        func check(_ name: String, _ what: String) {
            #expect(cases[name]?.pass == true, "\(name): \(what) (\(cases[name]?.detail ?? "no RESULT line; see stderr"))")
        }
        check("partition", "nodes 1-3 and 4-6 cut apart (\(full ? 60 : 35) s, each half declares the other dead), then healed: every node sees every other alive within 5 s, pings cross the former split again")
        check("loss", "10 % random loss on the underlay for \(full ? 120 : 30) s under ping streams: no node declared dead, no stream without a reply for more than 2 s")
        check("kill9", "\(full ? 10 : 4) rounds of kill -9 of a random agent (also mid-start-up) under ping floods: same identity, keys and block after each restart, status healthy, no flood stops for 2 s")
        check("hung-uapi", "a UAPI socket that accepts and never answers: status answers within seconds naming the device and the 3 s timeout, doctor and the log too; healthy again once the real socket is back; a start against it fails clearly")
        check("wg-killed", "wireguard-go killed under traffic: the agent starts and programs a new one, traffic resumes; the new one holds none of the agent's sockets, so the agent restarts")
        check("fdlimit", "the agent at 64 descriptors runs; 128 held line-port connections from 16 hosts: status answers, clear errors at worst; healthy and answering again once they go")
        check("clock", "the wall clock +1 h and -1 h under the running agent (libfaketime): nobody dead, no peer removed (also of a member whose agent is down, its data plane alive), token expiry unmoved (a 2 h token admits a node at +1 h); a restart an hour behind still spreads its updates")
        check("disk", "the state directory full, then read-only: token create and rotate-key fail with one clear error, the state stays byte for byte, restarts load it or refuse clearly, and writes work once space / rw is back")
        #expect(status == 0)
    }
}
