#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import IPNetwork
import NIOCore
import NIOPosix
import ServiceLifecycle
import NIOConcurrencyHelpers

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
        // One event loop accepts and runs every connection: a connection over the budget is closed in
        // the same turn it was accepted, so a storm of them holds a handful of descriptors, not one
        // per connection waiting for another loop to get to it. (Each connection is one short line;
        // the answers are computed off the loop.)
        let loop = group.next()
        do {
            let channel = try await ServerBootstrap(group: loop, childGroup: loop)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { child in
                    // Anyone can connect: without these bounds, idle connections exhaust the agent's
                    // descriptors (reconciles fail, status hangs).
                    let source = child.remoteAddress?.ipAddress.flatMap { try? IPAddress($0) }
                    let (slot, evicted) = slots.take(source, close: { child.close(promise: nil) })
                    evicted?()  // outside the lock: an idle connection of the source holding the most
                    guard let slot else { return child.close() }
                    child.closeFuture.whenComplete { _ in slots.give(slot) }
                    child.eventLoop.scheduleTask(in: Self.connectionDeadline) { child.close(promise: nil) }
                    return child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLength: LineRequest.maxLength)))
                        try child.pipeline.syncOperations.addHandler(LineConnectionHandler(handler: handler, onLine: { slots.busy(slot) }))
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

/// How many connections the line port holds at once: in all, and from one source (so one host
/// flooding it cannot take every slot from real joiners).
///
/// When every slot is taken, a connection from a source holding at least two fewer connections than
/// the source holding the most takes the slot of that source's oldest idle connection (one that has not sent its
/// line yet): a flood from a few addresses cannot keep a joiner out, only delay it by a round trip.
/// A source holding a single connection is never pushed out. An attacker needs about `total` source
/// addresses to refuse everyone else, and each slot still closes `LineServer.connectionDeadline`
/// after it opened.
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


    /// What one source is, for `perSource`: an IPv4 address (also IPv4-mapped IPv6), or an IPv6 /64
    /// (one host usually holds a whole /64).
    public static func source(_ address: IPAddress?) -> IPAddress? {
        guard let address, !address.isIPv4 else { return address }
        let b = address.bytes
        if b[0..<10].allSatisfy({ $0 == 0 }) && b[10] == 0xFF && b[11] == 0xFF { return IPAddress(bytes: b[12..<16]) }
        return address.masked(to: 64)
    }

    /// An open connection, as the budget sees it.
    struct Open: Equatable {
        /// Order of arrival (older first).
        var serial: UInt64
        var source: IPAddress?
        /// It has not sent its line yet.
        var idle: Bool
    }

    /// What happens to a new connection from `source`.
    enum Admission: Equatable {
        case admit
        /// Admitted in place of this (idle) connection, which is closed.
        case admitInPlaceOf(serial: UInt64)
        case refuse
    }

    /// The decision for a new connection from `source` given the open ones, counted per source in
    /// `counts` (pure: `ConnectionSlots` holds the state).
    func admission(for source: IPAddress?, open: [UInt64: Open], counts: [IPAddress?: Int]) -> Admission {
        let own = counts[source] ?? 0
        guard own < perSource else { return .refuse }
        guard open.count >= total else { return .admit }
        // Full: the biggest source gives up its oldest idle connection, if that evens things out.
        let victim = open.values.filter(\.idle).min { a, b in
            let (ca, cb) = (counts[a.source] ?? 0, counts[b.source] ?? 0)
            return ca != cb ? ca > cb : a.serial < b.serial
        }
        guard let victim, (counts[victim.source] ?? 0) > own + 1 else { return .refuse }
        return .admitInPlaceOf(serial: victim.serial)
    }
}

/// The open connections, counted against a `ConnectionBudget` from the event loops.
final class ConnectionSlots: Sendable {
    private let budget: ConnectionBudget
    private struct State {
        var open: [UInt64: ConnectionBudget.Open] = [:]
        var counts: [IPAddress?: Int] = [:]
        var close: [UInt64: @Sendable () -> Void] = [:]
        var next: UInt64 = 0
    }
    private let state = NIOLockedValueBox(State())

    init(_ budget: ConnectionBudget) { self.budget = budget }

    /// A slot for a connection from `address` (nil: refused), and the close of the connection it
    /// pushed out, if any, for the caller to run (outside the lock).
    func take(_ address: IPAddress?, close: @escaping @Sendable () -> Void) -> (slot: UInt64?, evicted: (@Sendable () -> Void)?) {
        let source = ConnectionBudget.source(address)
        return state.withLockedValue { s in
            var evicted: (@Sendable () -> Void)?
            switch budget.admission(for: source, open: s.open, counts: s.counts) {
            case .refuse: return (nil, nil)
            case .admit: break
            case .admitInPlaceOf(let serial):
                evicted = s.close[serial]
                Self.remove(serial, from: &s)
            }
            let serial = s.next
            s.next += 1
            s.open[serial] = .init(serial: serial, source: source, idle: true)
            s.counts[source, default: 0] += 1
            s.close[serial] = close
            return (serial, evicted)
        }
    }

    /// The connection sent its line: it is being answered, and no newcomer pushes it out.
    func busy(_ slot: UInt64) {
        state.withLockedValue { s in s.open[slot]?.idle = false }
    }

    /// The connection closed (again: nothing happens).
    func give(_ slot: UInt64) {
        state.withLockedValue { s in Self.remove(slot, from: &s) }
    }

    /// How many connections are open (tests).
    var openCount: Int { state.withLockedValue { $0.open.count } }

    private static func remove(_ slot: UInt64, from s: inout State) {
        guard let open = s.open.removeValue(forKey: slot) else { return }
        s.close[slot] = nil
        let n = s.counts[open.source] ?? 1
        s.counts[open.source] = n <= 1 ? nil : n - 1
    }
}

/// One connection: its first line is decoded once and answered; then the connection closes. Lines
/// after the first are not read (one request per connection: a flood of lines on one connection is
/// no more work than one line).
final class LineConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let handler: LineServer.Handler
    let onLine: @Sendable () -> Void
    /// The first line arrived (touched on the channel's event loop only).
    private var answered = false

    init(handler: @escaping LineServer.Handler, onLine: @escaping @Sendable () -> Void = {}) {
        self.handler = handler
        self.onLine = onLine
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        answered = true
        onLine()
        context.channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
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
