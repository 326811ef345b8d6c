#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Testing
import TestSupport
import WireGuard
import WireMeshCrypto
@testable import WireMeshAgent

/// One HTTP/1.1 request on a fresh connection; returns the status code and the body.
func httpGet(_ endpoint: Endpoint, _ path: String) throws -> (status: Int, body: String) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw AgentError("socket failed") }
    defer { close(fd) }
    var tv = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = endpoint.port.bigEndian
    withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: endpoint.address.bytes) }
    let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    guard rc == 0 else { throw AgentError("connect to \(endpoint) failed") }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
    var reply: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = recv(fd, &buf, buf.count, 0)
        if n <= 0 { break }
        reply += buf[0..<n]
    }
    let text = String(decoding: reply, as: UTF8.self)
    guard let head = text.range(of: "\r\n\r\n"), let code = Int(text.split(separator: " ").dropFirst().first ?? "") else {
        throw AgentError("not an HTTP reply: \(text.prefix(80))")
    }
    return (code, String(text[head.upperBound...]))
}

@Suite("Metrics endpoint")
struct MetricsTests {
    @Test func anAgentsMetricsHealthAndReadinessAreServedWithoutAKeyInThem() async throws {
        try await withTemporaryDirectory { dir in
            let h = try await AgentHarness(directory: dir, peers: 1)
            let registry = AgentMetricsBackend.bootstrap()
            await h.agent.reconcile()
            let agent = h.agent
            let server = try await MetricsServer.bind(Endpoint(address: try IPAddress("127.0.0.1"), port: 0), sources: .init(
                registry: registry, refresh: { await agent.refreshMetrics() }, notReady: { await agent.notReady() }))
            let run = Task { try await server.run() }
            defer { run.cancel() }
            let address = server.address

            let metrics = try await onThread { try httpGet(address, "/metrics") }
            #expect(metrics.status == 200)
            let lines = metrics.body.split(separator: "\n").map(String.init)
            func value(_ series: String) -> Double? {
                lines.first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            #expect(value("wiremesh_peers{state=\"alive\"}") == 1, "\(metrics.body)")
            #expect((value("wiremesh_reconcile_operations_total{kind=\"peer_set\"}") ?? 0) >= 1)
            #expect((value("wiremesh_reconcile_duration_seconds_count") ?? 0) >= 1)
            #expect(value("wiremesh_key_age_seconds") != nil && value("wiremesh_cluster_key_generation") != nil)
            #expect(value("wiremesh_gossip_datagrams_total{direction=\"out\"}") != nil)
            // Counters that never moved are there at 0 (a dashboard tells "none" from "not exported").
            for series in ["wiremesh_probes_total{event=\"failed\"}", "wiremesh_probes_total{event=\"stream_sent\"}",
                           "wiremesh_push_pulls_total{event=\"started\"}", "wiremesh_push_pulls_total{event=\"refused_rate\"}",
                           "wiremesh_push_pull_bytes_total{direction=\"in\"}"] {
                #expect(value(series) != nil, "\(series) missing")
            }
            // No key in any label or value: the peer is named by its node name.
            for key in [h.peers[0].record.wireguardKey.base64, h.state.wireGuardKey.publicKey().base64] {
                #expect(!metrics.body.contains(key))
            }

            #expect(try await onThread { try httpGet(address, "/healthz") }.status == 200)
            #expect(try await onThread { try httpGet(address, "/readyz") }.status == 200)
            h.dataplane.with { $0.configureError = .rejected(device: "wmtest0", errno: EADDRINUSE, message: "") }
            h.dataplane.with { $0.device.listenPort = 1 }  // a change is needed, and it fails
            await h.agent.reconcile()
            let notReady = try await onThread { try httpGet(address, "/readyz") }
            #expect(notReady.status == 503 && notReady.body.contains("WireGuard port 51999 is in use"))
            #expect(try await onThread { try httpGet(address, "/nope") }.status == 404)
        }
    }
}

@Suite("JSON log lines")
struct JSONLogTests {
    @Test func oneObjectPerLineWithTimeLevelNodeEventAndFields() throws {
        let time = Date(timeIntervalSince1970: 1_764_672_000.25)
        let line = JSONLogHandler.line(time: time, level: .notice, message: "member declared dead",
                                       fields: ["node": "node1", "peer": "node4", "state": "dead", "nested": ["a": "b"]])
        #expect(line.last == 0x0A && line.dropLast().allSatisfy { $0 != 0x0A }, "exactly one line")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        #expect(object["time"] as? String == "2025-12-02T10:40:00.250Z")
        #expect(object["level"] as? String == "notice" && object["event"] as? String == "member declared dead")
        #expect(object["node"] as? String == "node1")
        let fields = try #require(object["fields"] as? [String: Any])
        #expect(fields["peer"] as? String == "node4" && fields["node"] == nil)
        #expect((fields["nested"] as? [String: Any])?["a"] as? String == "b")
    }

    @Test func aMessageWithNewlinesAndQuotesStaysOneLine() throws {
        let line = JSONLogHandler.line(time: Date(), level: .error, message: "bad \"input\"\nsecond line", fields: [:])
        #expect(line.filter { $0 == 0x0A }.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any])
        #expect(object["event"] as? String == "bad \"input\"\nsecond line")
    }
}
