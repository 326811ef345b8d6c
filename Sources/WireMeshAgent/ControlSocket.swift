#if canImport(Glibc)
import Glibc
#endif
import LinePort
import LinePort
import NIOCore
import NIOPosix
import ServiceLifecycle
import NIOConcurrencyHelpers

/// Errors of the control socket a person reads.
public enum ControlSocketError: Error, Equatable, CustomStringConvertible {
    /// Nobody listens at the socket path.
    case agentNotRunning(path: String)
    /// The socket exists but this user may not use it (it is root-only).
    case permissionDenied(path: String)
    /// Another agent already serves this path.
    case alreadyInUse(path: String)
    /// The path exists and is not a socket.
    case notASocket(path: String)
    case io(path: String, operation: String, errno: Int32)
    /// The agent answered something that is not a control response.
    case protocolError(path: String, reason: String)

    public var description: String {
        switch self {
        case .agentNotRunning(let path):
            return "wiremesh agent is not running (no socket at \(path)): start it with 'systemctl start wiremesh' or 'wiremesh agent'"
        case .permissionDenied(let path):
            return "permission denied on the control socket \(path): it is root-only, run the command as root (sudo)"
        case .alreadyInUse(let path):
            return "another wiremesh agent is already listening on \(path): stop it first, or give this one a different --control-socket"
        case .notASocket(let path):
            return "\(path) exists and is not a unix socket: remove it or choose a different --control-socket"
        case .io(let path, let op, let e):
            return "control socket \(path): \(op) failed: \(String(cString: strerror(e)))"
        case .protocolError(let path, let reason):
            return "control socket \(path): unexpected answer from the agent (\(reason)); is the CLI the same version as the agent?"
        }
    }
}

/// The agent's control socket server: a root-only unix socket where each connection sends request
/// lines and receives one response line per request (in order), answered by `handler`.
///
/// Root-only without a race: the socket is bound inside a fresh 0700 directory, made 0600, and then
/// renamed into place, so no other user can ever connect to it (a missing parent directory is
/// created 0700; an existing one is left as it is).
///
/// Connections use a plain channel handler feeding one task per connection (rather than
/// `NIOAsyncChannel` children, which must never be dropped unconsumed: a connection accepted
/// while the server closes would trap).
public final class ControlServer: Service, Sendable {
    /// Answers one request; runs concurrently for different connections.
    public typealias Handler = @Sendable (ControlRequest) async -> ControlResponse

    /// The socket path served.
    public let path: String
    private let channel: Channel
    private let connections: ConnectionRegistry
    private let inode: UInt64

    private init(path: String, channel: Channel, connections: ConnectionRegistry, inode: UInt64) {
        self.path = path
        self.channel = channel
        self.connections = connections
        self.inode = inode
    }

    /// Binds the socket (so "already in use" and permission problems surface before the agent
    /// reports readiness); call `run()` to serve.
    public static func bind(path: String, group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
                            handler: @escaping Handler) async throws -> ControlServer {
        let parent = AtomicFile.parentDirectory(of: path)
        var st = stat()
        if stat(parent, &st) != 0 {
            do { try AtomicFile.makeDirectory(parent, mode: 0o700) } catch let e as FileError {
                throw ControlSocketError.io(path: path, operation: "create directory \(parent)", errno: e.errno)
            }
        }
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw ControlSocketError.notASocket(path: path) }
            // A live socket belongs to another agent; a dead one is left over from a crash.
            if (try? ControlClient.connect(path)).map({ Glibc.close($0); return true }) == true {
                throw ControlSocketError.alreadyInUse(path: path)
            }
        }
        var template = Array("\(parent)/.wiremesh-sock-XXXXXX".utf8CString)
        guard template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) != nil else {
            throw ControlSocketError.io(path: path, operation: "create a private directory in \(parent)", errno: errno)
        }
        let privateDir = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let tempPath = privateDir + "/s"
        defer { unlink(tempPath); rmdir(privateDir) }

        let connections = ConnectionRegistry()
        let channel = try await ServerBootstrap(group: group)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineFrameDecoder(maxLength: ControlCodec.maxLineLength)))
                    try child.pipeline.syncOperations.addHandler(ControlConnectionHandler(handler: handler, connections: connections))
                }
            }
            .bind(unixDomainSocketPath: tempPath).get()
        do {
            guard chmod(tempPath, 0o600) == 0 else { throw ControlSocketError.io(path: path, operation: "chmod 0600", errno: errno) }
            guard rename(tempPath, path) == 0 else { throw ControlSocketError.io(path: path, operation: "rename into place", errno: errno) }
            guard stat(path, &st) == 0 else { throw ControlSocketError.io(path: path, operation: "stat", errno: errno) }
        } catch {
            try? await channel.close()
            throw error
        }
        return ControlServer(path: path, channel: channel, connections: connections, inode: UInt64(st.st_ino))
    }

    /// Serves until the task is cancelled, `close()` is called, or graceful shutdown (ServiceGroup);
    /// then closes open connections and removes the socket file if it is still this server's.
    public func run() async throws {
        defer { removeSocketFile() }
        try await serveUntilClosed(channel) { self.close() }
    }

    /// Control connections served now.
    var openConnections: Int { connections.count }

    /// Stops accepting connections and closes the open ones (`run()` then returns).
    public func close() {
        channel.close(promise: nil)
        connections.closeAll()
    }

    private func removeSocketFile() {
        var st = stat()
        if stat(path, &st) == 0, UInt64(st.st_ino) == inode { unlink(path) }
    }
}

