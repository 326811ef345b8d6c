#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation

/// An exclusive lock on a state directory, held by the agent for its whole life.
///
/// Two agents on one state directory would both announce the node and move its routes back and
/// forth. `flock(2)` on `agent.lock` inside the directory: the kernel drops the lock when the process
/// ends however it ends (kill -9 included), so a stale lock file never blocks a restart. The file
/// holds the owner's pid, only to name it in the error.
public final class StateLock: @unchecked Sendable {
    /// The lock file's name inside the state directory.
    public static let fileName = "agent.lock"

    private let fd: Int32

    private init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Takes the lock of `directory` (which must exist) or throws `StateError.inUse` naming the pid
    /// that holds it.
    public static func acquire(directory: String) throws -> StateLock {
        let path = directory + "/" + fileName
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StateError.io(FileError(path: path, operation: "open", errno: errno)) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let err = errno
            let holder = readPID(fd)
            close(fd)
            if err == EWOULDBLOCK { throw StateError.inUse(directory: directory, pid: holder) }
            throw StateError.io(FileError(path: path, operation: "lock", errno: err))
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return StateLock(fd: fd)
    }

    /// The pid holding the lock of `directory`, or nil when no process holds it (without creating the
    /// lock file: `init`/`join` must leave a directory they refuse untouched).
    public static func holder(directory: String) -> Int32? {
        let fd = open(directory + "/" + fileName, O_RDWR | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) != 0, errno == EWOULDBLOCK else {
            _ = flock(fd, LOCK_UN)
            return nil
        }
        return readPID(fd) ?? 0
    }

    private static func readPID(_ fd: Int32) -> Int32? {
        var buf = [UInt8](repeating: 0, count: 16)
        let n = buf.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        let text = String(decoding: buf[0..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return Int32(text)
    }
}
