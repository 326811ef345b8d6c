import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// The package root (this file is Tests/TestSupport/Netns.swift).
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// Why this host cannot run a network-namespace e2e suite that needs `tools`, or nil when it can:
/// root (namespaces need CAP_SYS_ADMIN), a built `wiremesh` ($WIREMESH_BIN or the debug build), and
/// each tool installed (scripts/setup installs them).
public func missingNetnsPrerequisite(tools: [String]) -> String? {
    if geteuid() != 0 { return "not root: network namespaces need CAP_SYS_ADMIN" }
    let binary = ProcessInfo.processInfo.environment["WIREMESH_BIN"] ?? packageRoot + "/.build/debug/wiremesh"
    if !FileManager.default.isExecutableFile(atPath: binary) { return "\(binary) not built: run 'swift build' first" }
    for tool in tools where !["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"]
        .contains(where: { FileManager.default.isExecutableFile(atPath: $0 + tool) }) {
        return "'\(tool)' is not installed: run scripts/setup"
    }
    return nil
}
