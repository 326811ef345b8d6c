import CMnl

#if canImport(Glibc)
    import Glibc
#endif

/// Runs `body` on a dedicated thread that first joins the network namespace at `path` (setns(2)),
/// and returns its result. Sockets created inside `body` live in that namespace; the calling thread
/// (and the rest of the process) stays where it was, because a namespace switch is per thread.
public func runInNetworkNamespace<T>(path: String, _ body: () throws -> T) throws -> T {
    try withoutActuallyEscaping(body) { body in
        let job = NamespaceJob<T>(path: path, body: body)
        let unmanaged = Unmanaged.passRetained(job)
        var thread = pthread_t()
        let rc = pthread_create(
            &thread, nil,
            { raw in
                let job = Unmanaged<NamespaceJobBase>.fromOpaque(raw!).takeRetainedValue()
                job.run()
                return nil
            }, unmanaged.toOpaque())
        guard rc == 0 else {
            unmanaged.release()
            throw NetlinkError.system(call: "pthread_create", errno: rc)
        }
        pthread_join(thread, nil)
        return try job.result!.get()
    }
}

private class NamespaceJobBase {
    func run() {}
}

private final class NamespaceJob<T>: NamespaceJobBase {
    let path: String
    let body: () throws -> T
    var result: Result<T, Error>?

    init(path: String, body: @escaping () throws -> T) {
        self.path = path
        self.body = body
    }

    override func run() {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            result = .failure(NetlinkError.system(call: "open network namespace \(path)", errno: errno))
            return
        }
        defer { close(fd) }
        guard wm_setns(fd, wm_clone_newnet()) == 0 else {
            result = .failure(NetlinkError.system(call: "setns \(path)", errno: errno))
            return
        }
        result = Result { try body() }
    }
}
