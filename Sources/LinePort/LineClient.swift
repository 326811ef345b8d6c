import IPNetwork
import NIOCore
import NIOPosix

/// The asking side of the line port: one request, one reply, on NIO's event loops (no thread per
/// exchange: a rotation tells every peer at once).
public enum LineClient {
    /// Sends `request` to `endpoint` and decodes the reply. A refusal comes back as
    /// `.refused`; unreachable, silent or garbled members throw `LinePortError`.
    public static func exchange(_ request: LineRequest, with endpoint: Endpoint, timeout: Duration = .seconds(10),
                                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> LineReply {
        let reply = try await exchange(line: request.line(), with: endpoint, timeout: timeout, group: group)
        do { return try LineReply.decode(line: reply) } catch {
            throw LinePortError("\(endpoint) answered something that is not a line-port reply (\(error))")
        }
    }

    /// Sends `line` (newline included) and returns the first reply line without its newline (or all
    /// the member sent before closing). `timeout` bounds the connect and the whole exchange; a reply
    /// over `LineReply.maxLength` is refused.
    public static func exchange(line: [UInt8], with endpoint: Endpoint, timeout: Duration = .seconds(10),
                                group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> [UInt8] {
        let budget = TimeAmount.nanoseconds(max(1, timeout.nanoseconds))
        let loop = group.next()
        let reply = loop.makePromise(of: [UInt8].self)
        let deadline = loop.scheduleTask(in: budget) {
            reply.fail(LinePortError("no answer from \(endpoint) within \(timeout)"))
        }
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: loop)
                .connectTimeout(budget)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(LineFrameDecoder(maxLength: LineReply.maxLength)))
                        try channel.pipeline.syncOperations.addHandler(ReplyHandler(reply: reply, endpoint: endpoint))
                    }
                }
                .connect(host: endpoint.address.description, port: Int(endpoint.port)).get()
        } catch {
            deadline.cancel()
            reply.fail(error)
            throw LinePortError("cannot reach cluster member \(endpoint): \(error)")
        }
        defer { deadline.cancel(); channel.close(promise: nil) }
        channel.writeAndFlush(ByteBuffer(bytes: line)).cascadeFailure(to: reply)
        return try await reply.futureResult.get()
    }
}

extension Duration {
    /// The whole duration in nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (s, atto) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : ns &+ atto / 1_000_000_000
    }
}

/// Completes the exchange with the first line, or fails it when the member closes first, the line is
/// too long, or the socket fails. Promises complete once; later events are ignored.
private final class ReplyHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    let reply: EventLoopPromise<[UInt8]>
    let endpoint: Endpoint

    init(reply: EventLoopPromise<[UInt8]>, endpoint: Endpoint) {
        self.reply = reply
        self.endpoint = endpoint
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        reply.succeed(Array(buffer: unwrapInboundIn(data)))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        reply.fail(LinePortError("\(endpoint) closed the connection without an answer"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if error is LineFrameDecoder.LineTooLong {
            reply.fail(LinePortError("\(endpoint) answered more than \(LineReply.maxLength) bytes without a line end"))
        } else {
            reply.fail(LinePortError("exchange with \(endpoint) failed: \(error)"))
        }
        context.close(promise: nil)
    }
}
