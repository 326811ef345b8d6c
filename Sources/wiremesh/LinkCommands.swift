import ArgumentParser
import IPNetwork
import Netlink

#if canImport(Glibc)
    import Glibc
#endif

// `wiremesh link …` and `wiremesh route …`: thin shells over the Netlink module (rtnetlink).
// Exit codes: 1 when the system refuses (missing interface, no permission, kernel error),
// `ExitStatus.usage` (2) for bad input (malformed CIDR, MTU, interface name, conflicting flags).

/// Prints `message` and returns the exit code to throw.
private func failure(_ message: String, code: Int32 = 1) -> ExitCode {
    printError(message)
    return ExitCode(code)
}

/// Runs `body`, turning netlink errors into one line on stderr and the right exit code.
private func withNetlink<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let e as NetlinkInputError {
        throw failure("\(e)", code: ExitStatus.usage)
    } catch let e as NetlinkError {
        throw failure("\(e)")
    }
}

private func parsePrefixes(_ texts: [String], what: String) throws -> [IPPrefix] {
    try texts.map { text in
        do { return try IPPrefix(text) } catch { throw failure("\(what): \(error)", code: ExitStatus.usage) }
    }
}

private func parseMTU(_ text: String?) throws -> UInt32? {
    guard let text else { return nil }
    guard let mtu = UInt32(text), (68...65535).contains(mtu) else {
        throw failure("invalid MTU '\(text)': expected a number from 68 to 65535", code: ExitStatus.usage)
    }
    return mtu
}

private func checkName(_ name: String) throws {
    try withNetlink { try RouteNetlink.validateInterfaceName(name) }
}

struct LinkCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "link", abstract: "Create, change and delete network interfaces (rtnetlink).",
        subcommands: [LinkAdd.self, LinkSet.self, LinkDel.self])
}

struct LinkAdd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "add", abstract: "Create a kernel WireGuard interface, optionally with MTU, addresses and up.")

    @Argument(help: "Interface name (1-15 characters).") var iface: String
    @Option(help: "MTU in bytes.") var mtu: String?
    @Option(name: .customLong("address"), help: "Address with prefix length, e.g. 10.99.0.1/24 (repeatable).")
    var addresses: [String] = []
    @Flag(help: "Bring the interface up.") var up = false

    func run() throws {
        try checkName(iface)
        let mtu = try parseMTU(mtu)
        let prefixes = try parsePrefixes(addresses, what: "--address")
        let rt = try withNetlink { try RouteNetlink() }
        do {
            try rt.createLink(name: iface, kind: "wireguard", mtu: mtu)
        } catch let e as NetlinkError where e.errno == EOPNOTSUPP {
            throw failure(
                "cannot create WireGuard interface '\(iface)': the kernel has no WireGuard support"
                    + " (\(e.kernelMessage ?? "unknown device type")); load it with 'modprobe wireguard'"
                    + " or use the userspace backend (wireguard-go \(iface))")
        } catch let e as NetlinkError where e.errno == EEXIST {
            throw failure(
                "interface '\(iface)' already exists: delete it with 'wiremesh link del \(iface)'"
                    + " or change it with 'wiremesh link set \(iface)'")
        } catch let e as NetlinkError {
            throw failure("\(e)")
        }
        // Leave nothing half-made: a failure after creation removes the new interface again.
        do {
            for p in prefixes { try rt.addAddress(p, interface: iface) }
            if up { try rt.setLink(name: iface, up: true) }
        } catch {
            try? rt.deleteLink(name: iface)
            throw failure("\(error) (interface '\(iface)' was removed again)")
        }
    }
}

struct LinkSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set", abstract: "Change MTU, add addresses, bring up/down any existing interface.")

    @Argument(help: "Interface name.") var iface: String
    @Option(help: "MTU in bytes.") var mtu: String?
    @Option(name: .customLong("address"), help: "Address with prefix length to add (repeatable).")
    var addresses: [String] = []
    @Flag(help: "Bring the interface up.") var up = false
    @Flag(help: "Bring the interface down.") var down = false

    func run() throws {
        try checkName(iface)
        if up && down { throw failure("--up and --down exclude each other", code: ExitStatus.usage) }
        let mtu = try parseMTU(mtu)
        let prefixes = try parsePrefixes(addresses, what: "--address")
        try withNetlink {
            let rt = try RouteNetlink()
            if mtu != nil || up || down { try rt.setLink(name: iface, mtu: mtu, up: up ? true : (down ? false : nil)) }
            for p in prefixes { try rt.addAddress(p, interface: iface) }
        }
    }
}

