import Foundation
import Testing
@testable import WireMeshAgent

@Suite("SystemdUnit")
struct SystemdUnitTests {
    static let unitPath: String = {
        // Tests/WireMeshAgentTests/SystemdUnitTests.swift → repository root.
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("systemd/wiremesh.service").path
    }()

    /// `Key=value` lines of one section.
    static func settings(_ text: String, section: String) -> [(String, String)] {
        var current = ""
        var out: [(String, String)] = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || line.isEmpty { continue }
            if line.hasPrefix("[") { current = line; continue }
            if current == "[\(section)]", let eq = line.firstIndex(of: "=") {
                out.append((String(line[..<eq]), String(line[line.index(after: eq)...])))
            }
        }
        return out
    }

    @Test func unitHasTheRequiredSettings() throws {
        let text = try #require(fileText(Self.unitPath), "missing \(Self.unitPath)")
        let service = Dictionary(Self.settings(text, section: "Service"), uniquingKeysWith: { a, b in a + " " + b })
        #expect(service["Type"] == "notify")
        #expect(service["Restart"] == "on-failure")
        #expect(service["ExecStart"] == "/usr/local/bin/wiremesh agent")
        #expect(service["CapabilityBoundingSet"] == "CAP_NET_ADMIN")
        #expect(service["AmbientCapabilities"] == "CAP_NET_ADMIN")
        #expect(service["NoNewPrivileges"] == "yes")
        #expect(service["ProtectSystem"] == "strict")
        #expect(service["ProtectHome"] == "yes")
        #expect(service["StateDirectory"] == "wiremesh")
        #expect(service["StateDirectoryMode"] == "0700")
        #expect(service["RuntimeDirectory"] == "wiremesh")
        #expect(service["ReadWritePaths"]?.contains("/run/wireguard") == true)
        // The defaults of the agent live where the unit makes them writable.
        #expect(AgentConfig().stateDirectory == "/var/lib/" + service["StateDirectory"]!)
        #expect(AgentConfig.defaultControlSocket.hasPrefix("/run/" + service["RuntimeDirectory"]! + "/"))
    }

    /// `systemd-analyze verify` checks that ExecStart exists, so the test verifies a copy whose
    /// ExecStart points at an executable it creates; everything else is the file as shipped.
    @Test func systemdAnalyzeVerifyAcceptsTheUnit() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else {
            print("SystemdUnitTests: skipping verify: /usr/bin/systemd-analyze not installed (apt-get install systemd)")
            return
        }
        let text = try #require(fileText(Self.unitPath))
        try withTemporaryDirectory { (dir: String) throws in
            let binary = dir + "/wiremesh"
            try AtomicFile.write("#!/bin/sh\nexit 0\n", to: binary, mode: 0o755)
            let unit = dir + "/wiremesh.service"
            try AtomicFile.write(text.replacingOccurrences(of: "/usr/local/bin/wiremesh", with: binary), to: unit, mode: 0o644)
            let (status, output) = try run("/usr/bin/systemd-analyze", ["verify", unit])
            #expect(status == 0, "\(output)")
            #expect(output.isEmpty, "systemd-analyze warned: \(output)")

            // The check is real: a misspelt directive is reported.
            try AtomicFile.write(text.replacingOccurrences(of: "/usr/local/bin/wiremesh", with: binary)
                .replacingOccurrences(of: "NoNewPrivileges=", with: "NoNewPrivilege="), to: unit, mode: 0o644)
            let (_, warned) = try run("/usr/bin/systemd-analyze", ["verify", unit])
            #expect(warned.contains("Unknown key"), "\(warned)")
        }
    }

    func run(_ path: String, _ arguments: [String]) throws -> (Int32, String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}
