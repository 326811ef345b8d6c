import Foundation
import WireGuard
import WireMeshCrypto

#if canImport(Glibc)
import Glibc
#endif

/// What a finished command printed and how it exited.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs `argv` (looked up in PATH) and waits for it. Test setup and the reference tools only.
@discardableResult
func run(_ argv: [String], check: Bool = false) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // stderr is read on another thread so neither pipe can fill up and block the child.
    final class Box: @unchecked Sendable { var data = Data() }
    let errBox = Box()
    let group = DispatchGroup()
    let errHandle = err.fileHandleForReading
    DispatchQueue.global().async(group: group) { errBox.data = errHandle.readDataToEndOfFile() }
    let outData = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    group.wait()
    let errData = errBox.data
    let result = CommandResult(status: p.terminationStatus,
                               stdout: String(decoding: outData, as: UTF8.self),
                               stderr: String(decoding: errData, as: UTF8.self))
    if check && result.status != 0 {
        throw E2EError("command failed (\(result.status)): \(argv.joined(separator: " "))\n\(result.stderr)")
    }
    return result
}

struct E2EError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// The package root, found from this file's path (Tests/E2ETests/Support.swift).
let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The `wiremesh` binary under test: $WIREMESH_BIN, else the debug build in .build.
func wiremeshBinary() throws -> String {
    let path = ProcessInfo.processInfo.environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw E2EError("wiremesh binary not found at \(path): run 'swift build' first or set WIREMESH_BIN")
    }
    return path
}

/// True when this process may create network namespaces and TUN devices.
let runningAsRoot = geteuid() == 0

/// A per-test world: uniquely named network namespaces and the wireguard-go processes in them.
/// `teardown()` kills every child and deletes every namespace (and what is inside) it created.
final class Lab {
    /// "wmt" + 6 random hex characters: every name this lab creates starts with it.
    let id: String
    private(set) var namespaces: [String] = []
    private(set) var launchers: [UserspaceLauncher] = []
    let scratch: String

    init() throws {
        id = "wmt" + secureRandomBytes(3).map { String(format: "%02x", $0) }.joined()
        scratch = FileManager.default.temporaryDirectory.path + "/" + id
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    }

    /// Creates namespace `id + suffix` with loopback up.
    func namespace(_ suffix: String) throws -> String {
        let ns = id + suffix
        try run(["ip", "netns", "add", ns], check: true)
        namespaces.append(ns)
        try run(["ip", "-n", ns, "link", "set", "lo", "up"], check: true)
        return ns
    }

    /// A veth pair between two namespaces with the given underlay addresses (CIDR), both up.
    func link(_ a: String, _ addrA: String, _ b: String, _ addrB: String) throws {
        let va = id + "va", vb = id + "vb"
        try run(["ip", "-n", a, "link", "add", va, "type", "veth", "peer", "name", vb, "netns", b], check: true)
        try run(["ip", "-n", a, "addr", "add", addrA, "dev", va], check: true)
        try run(["ip", "-n", b, "addr", "add", addrB, "dev", vb], check: true)
        try run(["ip", "-n", a, "link", "set", va, "up"], check: true)
        try run(["ip", "-n", b, "link", "set", vb, "up"], check: true)
    }

    /// Starts `wireguard-go -f IFACE` inside `ns` (owned by this lab) and waits until it answers.
    func wireguardGo(in ns: String, interface: String) throws -> UserspaceLauncher {
        let l = try UserspaceLauncher(interface: interface, wrapper: ["ip", "netns", "exec", ns],
                                      logFile: scratch + "/" + interface + ".log", timeout: 30)
        launchers.append(l)
        return l
    }

    /// Writes `text` to a file in this lab's scratch directory and returns its path.
    func file(_ name: String, _ text: String) throws -> String {
        let path = scratch + "/" + name
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func teardown() {
        for l in launchers {
            l.stop()
            // A socket left by a killed child would make the next run think the device exists.
            unlink(UserspaceBackend.defaultSocketDirectory + "/" + l.interface + ".sock")
        }
        launchers.removeAll()
        for ns in namespaces { _ = try? run(["ip", "netns", "del", ns]) }
        namespaces.removeAll()
        try? FileManager.default.removeItem(atPath: scratch)
    }
}

/// The configuration fields of `wg show IFACE dump`, order-independent: the device line without
/// the listen port when `ignorePort`, and per peer public key, preshared key, endpoint, the sorted
/// allowed IPs and keepalive (handshake and transfer counters are runtime, left out).
func configFields(ofDump dump: String) -> [String] {
    var lines = dump.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
    guard !lines.isEmpty else { return [] }
    let device = lines.removeFirst().joined(separator: "\t")
    let peers = lines.map { f -> String in
        guard f.count == 8 else { return "malformed: " + f.joined(separator: "\t") }
        let ips = f[3] == "(none)" ? f[3] : f[3].split(separator: ",").sorted().joined(separator: ",")
        return [f[0], f[1], f[2], ips, f[7]].joined(separator: "\t")
    }.sorted()
    return [device] + peers
}