struct LinkDel: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete an interface.")

    @Argument(help: "Interface name.") var iface: String

    func run() throws {
        try checkName(iface)
        try withNetlink { try RouteNetlink().deleteLink(name: iface) }
    }
}

struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Add, delete and list wiremesh's own routes (tagged with route protocol \(WireMeshRouteProtocol)).",
        subcommands: [RouteAdd.self, RouteDel.self, RouteList.self])
}

struct RouteAdd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "add", abstract: "Route a prefix into an interface.")

    @Argument(help: "Destination prefix, e.g. 10.244.0.0/16.") var prefix: String
    @Option(help: "Output interface.") var dev: String
    @Flag(help: "Overwrite an existing route to the same prefix instead of failing.") var replace = false

    func run() throws {
        let dst = try parsePrefixes([prefix], what: "route prefix")[0]
        try checkName(dev)
        try withNetlink {
            let rt = try RouteNetlink()
            let route = Route(destination: dst, interfaceIndex: try rt.interfaceIndex(named: dev))
            do {
                if replace { try rt.replaceRoute(route) } else { try rt.addRoute(route) }
            } catch let e as NetlinkError where e.errno == EEXIST {
                throw failure("a route to \(dst.network) already exists: remove it first or use --replace")
            }
        }
    }
}

struct RouteDel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "del", abstract: "Delete a wiremesh route.",
        discussion: "Without --dev, every wiremesh route to the prefix goes, the fail-closed 'unreachable' backstop included.")

    @Argument(help: "Destination prefix.") var prefix: String
    @Option(help: "Output interface (default: every wiremesh route to the prefix).") var dev: String?

    func run() throws {
        let dst = try parsePrefixes([prefix], what: "route prefix")[0]
        if let dev { try checkName(dev) }
        try withNetlink {
            let rt = try RouteNetlink()
            let routes: [Route]
            if let dev {
                routes = [Route(destination: dst, interfaceIndex: try rt.interfaceIndex(named: dev))]
            } else {
                routes = try rt.routes().filter { $0.destination == dst.network }
            }
            guard !routes.isEmpty else { throw failure("no wiremesh route to \(dst.network): see 'wiremesh route list'") }
            for route in routes {
                do {
                    try rt.deleteRoute(route)
                } catch let e as NetlinkError where e.errno == ESRCH {
                    throw failure("no wiremesh route to \(dst.network) on '\(dev ?? "?")': see 'wiremesh route list'")
                }
            }
        }
    }
}

struct RouteList: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list", abstract: "List the routes wiremesh installed (and only those).")

    @Flag(help: "Print a JSON array.") var json = false

    func run() throws {
        let (routes, names) = try withNetlink { () -> ([Route], [Int32: String]) in
            let rt = try RouteNetlink()
            let routes = try rt.routes()
            let names = Dictionary(try rt.links().map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
            return (routes, names)
        }
        if json {
            let items = routes.map { r -> String in
                var fields = [
                    "\"destination\":\"\(r.destination)\"", "\"type\":\"\(r.type)\"", "\"table\":\(r.table)",
                    "\"protocol\":\(r.routeProtocol)",
                ]
                if let i = r.interfaceIndex { fields.append("\"dev\":\(jsonString(names[i] ?? "\(i)"))") }
                if let g = r.gateway { fields.append("\"gateway\":\"\(g)\"") }
                if let m = r.metric { fields.append("\"metric\":\(m)") }
                return "{" + fields.joined(separator: ",") + "}"
            }
            print("[" + items.joined(separator: ",") + "]")
        } else {
            for r in routes {
                var line = r.type == .unicast ? "\(r.destination)" : "\(r.type) \(r.destination)"
                if let g = r.gateway { line += " via \(g)" }
                if let i = r.interfaceIndex { line += " dev \(names[i] ?? "ifindex \(i)")" }
                if r.table != 254 { line += " table \(r.table)" }
                if let m = r.metric { line += " metric \(m)" }
                print(line)
            }
        }
    }
}

/// A JSON string literal for `s` (interface names are plain ASCII, but never trust that).
private func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case _ where u.value < 0x20: out += "\\u00" + (u.value < 0x10 ? "0" : "") + String(u.value, radix: 16)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}
