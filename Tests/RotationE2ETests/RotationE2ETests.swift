import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The package root, found from this file's path (Tests/RotationE2ETests/RotationE2ETests.swift).
private let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// Why the host cannot run this suite, or nil when it can (root, netns, a WireGuard implementation).
private func missingPrerequisite() -> String? {
    if geteuid() != 0 { return "not root: network namespaces need CAP_SYS_ADMIN" }
    let binary = ProcessInfo.processInfo.environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
    if !FileManager.default.isExecutableFile(atPath: binary) { return "\(binary) not built: run 'swift build' first" }
    for tool in ["wireguard-go", "wg", "iperf3", "jq"] where !["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"]
        .contains(where: { FileManager.default.isExecutableFile(atPath: $0 + tool) }) {
        return "'\(tool)' is not installed: run scripts/setup"
    }
    return nil
}

/// What the script reported on its RESULT line.
private struct RotationResult: Decodable {
    var backend: String
    var nodes: Int
    var rotations: Int
    var pps: Int
    var lost: [Int]
    var allPeersSwitched: [Double?]
    var streamOK: Bool
    var keysOK: Bool

    enum CodingKeys: String, CodingKey {
        case backend, nodes, rotations, pps, lost, allPeersSwitched = "all_peers_switched_s", streamOK = "stream_ok"
        case keysOK = "keys_ok"
    }
}

/// `wiremesh rotate-key` on a live 4-node mesh (netns + wireguard-go): a ping flood at 200 pps in both
/// directions between the rotating node's pod and every other pod, and an iperf3 TCP stream, run
/// across the rotation. The stream must complete and afterwards every peer's device (read with `wg`)
/// must hold exactly the new key for the rotated node. Lost pings are reported, not judged (that is
/// the benchmark's job: ./scripts/bench rotation).
@Suite(.serialized) struct RotationE2ETests {
    @Test func rotateKeyUnderLoadKeepsTheStreamAndLeavesOnlyTheNewKey() throws {
        if let reason = missingPrerequisite() {
            print("RotationE2ETests skipped: \(reason)")
            return
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: packageRoot + "/scripts/e2e/rotation.sh")
        p.arguments = ["--nodes", "4", "--rotations", "1", "--pps", "200", "--stream-seconds", "6"]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        print(text)
        let line = try #require(text.split(separator: "\n").last { $0.hasPrefix("RESULT ") },
                                "the script printed no RESULT line (exit \(p.terminationStatus)); its stderr is above")
        let result = try JSONDecoder().decode(RotationResult.self, from: Data(line.dropFirst("RESULT ".count).utf8))
        print("rotate-key on \(result.backend), \(result.nodes) nodes, \(result.pps) pps per direction: "
              + "lost \(result.lost) pings; all peers switched after \(result.allPeersSwitched.map { $0.map { "\($0) s" } ?? "never" })")
        #expect(result.streamOK, "the TCP stream across the rotation did not complete")
        #expect(result.keysOK, "a peer's device does not hold exactly the new key (see stderr)")
        #expect(result.rotations == 1 && result.lost.count == 1)
        #expect(result.allPeersSwitched.allSatisfy { $0 != nil }, "some peer never moved to the new key")
        #expect(p.terminationStatus == 0)
    }
}
