#if canImport(Glibc)
    import Glibc
#endif

/// A netlink failure, phrased for an operator: what was attempted, the errno, and the kernel's own
/// explanation (extended ACK, NLMSGERR_ATTR_MSG) when it sent one.
public enum NetlinkError: Error, Equatable, CustomStringConvertible {
    /// A socket system call failed (socket, bind, setsockopt, sendto, recvfrom).
    case system(call: String, errno: Int32)
    /// The kernel refused `operation` (an NLMSG_ERROR with a negative code).
    case kernel(operation: String, errno: Int32, message: String?)
    /// A reply that does not parse as the protocol says it should.
    case malformed(String)
    /// No network interface of that name exists (in the socket's network namespace).
    case noSuchInterface(String)

    /// The errno carried by this error, if any.
    public var errno: Int32? {
        switch self {
        case .system(_, let e), .kernel(_, let e, _): return e
        case .noSuchInterface: return ENODEV
        case .malformed: return nil
        }
    }

    /// The kernel's extended-ACK text, if any.
    public var kernelMessage: String? {
        if case .kernel(_, _, let m) = self { return m }
        return nil
    }

    public var description: String {
        switch self {
        case .system(let call, let e):
            return "\(call) on a netlink socket failed: \(errnoText(e))\(hint(e))"
        case .kernel(let op, let e, let m):
            let detail = (m?.isEmpty == false) ? " (kernel says: \(m!))" : ""
            return "\(op) failed: \(errnoText(e))\(detail)\(hint(e))"
        case .malformed(let what):
            return "malformed netlink reply: \(what)"
        case .noSuchInterface(let name):
            return "no network interface named '\(name)': check the name with 'ip link' or create it first"
        }
    }

    private func hint(_ e: Int32) -> String {
        e == EPERM || e == EACCES ? "; this needs CAP_NET_ADMIN: run as root or grant the capability" : ""
    }
}

/// "strerror text (errno N)" for messages.
func errnoText(_ e: Int32) -> String {
    "\(String(cString: strerror(e))) (errno \(e))"
}
