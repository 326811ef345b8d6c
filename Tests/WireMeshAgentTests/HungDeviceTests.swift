import Foundation
import Testing
import WireGuard
@testable import WireMeshAgent
#if canImport(Glibc)
import Glibc
#endif

/// A userspace device whose socket accepts and never answers is hung, not gone (issue 12): the agent
/// must not unlink a live process's socket and start a second wireguard-go, which could not take the
/// interface's TUN and would leave it unmanageable.
@Suite struct HungDeviceTests {
    @Test func onlyASocketNobodyListensOnCountsAsGone() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/wmthung1.sock"
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(bound == 0 && listen(fd, 4) == 0)
            let backend = UserspaceBackend(socketDirectory: dir, timeoutSeconds: 1)
            #expect(throws: WireGuardError.self, "a hung device is an error, not a dead one") {
                _ = try LinkManager.readIfAnswering(backend, "wmthung1")
            }
            // Nobody listening (a killed wireguard-go's socket file, or none at all): gone, start another.
            let gone = try LinkManager.readIfAnswering(backend, "wmtgone1")
            #expect(gone == nil)
        }
    }
}
