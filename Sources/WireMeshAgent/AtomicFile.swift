#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file of the state directory could not be read or written.
public struct FileError: Error, Equatable, CustomStringConvertible {
    /// The file (or directory) the operation was about.
    public let path: String
    /// What was being done, e.g. "write", "rename", "read".
    public let operation: String
    /// The errno value the system call failed with.
    public let errno: Int32

    public init(path: String, operation: String, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "cannot \(operation) \(path): \(String(cString: strerror(errno)))"
    }
}

/// Atomic, durable file writes: a reader (or a crash) sees either the old file or the new one,
/// never a mix. This is what keeps the WireGuard key and the cluster keyring intact across a
/// power cut, which is why every state file goes through it.
///
/// Steps: create a unique temporary file in the same directory (same filesystem, so `rename` is
/// atomic) with the final mode, write everything, `fsync` it, `rename` it over the target, then
/// `fsync` the directory so the rename itself is durable. Any failure removes the temporary file.
public enum AtomicFile {
    /// Points in `write` where tests can inject a failure (simulating a crash or an I/O error).
    enum Step: Sendable { case afterPartialWrite, beforeRename }

    /// Writes `bytes` to `path` atomically with permission bits `mode` (e.g. 0o600 for secrets).
    ///
    /// The mode is set with `fchmod` on the temporary file before any byte is written, so a secret is
    /// never readable by others, whatever the process umask.
    public static func write(_ bytes: [UInt8], to path: String, mode: mode_t) throws {
        try write(bytes, to: path, mode: mode, failAt: nil)
    }

    /// Writes UTF-8 text atomically (see `write(_:to:mode:)`).
    public static func write(_ text: String, to path: String, mode: mode_t) throws {
        try write(Array(text.utf8), to: path, mode: mode, failAt: nil)
    }

    static func write(_ bytes: [UInt8], to path: String, mode: mode_t, failAt: Step?) throws {
        let directory = parentDirectory(of: path)
        let base = path.split(separator: "/").last.map(String.init) ?? path
        var template = Array("\(directory)/.\(base).tmp-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw FileError(path: path, operation: "create a temporary file for", errno: errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        let tempPath = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        var committed = false
        defer {
            if !committed { unlink(tempPath) }
        }
        do {
            defer { close(fd) }
            // Failures name the file being replaced, not the temporary one (which is removed): a full or
            // read-only disk reads "cannot write a new version of …/tokens.json: No space left on device".
            guard fchmod(fd, mode) == 0 else { throw FileError(path: path, operation: "set the mode of a new version of", errno: errno) }
            // A test-injected failure stops after half the bytes, like a full disk would.
            let limit = failAt == .afterPartialWrite ? bytes.count / 2 : bytes.count
            var written = 0
            while written < limit {
                let n = bytes.withUnsafeBytes { buf in Glibc.write(fd, buf.baseAddress! + written, limit - written) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileError(path: path, operation: "write a new version of", errno: errno)
                }
                written += n
            }
            if failAt == .afterPartialWrite {
                throw FileError(path: path, operation: "write a new version of (injected failure)", errno: EIO)
            }
            guard fsync(fd) == 0 else { throw FileError(path: path, operation: "fsync a new version of", errno: errno) }
        }
        if failAt == .beforeRename {
            throw FileError(path: path, operation: "rename (injected failure) over", errno: EIO)
        }
        guard rename(tempPath, path) == 0 else { throw FileError(path: path, operation: "rename a new version over", errno: errno) }
        committed = true
        try syncDirectory(directory)
    }

    /// Reads the whole file, or returns nil when it does not exist (any other error throws).
    public static func readIfExists(_ path: String) throws -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw FileError(path: path, operation: "open", errno: errno)
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError(path: path, operation: "read", errno: errno)
            }
            if n == 0 { break }
            out.append(contentsOf: buffer[0..<n])
        }
        return out
    }

    /// Reads the whole file; a missing file is an error naming it.
    public static func read(_ path: String) throws -> [UInt8] {
        guard let bytes = try readIfExists(path) else { throw FileError(path: path, operation: "read", errno: ENOENT) }
        return bytes
    }

    /// Removes `path` durably (no error if it is already gone).
    public static func remove(_ path: String) throws {
        if unlink(path) != 0 && errno != ENOENT { throw FileError(path: path, operation: "remove", errno: errno) }
        try syncDirectory(parentDirectory(of: path))
    }

    /// The permission bits of `path` (e.g. 0o600), or nil when it does not exist.
    public static func mode(of path: String) -> mode_t? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return st.st_mode & 0o7777
    }

    /// Creates `path` (and missing parents) as directories with `mode`; an existing directory gets
    /// its mode tightened to `mode` so a pre-created state directory is not left world-readable.
    public static func makeDirectory(_ path: String, mode: mode_t) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw FileError(path: path, operation: "use as a directory", errno: ENOTDIR) }
            if st.st_mode & 0o7777 != mode, chmod(path, mode) != 0 {
                throw FileError(path: path, operation: "set the mode of", errno: errno)
            }
            return
        }
        let parent = parentDirectory(of: path)
        if parent != path && parent != "/" && parent != "." { try makeParents(parent) }
        guard mkdir(path, mode) == 0 || errno == EEXIST else { throw FileError(path: path, operation: "create directory", errno: errno) }
        // mkdir applies the umask; set the exact mode explicitly.
        guard chmod(path, mode) == 0 else { throw FileError(path: path, operation: "set the mode of", errno: errno) }
    }

    /// Creates missing parent directories 0755 (like `mkdir -p`), leaving existing ones alone.
    private static func makeParents(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 { return }
        let parent = parentDirectory(of: path)
        if parent != path && parent != "/" && parent != "." { try makeParents(parent) }
        guard mkdir(path, 0o755) == 0 || errno == EEXIST else { throw FileError(path: path, operation: "create directory", errno: errno) }
    }

    static func syncDirectory(_ directory: String) throws {
        let dfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw FileError(path: directory, operation: "open directory", errno: errno) }
        defer { close(dfd) }
        guard fsync(dfd) == 0 else { throw FileError(path: directory, operation: "fsync directory", errno: errno) }
    }

    /// The directory part of `path` ("." for a bare name).
    static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }
}
