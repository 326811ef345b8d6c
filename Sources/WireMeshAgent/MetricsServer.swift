import Foundation
import IPNetwork
import LinePort
import NIOCore
import NIOHTTP1
import NIOPosix
import Prometheus
import ServiceLifecycle

/// The HTTP endpoint Prometheus scrapes (`--metrics-address`): `/metrics` (text exposition format),
/// `/healthz` (the process answers) and `/readyz` (gossip up and the device as planned; 503 with the
/// reason otherwise). Read-only; anything else is 404, any method but GET/HEAD 405.
public final class MetricsServer: Service, Sendable {
    /// What `/metrics` and `/readyz` ask the agent for on each request.
    public struct Sources: Sendable {
        /// Brings the scrape-time values (peers, handshake ages, key age) up to date.
        public var refresh: @Sendable () async -> Void
        /// nil when ready, else why not.
        public var notReady: @Sendable () async -> String?
        public var registry: PrometheusCollectorRegistry

        public init(registry: PrometheusCollectorRegistry, refresh: @escaping @Sendable () async -> Void,
                    notReady: @escaping @Sendable () async -> String?) {
            self.registry = registry
            self.refresh = refresh
            self.notReady = notReady
        }
    }

    private let channel: Channel
    /// The address bound (the port is the kernel's choice when 0 was asked).
    public let address: Endpoint

    private init(channel: Channel, address: Endpoint) {
        self.channel = channel
        self.address = address
    }

    public static func bind(_ endpoint: Endpoint, sources: Sources,
                            group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> MetricsServer {
        do {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { child in
                    // A scrape is one short request: a connection idle this long is dropped.
                    child.eventLoop.scheduleTask(in: .seconds(30)) { child.close(promise: nil) }
                    return child.pipeline.configureHTTPServerPipeline().flatMap {
                        child.pipeline.addHandler(MetricsHTTPHandler(sources: sources))
                    }
                }
                .bind(host: endpoint.address.description, port: Int(endpoint.port)).get()
            let port = UInt16(channel.localAddress?.port ?? Int(endpoint.port))
            return MetricsServer(channel: channel, address: Endpoint(address: endpoint.address, port: port))
        } catch {
            throw AgentError("cannot serve metrics on \(endpoint): \(error) (is the port in use? choose another --metrics-address)")
        }
    }

    public func run() async throws {
        try await serveUntilClosed(channel) { self.channel.close(promise: nil) }
    }
}

/// One HTTP/1.1 exchange at a time per connection (NIO's server pipeline orders them).
final class MetricsHTTPHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let sources: MetricsServer.Sources

    init(sources: MetricsServer.Sources) { self.sources = sources }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = unwrapInboundIn(data) else { return }
        let channel = context.channel
        let sources = self.sources
        let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
        let keepAlive = head.isKeepAlive
        let method = head.method
        Task {
            let (status, type, body) = await Self.answer(method: method, path: path, sources: sources)
            var headers = HTTPHeaders([("Content-Type", type), ("Content-Length", "\(body.count)")])
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            let response = HTTPResponseHead(version: .http1_1, status: status, headers: headers)
            channel.write(HTTPServerResponsePart.head(response), promise: nil)
            if method != .HEAD { channel.write(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
            channel.writeAndFlush(HTTPServerResponsePart.end(nil)).whenComplete { _ in
                if !keepAlive { channel.close(promise: nil) }
            }
        }
    }

    static func answer(method: HTTPMethod, path: String, sources: MetricsServer.Sources) async -> (HTTPResponseStatus, String, [UInt8]) {
        let text = "text/plain; charset=utf-8"
        guard method == .GET || method == .HEAD else { return (.methodNotAllowed, text, Array("GET only\n".utf8)) }
        switch path {
        case "/metrics":
            await sources.refresh()
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", sources.registry.emitToBuffer())
        case "/healthz":
            return (.ok, text, Array("ok\n".utf8))
        case "/readyz":
            if let why = await sources.notReady() { return (.serviceUnavailable, text, Array("not ready: \(why)\n".utf8)) }
            return (.ok, text, Array("ready\n".utf8))
        default:
            return (.notFound, text, Array("not found: /metrics, /healthz or /readyz\n".utf8))
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
