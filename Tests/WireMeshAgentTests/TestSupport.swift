@_exported import TestSupport
import ByteCodec
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A fresh private directory under /tmp, removed when `body` returns or throws.
func withTemporaryDirectory<R>(_ body: (String) async throws -> R) async rethrows -> R {
    var template = Array("/tmp/wmt-agent-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    let dir = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    defer { removeTree(dir) }
    return try await body(dir)
}

/// Synchronous variant.
func withTemporaryDirectory<R>(_ body: (String) throws -> R) rethrows -> R {
    var template = Array("/tmp/wmt-agent-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    let dir = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    defer { removeTree(dir) }
    return try body(dir)
}

func fileText(_ path: String) -> String? {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
}

func directoryEntries(_ path: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
}

func hexBytes(_ text: String) -> [UInt8] { Hex.decode(text)! }

/// Removes a directory tree; retried because a server task finishing concurrently may unlink its
/// socket while the tree is being removed (which makes one pass fail).
func removeTree(_ dir: String) {
    for _ in 0..<3 where (try? FileManager.default.removeItem(atPath: dir)) == nil {
        if !FileManager.default.fileExists(atPath: dir) { return }
    }
}
