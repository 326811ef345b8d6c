import Foundation
import Logging
import ServiceLifecycle
import Testing
@testable import WireMeshAgent
#if canImport(Glibc)
import Glibc
import WireMeshJoin
#endif

@Suite("ControlProtocol")
struct ControlProtocolTests {
    static let requests: [ControlRequest] = [
        .status, .peers, .tokenCreate(ttlSeconds: 3600, uses: 2), .tokenCreate(ttlSeconds: nil, uses: nil), .tokenList,
        .tokenRevoke(id: "0011223344556677"), .leave, .rotateKey, .clusterKeyRotate,
    ]

    @Test func requestsRoundTripAsOneLine() throws {
        for r in Self.requests {
            let line = try ControlCodec.encodeLine(r)
            #expect(line.last == 0x0A)
            #expect(line.dropLast().firstIndex(of: 0x0A) == nil)
            #expect(try ControlCodec.decode(ControlRequest.self, from: line) == r)
        }
        #expect(String(decoding: try ControlCodec.encodeLine(ControlRequest.tokenCreate(ttlSeconds: 60, uses: 1)), as: UTF8.self)
                == "{\"op\":\"token-create\",\"ttl_seconds\":60,\"uses\":1}\n")
    }

    @Test func responsesRoundTrip() throws {
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        let status = StatusInfo(nodeName: "n1", clusterID: "c", podCIDRs: ["10.244.1.0/24"], overlayAddress: "10.244.1.0",
                                interface: "wm0", wireGuardPublicKey: "pk=", wireGuardPort: 51820, gossipPort: 7946,
                                backend: "userspace", livePeers: 2, keyCreatedAt: date, nextKeyRotation: nil,
                                overlayAddressV6: "fd42:244:0:1::")
        let responses: [ControlResponse] = [
            .status(status),
            .peers([PeerInfo(name: "n2", state: "alive", podCIDRs: ["10.244.2.0/24"], publicKey: "k=", endpoint: "192.0.2.2:51820",
                             secondsSinceHandshake: 12)]),
            .tokenCreated(token: "wmj1.abc", info: TokenInfo(id: "00", state: .valid, createdAt: date, expiresAt: date, usesLeft: nil)),
            .tokens([]), .done("left the cluster\nbye"),
            .failure(ControlFailure(code: "unknown-token", message: "no token 00")),
        ]
        for r in responses {
            let line = try ControlCodec.encodeLine(r)
            #expect(line.dropLast().firstIndex(of: 0x0A) == nil)
            #expect(try ControlCodec.decode(ControlResponse.self, from: line) == r)
        }
        // The keys scripts rely on (`status --json`).
        let json = String(decoding: try ControlCodec.encodeLine(status), as: UTF8.self)
        for key in ["\"name\":\"n1\"", "\"pod_cidrs\":[\"10.244.1.0/24\"]", "\"public_key\":\"pk=\"", "\"interface\":\"wm0\"", "\"overlay_address_v6\":\"fd42:244:0:1::\""] {
            #expect(json.contains(key), "\(json)")
        }
    }

    @Test func aTokenIsListedFromTheClusterView() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let view = ClusterToken(id: "00aa00aa00aa00aa", createdAt: now, expiresAt: now.addingTimeInterval(60), usesLimit: 2,
                                issuedBy: ["b", "a"], revokedBy: [], used: 1)
        let info = TokenInfo(view, now: now)
        #expect(info.id == view.id && info.state == .valid && info.issuedBy == ["a", "b"] && info.revokedBy.isEmpty)
        #expect(info.usesLimit == 2 && info.usesConsumed == 1 && info.usesLeft == 1 && info.createdAt == now)
    }

    @Test func failuresCarryTheErrorTextAndAKindCode() {
        let revoked = ControlFailure(JoinError.revoked(id: "00aa"))
        #expect(revoked.code == "revoked")
        #expect(revoked.message == "join token 00aa was revoked: create a new one with 'wiremesh token create'")
        #expect(ControlFailure(JoinError.unknownToken(id: "x")).code == "unknown")
        #expect(ControlFailure(StateError.notInitialised(directory: "/d")).code == "state")
        #expect(ControlFailure(ConfigError(key: "mtu", source: "flag --mtu", message: "bad")).message == "invalid mtu in flag --mtu: bad")
        struct Other: Error {}
        #expect(ControlFailure(Other()).code == "internal")
    }

    @Test func tokenRequestErrorsAreBadInputAndOthersAreNot() {
        let unknown = ControlFailure(TokenRequestError.noSuchToken(id: "00112233aabbccdd"))
        #expect(unknown.code == "unknown-token" && unknown.isBadInput)
        #expect(unknown.message == "no token with id 00112233aabbccdd in this cluster: 'wiremesh token list' shows them")
        let uses = ControlFailure(TokenRequestError.invalidUses(0))
        #expect(uses.code == "invalid-value" && uses.isBadInput)
        #expect(uses.message.hasPrefix("--uses must be 1-65535"), "\(uses.message)")
        #expect(ControlFailure(TokenRequestError.notATokenReference(length: 60)).isBadInput)
        // Operational failures: the CLI exits 1 for these.
        struct Other: Error {}
        guard case .failure(let malformed) = ControlCodec.badRequest(Other()) else { Issue.record("not a failure"); return }
        for f in [ControlFailure(Other()), ControlFailure(StateError.notInitialised(directory: "/d")),
                  ControlFailure(JoinError.invalidRequest("this member already announces 24 unexpired tokens")), malformed] {
            #expect(!f.isBadInput, "\(f.code)")
        }
    }

    @Test func unknownOpIsABadRequest() {
        #expect(throws: DecodingError.self) { try ControlCodec.decode(ControlRequest.self, from: Array("{\"op\":\"reboot\"}".utf8)) }
    }
}

