import Foundation
import TestSupport
import Testing

/// The findings of a `doctor --json` output by check name (the first of each), and its `ok`.
private func doctorReport(_ output: String) -> (ok: Bool?, byCheck: [String: [String: Any]]) {
    let object = (try? JSONSerialization.jsonObject(with: Data(output.utf8))) as? [String: Any] ?? [:]
    var byCheck: [String: [String: Any]] = [:]
    for finding in object["findings"] as? [[String: Any]] ?? [] {
        if let check = finding["check"] as? String, byCheck[check] == nil { byCheck[check] = finding }
    }
    return (object["ok"] as? Bool, byCheck)
}

@Suite("CLI: doctor and graph")
struct OperationsCommandTests {
    /// Flags pointing at a state directory and socket no agent uses.
    private func nowhere() throws -> (flags: [String], directory: String) {
        let directory = NSTemporaryDirectory() + "wm-doctor-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return (["--state-dir", directory + "/state", "--control-socket", directory + "/none.sock"], directory)
    }

    @Test func doctorWithoutAnAgentPrintsEveryCheckAndExitsOne() throws {
        let (flags, directory) = try nowhere()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let r = try wiremesh(["doctor", "--json"] + flags)
        #expect(r.status == 1, "\(r)")
        let report = doctorReport(r.stdout)
        #expect(report.ok == false, "\(r.stdout)")
        let checks = ["wireguard", "privileges", "ports", "mtu", "agent", "device", "routes", "handshakes", "clock"]
        #expect(Set(report.byCheck.keys) == Set(checks), "\(r.stdout)")
        for (check, finding) in report.byCheck {
            #expect(["ok", "info", "warn", "fail"].contains(finding["status"] as? String ?? ""), "\(check)")
            #expect(!(finding["detail"] as? String ?? "").isEmpty, "\(check)")
        }
        #expect(report.byCheck["agent"]?["status"] as? String == "fail")
        #expect((report.byCheck["agent"]?["fix"] as? String)?.contains("wiremesh init") == true, "\(r.stdout)")
        // The text form says the same and ends with the verdict.
        let text = try wiremesh(["doctor"] + flags)
        #expect(text.status == 1 && text.stdout.contains("FAIL  agent:") && text.stdout.hasSuffix("something is wrong: see FAIL above\n"), "\(text)")
    }

    @Test func doctorHelpSaysWhatTheExitStatusMeans() throws {
        let r = try wiremesh(["doctor", "--help"])
        #expect(r.status == 0 && r.stdout.contains("--json"), "\(r)")
        #expect(r.stdout.replacingOccurrences(of: "\n", with: " ").contains("warnings alone exit 0"), "\(r.stdout)")
    }

    @Test func graphHelpAndBadInput() throws {
        let help = try wiremesh(["graph", "--help"])
        #expect(help.status == 0 && help.stdout.contains("--format") && help.stdout.contains("svg"), "\(help)")
        let bad = try wiremesh(["graph", "--format", "png"])
        #expect(bad.status == 2 && bad.stderr.contains("png"), "\(bad)")
        let (flags, directory) = try nowhere()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let noAgent = try wiremesh(["graph"] + flags)
        #expect(noAgent.status == 1 && noAgent.stdout.isEmpty && noAgent.stderr.contains("not running"), "\(noAgent)")
    }

    @Test("doctor and graph against a one-node agent: healthy, a deleted backstop route, DOT and SVG naming the node")
    func againstARunningAgent() throws {
        if let reason = missingNetnsPrerequisite(tools: ["wireguard-go", "ip"]) {
            print("OperationsCommandTests skipped: \(reason)")
            return
        }
        let cluster = try OneNodeCluster()
        defer { cluster.stop() }
        let namespace = "\(cluster.prefix)-n1"
        let flags = ["--state-dir", cluster.directory + "/state"] + cluster.socketFlag
        func doctor() throws -> CommandResult {
            try run(["/usr/sbin/ip", "netns", "exec", namespace, try wiremeshBinary(), "doctor", "--json"] + flags)
        }

        let healthy = try doctor()
        let report = doctorReport(healthy.stdout)
        #expect(healthy.status == 0 && report.ok == true, "\(healthy)\nagent log:\n\(cluster.log)")
        #expect(report.byCheck["agent"]?["status"] as? String == "ok")
        #expect((report.byCheck["agent"]?["detail"] as? String)?.contains("node n1") == true, "\(healthy.stdout)")
        #expect(report.byCheck["routes"]?["status"] as? String == "ok", "\(healthy.stdout)")
        #expect(report.byCheck["ports"]?["status"] as? String == "ok", "\(healthy.stdout)")
        #expect(report.byCheck["device"]?["status"] as? String == "ok", "\(healthy.stdout)")

        // Break the fail-closed backstop: doctor fails naming it (the agent puts it back within a
        // resync, 10 s, so a few tries).
        var broken: CommandResult?
        for _ in 0..<3 {
            _ = try run(["/usr/sbin/ip", "netns", "exec", namespace, "/usr/sbin/ip", "route", "del", "unreachable", "10.244.0.0/16",
                         "proto", "87", "metric", "4200000000"])
            let r = try doctor()
            if r.status == 1 { broken = r; break }
        }
        let routes = doctorReport(broken?.stdout ?? "").byCheck["routes"]
        #expect(broken != nil && routes?["status"] as? String == "fail", "\(String(describing: broken))")
        #expect((routes?["detail"] as? String)?.contains("unreachable") == true)

        let dot = try cluster.cli(["graph", "--format", "dot"])
        #expect(dot.status == 0 && dot.stdout.hasPrefix("digraph wiremesh {") && dot.stdout.contains(#""n1" [label="n1\n10.244."#), "\(dot)")
        // Without Graphviz: a clear error and the way out, nothing on stdout.
        let noDot = try wiremesh(["graph", "--format", "svg"] + cluster.socketFlag, environment: ["PATH": "/nonexistent"])
        #expect(noDot.status == 1 && noDot.stdout.isEmpty && noDot.stderr.contains("install graphviz")
                    && noDot.stderr.contains("--format dot"), "\(noDot)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/dot") {
            let svg = try cluster.cli(["graph", "--format", "svg"])
            #expect(svg.status == 0 && svg.stdout.contains("<svg") && svg.stdout.contains(">n1</text>"), "\(svg)")
        }
    }
}
