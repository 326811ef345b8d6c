#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IPNetwork
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The line port: TCP on the gossip port number. One `LineRequest` line in, one `LineReply` line out.
///
/// TCP rather than the gossip datagrams: a join reply carries the member list and can exceed one
/// datagram, and the exchange is authenticated end to end by the token anyway. The server decodes
/// each line once; a line that is no request is refused here, without reaching the handler.
public final class LineServer: Service, Sendable {
    /// Answers one decoded request.
    public typealias Handler = @Sendable (LineRequest) async -> LineReply
    private let channel: Channel

    private init(channel: Channel) { self.channel = channel }

    /// How long one connection may stay open: a join or rotation exchange is one line each way.
    public static let connectionDeadline: TimeAmount = .seconds(15)

    /// Listens on `endpoint` until the service group stops.
    public static func bind(_ endpoint: Endpoint, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            budget: ConnectionBudget = .fitting(),
                            handler: @escaping Handler) async throws -> LineServer {
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
                        try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLength: LineRequest.maxLength)))
                        try child.pipeline.syncOperations.addHandler(LineConnectionHandler(handler: handler))
                    }
                }
                .bind(host: endpoint.address.description, port: Int(endpoint.port)).get()
            return LineServer(channel: channel)
        } catch {
            throw LinePortError("cannot listen for joins on TCP \(endpoint): \(error) (is another agent using the port? choose another --gossip-port)")
        }
    }

    /// The port it listens on (what the OS picked when bound to port 0).
    public var localPort: Int? { channel.localAddress?.port }

    /// Serves until cancelled or a graceful shutdown.
    public func run() async throws {
        try await serveUntilClosed(channel) { self.channel.close(promise: nil) }
    }
}

/// A listening service's `run()`: waits until `channel` closes; task cancellation and a graceful
/// shutdown (ServiceGroup) call `stop`, which closes it.
public func serveUntilClosed(_ channel: Channel, stop: @escaping @Sendable () -> Void) async throws {
    try await withGracefulShutdownHandler {
        try await withTaskCancellationHandler {
            try await channel.closeFuture.get()
        } onCancel: { stop() }
    } onGracefulShutdown: { stop() }
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

    /// Descriptors the agent keeps for itself besides the line port (it uses about 25: event loops,
    /// gossip, netlink, the control socket, a UAPI connection per request, state files).
    public static let reservedDescriptors = 32

    /// The default budget (128 in all, 8 per source) cut to fit `descriptorLimit` (default: this
    /// process's RLIMIT_NOFILE): the line port holds at most a quarter of what the reserve leaves
    /// (connections refused over budget still take a descriptor each until they are closed, and a
    /// reconnecting flood keeps a few of those in flight), and one source at most a quarter of that.
    /// Otherwise, at `ulimit -n 64`, 128 held connections made every reconcile fail with EMFILE (no
    /// descriptor for the UAPI socket) and `status` waited 12 s for the control socket's accept.
    public static func fitting(descriptorLimit: Int? = ConnectionBudget.descriptorLimit()) -> ConnectionBudget {
        var budget = ConnectionBudget()
        if let limit = descriptorLimit {
            budget.total = max(4, min(budget.total, (limit - reservedDescriptors) / 4))
            budget.perSource = min(budget.perSource, max(2, budget.total / 4))
        }
        return budget
    }

    /// The soft RLIMIT_NOFILE of this process (getrlimit(2)), nil when unlimited or unknown.
    public static func descriptorLimit() -> Int? {
        var limit = rlimit()
        #if canImport(Glibc)
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        #else
        guard getrlimit(RLIMIT_NOFILE, &limit) == 0 else { return nil }
        #endif
        return limit.rlim_cur == rlim_t.max ? nil : Int(clamping: limit.rlim_cur)  // RLIM_INFINITY
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

/// One connection: its first line is decoded once and answered; then the connection closes.
final class LineConnectionHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let handler: LineServer.Handler

    init(handler: @escaping LineServer.Handler) { self.handler = handler }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = Array(buffer: unwrapInboundIn(data))
        let channel = context.channel
        let handler = self.handler
        Task {
            let reply: LineReply
            do throws(LineRefusal) { reply = await handler(try LineRequest.decode(line: line)) } catch { reply = .refused(error) }
            try? await channel.writeAndFlush(ByteBuffer(bytes: reply.line()))
            try? await channel.close()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}

/// A line-port failure a person reads: what failed, on which endpoint, and what to do.
public struct LinePortError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
