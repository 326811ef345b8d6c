import Foundation
import Testing
@testable import WireMeshAgent
#if canImport(Glibc)
import Glibc
#endif

/// The process lookups `leave` uses to stop the userspace WireGuard serving the interface.
@Suite("Leave teardown helpers")
struct LinkTeardownTests {
    @Test func serverOfAUnixSocketIsFoundByItsCredentials() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/wg.sock"
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            #expect(fd >= 0)
            defer { close(fd) }
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
            let bound = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(bound == 0 && listen(fd, 1) == 0)
            // This process listens, so this process is the server.
            #expect(LinkManager.serverPID(ofUnixSocket: path) == getpid())
            // Nothing listening, or no socket at all: no pid (leave then only removes the file).
            #expect(LinkManager.serverPID(ofUnixSocket: dir + "/absent.sock") == nil)
        }
    }

    @Test func waitGoneReapsAStoppedChildAndTimesOutOnARunningOne() throws {
        var pid: pid_t = 0
        let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sleep"), strdup("30"), nil]
        defer { argv.forEach { free($0) } }
        #expect(posix_spawn(&pid, "/bin/sleep", nil, nil, argv, environ) == 0)
        #expect(!LinkManager.waitGone(pid, seconds: 0.1))
        // SIGKILL: the test runner's threads may block SIGTERM, and a spawned child inherits the mask.
        kill(pid, SIGKILL)
        #expect(LinkManager.waitGone(pid, seconds: 5))
        // Reaped: the pid no longer exists as a zombie.
        #expect(kill(pid, 0) != 0)
    }
}
