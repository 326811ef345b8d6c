import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Why a child process could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    public let description: String
}

/// Starts `argv` (argv[0] a path) with stdin from /dev/null and stdout/stderr appended to files
/// (stderr nil: this process's own), and returns its pid (the caller reaps it: `waitForExit`).
///
/// posix_spawn with an empty signal mask and default handlers rather than Foundation's `Process`:
/// the test runner blocks SIGTERM, SIGCHLD and others, children inherit a blocked mask, and then an
/// e2e script's tcpdump ignored TERM, `podman exec` hung, and agents did not stop on SIGTERM.
public func spawn(_ argv: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                  stdout: String, stderr: String?) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, stdout, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    if let stderr { posix_spawn_file_actions_addopen(&actions, 2, stderr, O_WRONLY | O_CREAT | O_APPEND, 0o644) }
    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var empty = sigset_t(), all = sigset_t()
    sigemptyset(&empty)
    sigfillset(&all)
    posix_spawnattr_setsigmask(&attributes, &empty)
    posix_spawnattr_setsigdefault(&attributes, &all)
    posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    func cStrings(_ list: [String]) -> [UnsafeMutablePointer<CChar>?] { list.map { strdup($0) } + [nil] }
    let cArgv = cStrings(argv), cEnv = cStrings(environment.map { "\($0.key)=\($0.value)" })
    defer { (cArgv + cEnv).forEach { free($0) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attributes, cArgv, cEnv)
    guard rc == 0 else { throw SpawnError(description: "cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
    return pid
}

/// Waits for `pid` (blocking) and returns its exit status, or 128 + the signal that ended it.
public func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED / WEXITSTATUS are macros: decoded by hand.
    return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
}

/// `spawn` and `waitForExit` in one (blocking: call it through `onThread`).
public func spawnAndWait(_ argv: [String], environment: [String: String] = ProcessInfo.processInfo.environment,
                         stdout: String, stderr: String?) throws -> Int32 {
    waitForExit(try spawn(argv, environment: environment, stdout: stdout, stderr: stderr))
}
