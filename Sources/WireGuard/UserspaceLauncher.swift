#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a userspace WireGuard implementation could not be started.
public struct UserspaceLaunchError: Error, CustomStringConvertible {
    public let description: String
}

/// Runs a userspace WireGuard implementation (default `wireguard-go`) in the foreground as a child
/// of this process, for hosts whose kernel has no WireGuard.
///
/// The child creates its TUN device in the network namespace this process is in and serves UAPI on
/// `socketDirectory/IFACE.sock`. The launcher owns its lifetime: `stop()` sends SIGTERM and reaps it.
public final class UserspaceLauncher: @unchecked Sendable {
    /// The interface the child serves.
    public let interface: String
    /// Process id of the child.
    public let pid: pid_t
    private let backend: UserspaceBackend
    private var reaped = false
    private var detached = false
    private let lock = PthreadLock()

    /// Starts `executable -f IFACE` (looked up in PATH unless it contains a '/'), then waits up to
    /// `timeout` seconds until the UAPI socket answers `get=1`.
    ///
    /// `wrapper` is prepended to the command line (e.g. `["ip", "netns", "exec", "ns1"]` in tests,
    /// which need the child in another namespace). The child's stdout and stderr go to `logFile`
    /// (appended) when given, else to this process's. Throws if the binary cannot be started, exits
    /// early, or never answers; the child is killed in those cases.
    public init(interface: String, executable: String = "wireguard-go", wrapper: [String] = [],
                socketDirectory: String = UserspaceBackend.defaultSocketDirectory,
                logFile: String? = nil, timeout: Double = 10) throws {
        guard isValidInterfaceName(interface) else {
            throw UserspaceLaunchError(description: "invalid interface name '\(interface)': 1-15 characters, no '/' or spaces")
        }
        self.interface = interface
        self.backend = UserspaceBackend(socketDirectory: socketDirectory)
        let argv = wrapper + [executable, "-f", interface]
        pid = try spawn(argv, logFile: logFile)

        let deadline = monotonicSeconds() + timeout
        while true {
            if let status = tryReap() {
                // Its own words name the cause (e.g. TUN permission denied), which a guess cannot.
                if let said = logFile.flatMap({ Self.lastError(inLog: $0) }) {
                    throw UserspaceLaunchError(description: "\(executable) for '\(interface)' exited early (\(status)): it said: \(said)")
                }
                throw UserspaceLaunchError(description: "\(executable) for '\(interface)' exited early (\(status)); is it installed and is /dev/net/tun available?")
            }
            if backend.hasSocket(for: interface), (try? backend.device(named: interface)) != nil { break }
            if monotonicSeconds() > deadline {
                stop()
                throw UserspaceLaunchError(description: "\(executable) for '\(interface)' did not answer on \(backend.socketPath(for: interface)) within \(Int(timeout)) s")
            }
            usleep(20_000)
        }
    }

    deinit { stop() }

    /// The last error line a wireguard-go log holds ("ERROR: ..." or the last line), at most 300 characters.
    static func lastError(inLog path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // The tail is enough: the child wrote its last words just now.
        let size = lseek(fd, 0, SEEK_END)
        let start = max(0, size - 4096)
        var buf = [UInt8](repeating: 0, count: Int(size - start))
        guard !buf.isEmpty, buf.withUnsafeMutableBytes({ pread(fd, $0.baseAddress, $0.count, start) }) > 0 else { return nil }
        let lines = String(decoding: buf, as: UTF8.self).split(separator: "\n").map { String($0.drop(while: { $0 == " " || $0 == "\t" || $0 == "\r" })) }.filter { !$0.isEmpty }
        guard let line = lines.last(where: { $0.hasPrefix("ERROR") }) ?? lines.last else { return nil }
        return String(line.prefix(300))
    }

    /// The backend that talks to this child.
    public var wireGuardBackend: UserspaceBackend { backend }

    /// Sends SIGTERM and waits for the child to exit (idempotent). The child removes its socket
    /// and TUN device on the way out.
    public func stop() {
        lock.withLock {
            guard !reaped, !detached else { return }
            kill(pid, SIGTERM)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            reaped = true
        }
    }

    /// Lets the child outlive this launcher (and this process): the agent uses it so a restart of
    /// the agent leaves the interface, its peers and the traffic alone. The child runs in its own
    /// process group, so a Ctrl-C meant for the agent does not reach it either.
    public func detach() {
        lock.withLock { detached = true }
    }

    /// How the child exited, reaping it, or nil while it runs. A detached child that dies while this
    /// process lives stays a zombie until someone asks.
    public func reapIfExited() -> String? { tryReap() }

    /// Non-blocking check: a description of the exit status if the child has exited.
    private func tryReap() -> String? {
        lock.withLock {
            guard !reaped else { return "already stopped" }
            var status: Int32 = 0
            let r = waitpid(pid, &status, WNOHANG)
            guard r == pid else { return nil }
            reaped = true
            let code = (status >> 8) & 0xff, signal = status & 0x7f
            return signal == 0 ? "exit code \(code)" : "signal \(signal)"
        }
    }
}

/// A minimal pthread mutex (the launcher is touched from deinit and callers' threads).
private final class PthreadLock: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    deinit { pthread_mutex_destroy(&m) }
    func withLock<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return body()
    }
}

/// posix_spawnp(3): starts argv[0] from PATH with the given arguments and this environment,
/// stdout and stderr appended to `logFile` if given.
private func spawn(_ argv: [String], logFile: String?) throws -> pid_t {
    var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) }
    cArgs.append(nil)
    defer { for p in cArgs { free(p) } }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let logFile {
        posix_spawn_file_actions_addopen(&actions, 1, logFile, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
    }
    // Nothing else of ours goes along: the child outlives this process, and an agent that restarts a
    // crashed wireguard-go holds its gossip, line-port and control sockets (NIO opens them without
    // close-on-exec). Inherited, they outlived the agent and the next agent could not bind its ports.
    _ = closeFromAction.map { $0(&actions, 3) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    // Own process group: terminal signals for the parent do not stop the data path.
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attributes, 0)
    var pid: pid_t = 0
    let rc = posix_spawnp(&pid, argv[0], &actions, &attributes, cArgs, environ)
    guard rc == 0 else {
        throw UserspaceLaunchError(description: "cannot start '\(argv[0])': \(String(cString: strerror(rc))); install wireguard-go or give its path")
    }
    return pid
}

private func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// posix_spawn_file_actions_addclosefrom_np(3) (glibc 2.34+: closes every descriptor from the given
/// one up in the child), looked up at run time because the Glibc module does not export it; nil on a
/// C library without it.
private let closeFromAction: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
}()
