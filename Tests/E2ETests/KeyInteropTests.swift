import Foundation
import Testing

/// `wiremesh genkey/pubkey/genpsk` against `wg` (wireguard-tools) as the reference, 100 keys each way.
@Suite("Key interop with wg")
struct KeyInteropTests {
    /// Public keys of every private key in `file`, one line each, computed by `tool pubkey`.
    private func publicKeys(of file: String, with tool: String) throws -> [String] {
        let r = try run(["sh", "-c", "while read -r k; do printf '%s\\n' \"$k\" | \(tool) pubkey || exit 1; done < \"$1\"", "sh", file],
                        check: true)
        return r.stdout.split(separator: "\n").map(String.init)
    }

    private func keys(from tool: String, _ verb: String, count: Int, into file: String) throws -> [String] {
        try run(["sh", "-c", "for i in $(seq \(count)); do \(tool) \(verb) || exit 1; done > \"$1\"", "sh", file], check: true)
        return try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    @Test("wiremesh pubkey of 100 'wg genkey' keys equals wg pubkey, and wg pubkey of 100 'wiremesh genkey' keys equals wiremesh pubkey")
    func hundredKeysBothWays() throws {
        let wm = try wiremeshBinary()
        let dir = NSTemporaryDirectory() + "wmkeys-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let fromWg = try keys(from: "wg", "genkey", count: 100, into: dir + "/wg.keys")
        #expect(fromWg.count == 100)
        let wgPubs = try publicKeys(of: dir + "/wg.keys", with: "wg")
        let wmPubs = try publicKeys(of: dir + "/wg.keys", with: wm)
        #expect(wmPubs.count == 100)
        #expect(wmPubs == wgPubs)

        let fromWm = try keys(from: wm, "genkey", count: 100, into: dir + "/wm.keys")
        #expect(Set(fromWm).count == 100, "genkey repeated a key")
        let wgOfWm = try publicKeys(of: dir + "/wm.keys", with: "wg")
        let wmOfWm = try publicKeys(of: dir + "/wm.keys", with: wm)
        #expect(wgOfWm.count == 100)
        #expect(wgOfWm == wmOfWm)

        // A preshared key from wiremesh is a valid key for wg (it accepts it as a private key too).
        let psk = try run([wm, "genpsk"], check: true).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let pskPub = try run(["sh", "-c", "printf '%s\\n' \"$1\" | wg pubkey", "sh", psk], check: true)
        #expect(psk.count == 44 && !pskPub.stdout.isEmpty)
    }

    @Test("a malformed key on stdin: one line on stderr, exit 2, nothing on stdout")
    func malformedKey() throws {
        let wm = try wiremeshBinary()
        for bad in ["", "not-a-key", "AAAA", String(repeating: "A", count: 43) + "?"] {
            let r = try run(["sh", "-c", "printf '%s\\n' \"$1\" | \"$2\" pubkey", "sh", bad, wm])
            #expect(r.status == 2, "input \(bad.debugDescription)")
            #expect(r.stdout.isEmpty)
            #expect(r.stderr.split(separator: "\n").count == 1, "stderr: \(r.stderr)")
        }
    }
}