/// The open control connections, so that stopping the server also ends them.
final class ConnectionRegistry: Sendable {
    private let state = NIOLockedValueBox<(closed: Bool, channels: [ObjectIdentifier: Channel])>((false, [:]))
    /// Connections served at once: the CLI opens one per command, so more means something loops or
    /// floods; each costs a descriptor and a task (`scripts/bench floods`: 363 held before the cap).
    static let maxConnections = 64

    enum Refusal { case closing, full }

    /// Registers an accepted connection; returns why not (and the caller closes it) when closing or full.
    func add(_ channel: Channel) -> Refusal? {
        state.withLockedValue { s in
            if s.closed { return .closing }
            if s.channels.count >= Self.maxConnections { return .full }
            s.channels[ObjectIdentifier(channel)] = channel
            return nil
        }
    }

    /// Connections registered now.
    var count: Int { state.withLockedValue { $0.channels.count } }

    func remove(_ channel: Channel) {
        _ = state.withLockedValue { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    func closeAll() {
        let open = state.withLockedValue { s in
            s.closed = true
            defer { s.channels.removeAll() }
            return Array(s.channels.values)
        }
        for c in open { c.close(promise: nil) }
    }
}

/// Feeds a connection's request lines, in order, to one task that answers them.
final class ControlConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let handler: ControlServer.Handler
    private let connections: ConnectionRegistry
    private var lines: AsyncStream<[UInt8]>.Continuation?

    init(handler: @escaping ControlServer.Handler, connections: ConnectionRegistry) {
        self.handler = handler
        self.connections = connections
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        if let refusal = connections.add(channel) {
            if refusal == .full, let line = try? ControlCodec.encodeLine(ControlResponse.failure(ControlFailure(
                code: "busy", message: "the agent already serves \(ConnectionRegistry.maxConnections) control connections: retry in a moment (is something opening them in a loop?)"))) {
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: line)), promise: nil)
            }
            context.close(promise: nil)
            return
        }
        let (stream, continuation) = AsyncStream<[UInt8]>.makeStream()
        lines = continuation
        let handler = self.handler
        Task {
            for await line in stream {
                let response: ControlResponse
                do {
                    response = await handler(try ControlCodec.decode(ControlRequest.self, from: line))
                } catch {
                    response = ControlCodec.badRequest(error)
                }
                guard let bytes = try? ControlCodec.encodeLine(response) else { break }
                // A client that went away makes this fail; nothing to do about it.
                try? await channel.writeAndFlush(ByteBuffer(bytes: bytes))
            }
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lines?.yield(Array(buffer: unwrapInboundIn(data)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        lines?.finish()
        lines = nil
        connections.remove(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        // A line over the limit or a socket error: drop the connection.
        context.close(promise: nil)
    }
}

/// The CLI side of the control socket: plain blocking calls, one request and its response.
/// Blocking on purpose (the CLI has nothing else to do); call it from a thread of its own, not from
/// Swift's cooperative pool inside a process that also serves the socket.
public struct ControlClient: Sendable {
    /// The agent's control socket.
    public let path: String
    /// How long to wait for the agent's answer (seconds).
    public let timeoutSeconds: Int

    public init(path: String = AgentConfig.defaultControlSocket, timeoutSeconds: Int = 60) {
        self.path = path
        self.timeoutSeconds = timeoutSeconds
    }

    /// Sends `request` and returns the agent's response.
    public func send(_ request: ControlRequest) throws -> ControlResponse {
        let fd = try Self.connect(path)
        defer { close(fd) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let line = try ControlCodec.encodeLine(request)
        var sent = 0
        while sent < line.count {
            let n = line.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + sent, line.count - sent, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ControlSocketError.io(path: path, operation: "send", errno: errno)
            }
            sent += n
        }
        var response: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !response.contains(0x0A) {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    throw ControlSocketError.protocolError(path: path, reason: "no answer within \(timeoutSeconds) s")
                }
                throw ControlSocketError.io(path: path, operation: "receive", errno: errno)
            }
            if n == 0 { throw ControlSocketError.protocolError(path: path, reason: "connection closed before an answer") }
            response.append(contentsOf: buffer[0..<n])
            if response.count > ControlCodec.maxLineLength {
                throw ControlSocketError.protocolError(path: path, reason: "answer longer than \(ControlCodec.maxLineLength) bytes")
            }
        }
        let first = Array(response[..<response.firstIndex(of: 0x0A)!])
        do {
            return try ControlCodec.decode(ControlResponse.self, from: first)
        } catch {
            throw ControlSocketError.protocolError(path: path, reason: "\(error)")
        }
    }

    /// Connects a stream socket to `path`; maps "nobody there" to `agentNotRunning`.
    static func connect(_ path: String) throws -> Int32 {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ControlSocketError.io(path: path, operation: "connect (path too long)", errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError.io(path: path, operation: "socket", errno: errno) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            close(fd)
            switch e {
            case ENOENT, ECONNREFUSED, ENOTDIR: throw ControlSocketError.agentNotRunning(path: path)
            case EACCES, EPERM: throw ControlSocketError.permissionDenied(path: path)
            default: throw ControlSocketError.io(path: path, operation: "connect", errno: e)
            }
        }
        return fd
    }
}
