import ByteCodec
import CMnl
import Foundation
import Netlink

/// Lowercase hex without separators.
func hex(_ bytes: [UInt8]) -> String { Hex.encode(bytes) }

/// Hex text (whitespace ignored) to bytes, for golden vectors written out by hand.
func bytes(_ text: String) -> [UInt8] { Hex.decode(text.filter { !$0.isWhitespace })! }

/// A flattened view of one attribute tree, for structural assertions.
struct AttrNode {
    var type: UInt16
    var nestedFlag: Bool
    var payload: [UInt8]
    var children: [AttrNode]
}

/// Parses attributes after a family header of `extra` bytes; children are parsed for the types in
/// `nestedTypes` path-wise (every attribute of a nest is parsed when `parseChildren` says so).
func attributes(of message: [UInt8], extra: Int, isNest: ([UInt16]) -> Bool) -> [AttrNode] {
    func walk(_ attr: NetlinkAttribute, path: [UInt16]) -> AttrNode {
        var node = AttrNode(type: attr.type, nestedFlag: attr.isNested, payload: attr.bytes, children: [])
        if isNest(path) {
            attr.forEachNested { node.children.append(walk($0, path: path + [$0.type])) }
        }
        return node
    }
    return message.withUnsafeBytes { raw in
        var out: [AttrNode] = []
        NetlinkMessageView(raw)!.forEachAttribute(afterExtraHeader: extra) { out.append(walk($0, path: [$0.type])) }
        return out
    }
}

/// Runs a program and returns its exit status and output (tests use `ip` as the reference).
@discardableResult
func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: resolveProgram(args[0]))
    p.arguments = Array(args.dropFirst())
    let out = Pipe()
    let err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

/// `name` looked up in PATH (minimal VM images have no /usr/bin/env).
func resolveProgram(_ name: String) -> String {
    if name.hasPrefix("/") { return name }
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin"
    for dir in path.split(separator: ":") where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    return "/usr/bin/\(name)"
}

/// A network namespace with a unique name, removed by `remove()` (call it in a defer).
final class TestNamespace {
    let name: String
    var path: String { "/var/run/netns/\(name)" }

    init() throws {
        name = "wmt" + String(UInt32.random(in: 0...0xFFFFFF), radix: 16)
        let r = try run(["ip", "netns", "add", name])
        guard r.status == 0 else { throw TestFailure("ip netns add \(name): \(r.err)") }
    }

    /// Runs `ip -n NAME args…` and returns stdout.
    @discardableResult
    func ip(_ args: String...) throws -> String {
        let r = try run(["ip", "-n", name] + args)
        guard r.status == 0 else { throw TestFailure("ip -n \(name) \(args.joined(separator: " ")): \(r.err)") }
        return r.out
    }

    func remove() { _ = try? run(["ip", "netns", "del", name]) }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// JSON array output of `ip -j`.
func jsonArray(_ text: String) throws -> [[String: Any]] {
    guard let a = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]] else {
        throw TestFailure("not a JSON array: \(text)")
    }
    return a
}
