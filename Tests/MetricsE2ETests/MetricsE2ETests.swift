import Foundation
import TestSupport
import Testing

/// Metrics (issue 11): three agents scraped every second by a real Prometheus server (Debian's
/// `prometheus`) in a namespace of its own; scripts/e2e/metrics.sh, one run shared by every check.
@Suite(.serialized) struct MetricsE2ETests {
    @Test func aRealPrometheusScrapesEveryNodeAndSeesTrafficDriftAndADeadPeer() async throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "wg", "prometheus", "jq", "python3"]) {
            Issue.record("MetricsE2ETests cannot run on this machine: \(reason)")
            return
        }
        let started = Date()
        let (cases, status) = try await runResultCases(packageRoot + "/scripts/e2e/metrics.sh", [])
        print("metrics e2e: \(Int(Date().timeIntervalSince(started))) s")
        func check(_ name: String, _ what: String) {
            #expect(cases[name]?.pass == true, "\(name): \(what) (\(cases[name]?.detail ?? "no RESULT line; see stderr"))")
        }
        check("names", "Prometheus' API returns every metric the issue names, from each of the 3 nodes")
        check("parse", "the exposition parses with prometheus_client's text parser")
        check("secrets", "no WireGuard public key in any exposition")
        check("health", "/healthz and /readyz answer 200")
        check("bytes", "per-peer transmit bytes rise under a ping flood")
        check("drift", "a peer removed by hand comes back and wiremesh_drift_repaired_total rises")
        check("dead", "a killed node turns dead in wiremesh_peers and its handshake age grows")
        check("no-secret", "no private key, seed, cluster key or token (base64 or hex) in any log, output, exposition, Prometheus' storage, "
              + "or the argv and environment of any long-running wiremesh process (started by init, join --token-file and join -)")
        check("json-logs", "with --log-format json every line an agent wrote is one JSON object; membership changes name the member")
        #expect(status == 0)
    }
}