@Suite("ControlSocket")
struct ControlSocketTests {
    @Test func serverAndClientRoundTrip() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/run/wiremesh.sock"
            let server = try await ControlServer.bind(path: path) { request in
                switch request {
                case .tokenRevoke(let id): return .done("revoked \(id)")
                case .status: return .failure(ControlFailure(code: "not-ready", message: "starting"))
                default: return .tokens([])
                }
            }
            let serving = Task { try await server.run() }
            defer { serving.cancel() }

            // Root-only: the socket 0600, the directory created for it 0700, and no temporary left.
            #expect(AtomicFile.mode(of: path) == 0o600)
            #expect(AtomicFile.mode(of: dir + "/run") == 0o700)
            #expect(directoryEntries(dir + "/run") == ["wiremesh.sock"])

            let client = ControlClient(path: path, timeoutSeconds: 30)
            let answers = try await onThread {
                [try client.send(.tokenRevoke(id: "abcd")), try client.send(.status), try client.send(.tokenList)]
            }
            #expect(answers == [.done("revoked abcd"), .failure(ControlFailure(code: "not-ready", message: "starting")), .tokens([])])

            // A second agent on the same path is refused while the first serves.
            do {
                _ = try await ControlServer.bind(path: path) { _ in .done("") }
                Issue.record("second server bound the same path")
            } catch let e as ControlSocketError {
                #expect(e == .alreadyInUse(path: path))
            }

