#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
@testable import LinePort
import NIOConcurrencyHelpers
import TestSupport
import Testing

/// The line server's own bounds, on real sockets (127.0.0.0/8, ephemeral ports): one request per
/// connection, the line size limit, and the connection budget under a flood of idle connections.
/// The blocking socket calls run `onThread`: the server answers on the cooperative pool.
@Suite("Line port server bounds")
struct LineServerTests {
    /// A blocking TCP socket to 127.0.0.1:`port` from `source` (any 127.x address), 5 s timeouts.
    final class RawConnection: Sendable {
        let fd: Int32
        init(port: Int, source: String = "127.0.0.1") throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw LinePortError("socket: \(errno)") }
            var timeout = timeval(tv_sec: 5, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var local = sockaddr_in(), remote = sockaddr_in()
            local.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, source, &local.sin_addr)
            remote.sin_family = sa_family_t(AF_INET)
            remote.sin_port = in_port_t(UInt16(port).bigEndian)
            inet_pton(AF_INET, "127.0.0.1", &remote.sin_addr)
            let bound = withUnsafePointer(to: &local) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            let connected = withUnsafePointer(to: &remote) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard bound == 0, connected == 0 else {
                close(fd)
                throw LinePortError("cannot connect from \(source): errno \(errno)")
            }
        }
        deinit { close(fd) }

        func send(_ bytes: [UInt8]) {
            var off = 0
            while off < bytes.count {
                let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n <= 0 { return }
                off += n
            }
        }

        /// Everything until the server closes (or 5 s pass); nil when the connection was reset.
        func readToEnd() -> [UInt8]? {
            var out: [UInt8] = []
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = recv(fd, &buf, buf.count, 0)
                if n == 0 { return out }
                if n < 0 { return errno == ECONNRESET && out.isEmpty ? nil : out }
                out += buf[0..<n]
            }
        }
    }

    static func withServer(budget: ConnectionBudget = ConnectionBudget(), counter: Counter? = nil,
                           _ body: (Int) async throws -> Void) async throws {
        let server = try await LineServer.bind(Endpoint(address: try IPAddress("127.0.0.1"), port: 0), budget: budget) { _ in
            counter?.calls.withLockedValue { $0 += 1 }
            return .rotated(node: "n")
        }
        let task = Task { try await server.run() }
        defer { task.cancel() }
        try await body(try #require(server.localPort))
    }

    final class Counter: Sendable { let calls = NIOLockedValueBox(0) }

    /// The reply in `bytes` (one line), nil when there is none.
    static func decoded(_ bytes: [UInt8]?) -> LineReply? {
        guard let bytes, bytes.last == 0x0A else { return nil }
        return try? LineReply.decode(line: Array(bytes.dropLast()))
    }

    /// How many of `connections` the server closed (a peek on an open idle one times out instead).
    static func closedCount(_ connections: [RawConnection]) -> Int {
        connections.filter { c in
            var one: UInt8 = 0
            var timeout = timeval(tv_sec: 0, tv_usec: 30_000)
            setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            return recv(c.fd, &one, 1, Int32(MSG_PEEK)) >= 0 || errno == ECONNRESET
        }.count
    }

    static let message = RotationMessage(phase: .prepare, node: "a", oldKey: .generatePrivate(), newKey: .generatePrivate(),
                                         issuedAt: 1, identity: .generate())

    @Test func aConnectionIsAnsweredOnceHoweverManyLinesItSends() async throws {
        let counter = Counter()
        try await Self.withServer(counter: counter) { port in
            let reply = try await onThread {
                let c = try RawConnection(port: port)
                c.send(Array(repeating: LineRequest.rotation(Self.message).line(), count: 200).flatMap { $0 })
                return c.readToEnd() ?? []
            }
            #expect(reply.last == 0x0A && reply.filter { $0 == 0x0A }.count == 1, "one reply line, then the server closed")
            #expect(Self.decoded(reply) == .rotated(node: "n"))
            #expect(counter.calls.withLockedValue { $0 } == 1, "200 lines on one connection reached the handler once")
        }
    }

    @Test func aLineOverTheLimitClosesTheConnectionAtOnce() async throws {
        try await Self.withServer { port in
            let (reply, took) = try await onThread {
                let c = try RawConnection(port: port)
                let started = ContinuousClock.now
                c.send([UInt8](repeating: UInt8(ascii: "{"), count: LineRequest.maxLength + 4096))
                return (c.readToEnd(), ContinuousClock.now - started)
            }
            #expect(reply == nil || reply == [], "no answer to an over-long line")
            // The alternative is the 15 s idle deadline; a loaded machine may take seconds to get here.
            #expect(took < .seconds(12), "closed when the limit was passed, not at the deadline")
        }
    }

    @Test func idleConnectionsFromTwoAddressesDoNotKeepAThirdOut() async throws {
        try await Self.withServer(budget: ConnectionBudget(total: 6, perSource: 3)) { port in
            // The flood: 3 idle connections from each of two addresses fill every slot; more are refused.
            let idle = try await onThread {
                try ["127.0.0.2", "127.0.0.3"].flatMap { source in try (0..<5).map { _ in try RawConnection(port: port, source: source) } }
            }
            // The 4 over the per-source cap are closed at once (the server takes them in its own time).
            let deadline = ContinuousClock.now + .seconds(20)
            while try await onThread({ Self.closedCount(idle) }) < 4 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await onThread { Self.closedCount(idle) } == 4, "the per-source cap closes the rest")
            // A joiner from a third address is answered.
            let reply = try await onThread {
                let joiner = try RawConnection(port: port, source: "127.0.0.4")
                joiner.send(LineRequest.rotation(Self.message).line())
                return joiner.readToEnd()
            }
            #expect(Self.decoded(reply) == .rotated(node: "n"))
            // One more idle connection made room for it; 5 stay open.
            let after = ContinuousClock.now + .seconds(20)
            var closed = try await onThread { Self.closedCount(idle) }
            while closed < 5 && ContinuousClock.now < after {
                try await Task.sleep(for: .milliseconds(50))
                closed = try await onThread { Self.closedCount(idle) }
            }
            #expect(closed == 5, "\(closed) of 10 idle connections closed")
        }
    }
}
