#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The join port: TCP on the gossip port number. One request line in, one reply line out.
///
/// TCP rather than the gossip datagrams: a join reply carries the member list and can exceed one
/// datagram, and the exchange is authenticated end to end by the token anyway.
public final class JoinServer: Service, Sendable {
    public typealias Handler = @Sendable ([UInt8]) async -> [UInt8]
    private let channel: Channel

    private init(channel: Channel) { self.channel = channel }

    /// How long one connection may stay open: a join or rotation exchange is one line each way.
    public static let connectionDeadline: TimeAmount = .seconds(15)

    public static func bind(_ endpoint: Endpoint, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            budget: ConnectionBudget = ConnectionBudget(),
                            handler: @escaping Handler) async throws -> JoinServer {
        let slots = ConnectionSlots(budget)
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { child in
                    // Anyone can connect: without these bounds, idle connections exhaust the agent's
                    // descriptors (reconciles fail, status hangs).
                    let source = child.remoteAddress?.ipAddress.flatMap { try? IPAddress($0) }
                    guard slots.take(source) else { return child.close() }
                    child.closeFuture.whenComplete { _ in slots.give(source) }
                    child.eventLoop.scheduleTask(in: Self.connectionDeadline) { child.close(promise: nil) }
                    return child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLength: 64 * 1024)))
                        try child.pipeline.syncOperations.addHandler(JoinConnectionHandler(handler: handler))
                    }
                }
                .bind(host: endpoint.address.description, port: Int(endpoint.port)).get()
            return JoinServer(channel: channel)
        } catch {
            throw AgentError("cannot listen for joins on TCP \(endpoint): \(error) (is another agent using the port? choose another --gossip-port)")
        }
    }

    public func run() async throws {
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await channel.closeFuture.get()
            } onCancel: { self.channel.close(promise: nil) }
        } onGracefulShutdown: { self.channel.close(promise: nil) }
    }
}

/// How many connections the line port holds at once: in all, and from one source address (so one
/// host flooding it cannot take every slot from real joiners).
public struct ConnectionBudget: Sendable, Equatable {
    public var total: Int
    public var perSource: Int
    public init(total: Int = 128, perSource: Int = 8) {
        self.total = total
        self.perSource = perSource
    }

    /// Whether one more connection from `source` fits, given the open ones.
    func admits(_ source: IPAddress?, open: [IPAddress?: Int], total openTotal: Int) -> Bool {
        openTotal < total && (open[source] ?? 0) < perSource
    }
}

/// The open connections, counted against a `ConnectionBudget` from the event loops.
final class ConnectionSlots: Sendable {
    private let budget: ConnectionBudget
    private let state = Mutex<(open: [IPAddress?: Int], total: Int)>(([:], 0))

    init(_ budget: ConnectionBudget) { self.budget = budget }

    func take(_ source: IPAddress?) -> Bool {
        state.withLock { s in
            guard budget.admits(source, open: s.open, total: s.total) else { return false }
            s.open[source, default: 0] += 1
            s.total += 1
            return true
        }
    }

    func give(_ source: IPAddress?) {
        state.withLock { s in
            guard let n = s.open[source], n > 0 else { return }
            s.open[source] = n == 1 ? nil : n - 1
            s.total -= 1
        }
    }
}

final class JoinConnectionHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let handler: JoinServer.Handler

    init(handler: @escaping JoinServer.Handler) { self.handler = handler }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Array(buffer: unwrapInboundIn(data))
        let channel = context.channel
        let handler = self.handler
        Task {
            let reply = await handler(line)
            try? await channel.writeAndFlush(ByteBuffer(bytes: reply))
            try? await channel.close()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// The joining side: a blocking TCP exchange with one member.
public enum JoinClient {
    /// Sends `line` to `endpoint` and returns the reply line, or throws a readable error.
    public static func exchange(_ line: [UInt8], with endpoint: Endpoint, timeoutSeconds: Int = 10) throws -> [UInt8] {
        let family = endpoint.address.isIPv4 ? AF_INET : AF_INET6
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw AgentError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc: Int32
        let raw = endpoint.address.bytes
        if endpoint.address.isIPv4 {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: raw) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        } else {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: raw) }
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
        guard rc == 0 else {
            throw AgentError("cannot reach cluster member \(endpoint): \(String(cString: strerror(errno)))")
        }
        var sent = 0
        while sent < line.count {
            let n = line[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw AgentError("sending the join request to \(endpoint) failed: \(String(cString: strerror(errno)))") }
            sent += n
        }
        var reply: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 16 * 1024)
        while reply.count < 1 << 20 {
            let n = recv(fd, &buf, buf.count, 0)
            if n < 0 { throw AgentError("no answer from \(endpoint) within \(timeoutSeconds) s: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            reply += buf[0..<n]
            if let nl = reply.firstIndex(of: 0x0A) { return Array(reply[..<nl]) }
        }
        guard !reply.isEmpty else { throw AgentError("\(endpoint) closed the connection without an answer") }
        return reply
    }
}