            server.close()
            try await serving.value
            #expect(AtomicFile.mode(of: path) == nil, "socket file left behind")
        }
    }

    /// A flood of idle connections (root on the node, or a loop gone wrong) is capped: the next one is
    /// told the agent is busy, and once they go a command is answered again.
    @Test func idleConnectionsAreCappedAndTheNextIsToldWhy() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            let server = try await ControlServer.bind(path: path) { _ in .done("ok") }
            let serving = Task { try await server.run() }
            defer { serving.cancel() }
            let client = ControlClient(path: path, timeoutSeconds: 10)
            let (busy, idle, last) = try await onThread { () throws -> (ControlResponse?, [Int32], String) in
                var idle: [Int32] = []
                for _ in 0..<ConnectionRegistry.maxConnections { idle.append(try ControlClient.connect(path)) }
                // Connections become active on several event loops, not in the order they were accepted:
                // a request sent before all idle ones are registered could take one's place.
                for _ in 0..<3000 where server.openConnections < ConnectionRegistry.maxConnections { usleep(20_000) }
                var busy: ControlResponse?
                var last = ""
                // Generous: on a loaded machine the server may not run for seconds (no timing is asserted).
                for _ in 0..<3000 {
                    do {
                        let r = try client.send(.status)
                        if case .failure(let f) = r, f.code == "busy" { busy = r; break }
                        last = "\(r)"
                    } catch { last = "\(error)" }
                    usleep(20_000)
                }
                if busy == nil {
                    var buf = [UInt8](repeating: 0, count: 16)
                    let states = idle.map { fd -> String in
                        if fcntl(fd, F_GETFD) < 0 { return "closed" }
                        let n = recv(fd, &buf, 16, Int32(MSG_PEEK | MSG_DONTWAIT))
                        return n == 0 ? "eof" : n > 0 ? "data" : (errno == EAGAIN ? "open" : "err\(errno)")
                    }
                    last += " idle: " + Dictionary(grouping: states, by: { $0 }).map { "\($0.key)=\($0.value.count)" }.joined(separator: ",")
                }
                return (busy, idle, last)
            }
            guard case .failure(let f)? = busy else {
                Issue.record("no busy answer with \(ConnectionRegistry.maxConnections) connections open; last answer: \(last)")
                for fd in idle { close(fd) }
                return
            }
            #expect(f.message.contains("\(ConnectionRegistry.maxConnections) control connections"))
            for fd in idle { close(fd) }
            let again = try await onThread { () throws -> ControlResponse? in
                for _ in 0..<3000 {
                    if let r = try? client.send(.status), r == .done("ok") { return r }
                    usleep(20_000)
                }
                return nil
            }
            #expect(again == .done("ok"))
            server.close()
            try await serving.value
        }
    }

    @Test func malformedLineGetsABadRequestAndTheConnectionStaysUsable() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            let server = try await ControlServer.bind(path: path) { _ in .done("ok") }
            let serving = Task { try await server.run() }
            defer { serving.cancel() }
            let lines = try await onThread { () throws -> String in
                let fd = try ControlClient.connect(path)
                defer { close(fd) }
                let payload = Array("not json\n{\"op\":\"leave\"}\n".utf8)
                _ = payload.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
                var got: [UInt8] = []
                var buf = [UInt8](repeating: 0, count: 4096)
                while got.filter({ $0 == 0x0A }).count < 2 {
                    let n = recv(fd, &buf, buf.count, 0)
                    if n <= 0 { break }
                    got += buf[0..<n]
                }
                return String(decoding: got, as: UTF8.self)
            }
            let parts = lines.split(separator: "\n").map(String.init)
            #expect(parts.count == 2)
            let first = try ControlCodec.decode(ControlResponse.self, from: Array(parts[0].utf8))
            guard case .failure(let f) = first else { Issue.record("expected a failure, got \(first)"); return }
            #expect(f.code == "bad-request")
            #expect(try ControlCodec.decode(ControlResponse.self, from: Array(parts[1].utf8)) == .done("ok"))
            server.close()
            try await serving.value
        }
    }

    @Test func closingTheServerEndsOpenConnections() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            let server = try await ControlServer.bind(path: path) { _ in .done("ok") }
            let serving = Task { try await server.run() }
            defer { serving.cancel() }
            let fd = try ControlClient.connect(path)
            defer { close(fd) }
            // One answered request proves the connection is established and registered.
            let ask = Array("{\"op\":\"status\"}\n".utf8)
            _ = ask.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            let (first, eof) = try await onThread { () -> (String, Int) in
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = recv(fd, &buf, buf.count, 0)
                let line = String(decoding: buf[0..<max(n, 0)], as: UTF8.self)
                server.close()
                // After close the server hangs up: recv sees end of stream.
                return (line, recv(fd, &buf, buf.count, 0))
            }
            #expect(first == "{\"message\":\"ok\",\"type\":\"done\"}\n")
            #expect(eof == 0)
            try await serving.value
            #expect(AtomicFile.mode(of: path) == nil)
        }
    }

    @Test func gracefulShutdownOfTheServiceGroupStopsTheServer() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            let server = try await ControlServer.bind(path: path) { _ in .done("ok") }
            let group = ServiceGroup(services: [server], logger: Logger(label: "test"))
            let running = Task { try await group.run() }
            defer { running.cancel() }
            #expect(try await onThread { try ControlClient(path: path).send(.leave) } == .done("ok"))
            await group.triggerGracefulShutdown()
            try await running.value
            #expect(AtomicFile.mode(of: path) == nil)
            #expect(throws: ControlSocketError.agentNotRunning(path: path)) { try ControlClient(path: path).send(.status) }
        }
    }

    @Test func staleSocketFromACrashIsReplaced() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            // Leave a bound-but-dead socket file behind, as a killed agent does.
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_un()
            addr.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            #expect(rc == 0)
            close(fd)
            #expect(throws: ControlSocketError.agentNotRunning(path: path)) { try ControlClient(path: path).send(.status) }

            let server = try await ControlServer.bind(path: path) { _ in .done("fresh") }
            let serving = Task { try await server.run() }
            defer { serving.cancel() }
            let answer = try await onThread { try ControlClient(path: path).send(.status) }
            #expect(answer == .done("fresh"))
            server.close()
            try await serving.value
        }
    }

    @Test func aRegularFileAtTheSocketPathIsNotReplaced() async throws {
        try await withTemporaryDirectory { (dir: String) async throws in
            let path = dir + "/s.sock"
            try AtomicFile.write("important", to: path, mode: 0o644)
            do {
                _ = try await ControlServer.bind(path: path) { _ in .done("") }
                Issue.record("bound over a regular file")
            } catch let e as ControlSocketError {
                #expect(e == .notASocket(path: path))
            }
            #expect(fileText(path) == "important")
        }
    }

    @Test func missingSocketSaysTheAgentIsNotRunning() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/nothing.sock"
            do {
                _ = try ControlClient(path: path).send(.status)
                Issue.record("send succeeded without an agent")
            } catch let e as ControlSocketError {
                #expect(e == .agentNotRunning(path: path))
                #expect(e.description == "wiremesh agent is not running (no socket at \(path)): start it with 'systemctl start wiremesh' or 'wiremesh agent'")
            }
        }
    }
}

