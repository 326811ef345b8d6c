#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import LinePort
import NIOCore
import NIOPosix
import Testing

/// The NIO client against local servers on 127.0.0.1 (ephemeral ports: suites may run in parallel).
@Suite("Line port client on NIO")
struct LineClientTests {
    /// A raw TCP server on an ephemeral port whose connections `reply` answers (nil: never).
    final class RawServer: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let reply: @Sendable ([UInt8]) -> [UInt8]?
        let closeAfterReply: Bool
        init(closeAfterReply: Bool, reply: @escaping @Sendable ([UInt8]) -> [UInt8]?) {
            self.reply = reply
            self.closeAfterReply = closeAfterReply
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard let out = reply(Array(buffer: unwrapInboundIn(data))) else { return }
            let done = context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: out)))
            if closeAfterReply { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
        }
    }

    @discardableResult
    static func withRawServer<R>(closeAfterReply: Bool = true, reply: @escaping @Sendable ([UInt8]) -> [UInt8]?,
                                 _ body: (Endpoint) async throws -> R) async throws -> R {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(RawServer(closeAfterReply: closeAfterReply, reply: reply))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        do {
            let result = try await body(Endpoint(address: try IPAddress("127.0.0.1"), port: UInt16(server.localAddress!.port!)))
            try await server.close()
            return result
        } catch {
            try? await server.close()
            throw error
        }
    }

    @Test func aRequestReachesTheHandlerDecodedAndItsReplyComesBack() async throws {
        let server = try await LineServer.bind(Endpoint(address: try IPAddress("127.0.0.1"), port: 0)) { request in
            guard case .rotation(let m) = request else { return .refused(.malformed("expected a rotation")) }
            return .rotated(node: "peer-of-\(m.node)")
        }
        let task = Task { try await server.run() }
        defer { task.cancel() }
        let endpoint = Endpoint(address: try IPAddress("127.0.0.1"), port: UInt16(try #require(server.localPort)))
        let message = RotationMessage(phase: .prepare, node: "a", oldKey: .generatePrivate(), newKey: .generatePrivate(),
                                      issuedAt: 1, identity: .generate())
        // Generous timeouts: this is about what comes back, not how fast on a loaded machine.
        #expect(try await LineClient.exchange(.rotation(message), with: endpoint, timeout: .seconds(60)) == .rotated(node: "peer-of-a"))
        // A line that is no request is refused by the server itself.
        let raw = try await LineClient.exchange(line: Array("hello\n".utf8), with: endpoint, timeout: .seconds(60))
        guard case .refused(.malformed) = try LineReply.decode(line: raw) else { Issue.record("not refused"); return }
    }

    @Test func aSilentMemberTimesOut() async throws {
        try await Self.withRawServer(reply: { _ in nil }) { endpoint in
            let started = ContinuousClock.now
            await #expect(throws: LinePortError.self) {
                _ = try await LineClient.exchange(line: Array("x\n".utf8), with: endpoint, timeout: .milliseconds(300))
            }
            let took = ContinuousClock.now - started
            // Not before the timeout; the upper bound only says "did not hang" (no timing claim).
            #expect(took >= .milliseconds(250) && took < .seconds(60), "took \(took)")
        }
    }

    @Test func aReplyOverOneMebibyteIsRefused() async throws {
        let big = [UInt8](repeating: UInt8(ascii: "a"), count: LineReply.maxLength + 10)
        try await Self.withRawServer(closeAfterReply: false, reply: { _ in big }) { endpoint in
            do {
                _ = try await LineClient.exchange(line: Array("x\n".utf8), with: endpoint, timeout: .seconds(60))
                Issue.record("an oversized reply was accepted")
            } catch let error as LinePortError {
                #expect(error.description.contains("more than \(LineReply.maxLength) bytes"), "\(error)")
            }
        }
    }

    @Test func theFirstLineIsTheReplyAndAnUnterminatedOneCounts() async throws {
        try await Self.withRawServer(reply: { line in Array("got ".utf8) + line + Array("\nextra\n".utf8) }) { endpoint in
            let got = try await LineClient.exchange(line: Array("ping\n".utf8), with: endpoint, timeout: .seconds(60))
            #expect(got == Array("got ping".utf8))
        }
        try await Self.withRawServer(reply: { _ in Array("no newline".utf8) }) { endpoint in
            let got = try await LineClient.exchange(line: Array("ping\n".utf8), with: endpoint, timeout: .seconds(60))
            #expect(got == Array("no newline".utf8))
        }
        try await Self.withRawServer(reply: { _ in [] }) { endpoint in
            await #expect(throws: LinePortError.self, "closed without an answer") {
                _ = try await LineClient.exchange(line: Array("ping\n".utf8), with: endpoint, timeout: .seconds(60))
            }
        }
    }

    @Test func nobodyListeningIsUnreachable() async throws {
        // A port bound but not listening, held for the whole test: connections to it are refused, and
        // no other test running in parallel can take it meanwhile (a port merely closed again could be).
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &sa) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        #expect(bound)
        let port = UInt16(bigEndian: sa.sin_port)
        do {
            _ = try await LineClient.exchange(line: Array("x\n".utf8), with: Endpoint(address: try IPAddress("127.0.0.1"), port: port),
                                              timeout: .seconds(2))
            Issue.record("connected to a closed port")
        } catch let error as LinePortError {
            #expect(error.description.hasPrefix("cannot reach cluster member 127.0.0.1:\(port)"), "\(error)")
        }
    }

    @Test func manyExchangesAtOnceNeedNoThreadEach() async throws {
        try await Self.withRawServer(reply: { $0 }) { endpoint in
            let replies = try await withThrowingTaskGroup(of: [UInt8].self) { group in
                for i in 0..<200 { group.addTask { try await LineClient.exchange(line: Array("\(i)\n".utf8), with: endpoint, timeout: .seconds(60)) } }
                return try await group.reduce(into: Set<[UInt8]>()) { $0.insert($1) }
            }
            #expect(replies.count == 200)
        }
    }
}