@Suite("SystemdNotify")
struct SystemdNotifyTests {
    /// Binds a datagram socket like systemd's notify socket and returns (fd, path-or-name).
    func listen(_ path: String, abstract: Bool) -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if abstract { bytes[0] = 0 }
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: bytes) }
        let len = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        precondition(rc == 0, "bind failed: \(String(cString: strerror(errno)))")
        return fd
    }

    func receive(_ fd: Int32) -> String {
        var buf = [UInt8](repeating: 0, count: 512)
        let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
        return n > 0 ? String(decoding: buf[0..<n], as: UTF8.self) : ""
    }

    @Test func sendsReadyToThePathSocket() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/notify"
            let fd = listen(path, abstract: false)
            defer { close(fd) }
            #expect(try SystemdNotify.notify("READY=1\nSTATUS=mesh up", environment: ["NOTIFY_SOCKET": path]))
            #expect(receive(fd) == "READY=1\nSTATUS=mesh up")
        }
    }

    @Test func sendsToAnAbstractSocket() throws {
        let name = "@wmt-notify-\(UInt32.random(in: 0...UInt32.max))"
        let fd = listen(name, abstract: true)
        defer { close(fd) }
        try SystemdNotify.send("STOPPING=1", to: name)
        #expect(receive(fd) == "STOPPING=1")
    }

    @Test func withoutNotifySocketNothingIsSent() throws {
        #expect(try SystemdNotify.notify("READY=1", environment: [:]) == false)
        #expect(throws: ControlSocketError.self) { try SystemdNotify.send("READY=1", to: "/nonexistent-dir-wmt/notify") }
    }
}
