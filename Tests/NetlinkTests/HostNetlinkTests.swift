import Foundation
import IPNetwork
import Netlink
import Testing
import WireGuard
import WireGuardKernel

#if canImport(Glibc)
    import Glibc
#endif

/// Real netlink against the host kernel, inside network namespaces each test creates and removes.
@Suite struct HostNetlinkTests {
    /// The host kernel of this project's CI has no WireGuard: resolving the family must say so.
    @Test func kernelWithoutWireGuardReportsMissingModule() throws {
        if (try? KernelBackend()) != nil {
            print("skipped: this kernel has WireGuard loaded; the missing-module path cannot be shown here")
            return
        }
        #expect {
            _ = try KernelBackend()
        } throws: { error in
            guard case WireGuardError.kernelModuleMissing = error else { return false }
            return "\(error)".contains("userspace backend")
        }
        // Also inside a fresh namespace (the family table is global, the socket is not).
        let ns = try TestNamespace()
        defer { ns.remove() }
        #expect(throws: WireGuardError.self) { _ = try KernelBackend(networkNamespacePath: ns.path) }
    }

    @Test func resolvesTheGenericNetlinkControlFamily() throws {
        let socket = try NetlinkSocket(.generic)
        #expect(try GenericNetlink.resolveFamily("nlctrl", on: socket) == 0x10)
        #expect {
            _ = try GenericNetlink.resolveFamily("wmnosuchfamily", on: socket)
        } throws: { ($0 as? NetlinkError)?.errno == ENOENT }
        // The socket stays usable after an error reply.
        #expect(try GenericNetlink.resolveFamily("nlctrl", on: socket) == 0x10)
    }

    @Test func linkLifecycleInNamespace() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        let rt = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: ns.path))
        try rt.createLink(name: "wmv0", kind: "veth", mtu: 1450)
        let shown = try jsonArray(try ns.ip("-j", "-d", "link", "show", "dev", "wmv0"))
        #expect(shown.first?["mtu"] as? Int == 1450)
        #expect((shown.first?["linkinfo"] as? [String: Any])?["info_kind"] as? String == "veth")

        #expect { try rt.createLink(name: "wmv0", kind: "veth") } throws: { ($0 as? NetlinkError)?.errno == EEXIST }
        #expect {
            try rt.createLink(name: "wg0", kind: "wireguard")
        } throws: { error in
            let e = error as? NetlinkError
            return e?.errno == EOPNOTSUPP && e?.kernelMessage == "Unknown device type"
        }
        #expect(throws: NetlinkInputError.invalidInterfaceName("a/b")) { try rt.createLink(name: "a/b", kind: "veth") }
        #expect(throws: NetlinkInputError.self) { try rt.createLink(name: "sixteen-chars-xx", kind: "veth") }

        try rt.setLink(name: "wmv0", mtu: 1400, up: true)
        var link = try jsonArray(try ns.ip("-j", "link", "show", "dev", "wmv0")).first
        #expect(link?["mtu"] as? Int == 1400)
        #expect((link?["flags"] as? [String])?.contains("UP") == true)
        let info = try rt.link(named: "wmv0")
        #expect(info.mtu == 1400 && info.isUp && info.kind == "veth" && info.name == "wmv0")
        #expect(try rt.links().contains { $0.name == "lo" && $0.index == 1 })

        try rt.setLink(name: "wmv0", up: false)
        link = try jsonArray(try ns.ip("-j", "link", "show", "dev", "wmv0")).first
        #expect((link?["flags"] as? [String])?.contains("UP") == false)
        #expect(link?["mtu"] as? Int == 1400)

        #expect(throws: NetlinkError.noSuchInterface("nope0")) { try rt.link(named: "nope0") }
        #expect(throws: NetlinkError.noSuchInterface("nope0")) { try rt.setLink(name: "nope0", up: true) }

        try rt.deleteLink(name: "wmv0")
        #expect(try run(["ip", "-n", ns.name, "link", "show", "dev", "wmv0"]).status != 0)
    }

    @Test func addressesInNamespace() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        let rt = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: ns.path))
        try rt.createLink(name: "wma0", kind: "veth")
        let v4 = try IPPrefix("10.9.0.1/24")
        let v6 = try IPPrefix("fd00:9::1/64")
        try rt.addAddress(v4, interface: "wma0")
        try rt.addAddress(v6, interface: "wma0")
        try rt.addAddress(v4, interface: "wma0")  // again: no error, no duplicate

        let mine = try rt.addresses(interface: "wma0")
        #expect(mine.filter { $0 == v4 }.count == 1)
        #expect(mine.contains(v6))
        func reference() throws -> Set<String> {
            let entries = try jsonArray(try ns.ip("-j", "addr", "show", "dev", "wma0"))
            let infos = entries.first?["addr_info"] as? [[String: Any]] ?? []
            return Set(
                infos.compactMap { i in (i["local"] as? String).map { "\($0)/\(i["prefixlen"] as? Int ?? -1)" } })
        }
        #expect(try reference().isSuperset(of: ["10.9.0.1/24", "fd00:9::1/64"]))
        #expect(Set(mine.map(\.description)) == (try reference()))

        try rt.deleteAddress(v4, interface: "wma0")
        #expect(!(try reference()).contains("10.9.0.1/24"))
        #expect(try reference().contains("fd00:9::1/64"))
        #expect { try rt.deleteAddress(v4, interface: "wma0") } throws: { $0 is NetlinkError }
        #expect(throws: NetlinkError.noSuchInterface("wmz0")) { try rt.addAddress(v4, interface: "wmz0") }
    }

    @Test func taggedRoutesInNamespace() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        let rt = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: ns.path))
        try rt.createLink(name: "wmr0", kind: "veth")
        try rt.setLink(name: "wmr0", up: true)
        let index = try rt.interfaceIndex(named: "wmr0")
        // Someone else's route: must never show up in, or be touched through, our list.
        try ns.ip("route", "add", "10.20.0.0/16", "dev", "wmr0", "proto", "static")

        let r4 = Route(destination: try IPPrefix("10.10.0.0/16"), interfaceIndex: index)
        let r6 = Route(destination: try IPPrefix("fd10::/48"), interfaceIndex: index)
        let closed = Route(destination: try IPPrefix("10.96.0.0/12"), type: .unreachable, metric: 4000)
        try rt.addRoute(r4)
        try rt.addRoute(r6)
        try rt.addRoute(closed)
        #expect { try rt.addRoute(r4) } throws: { ($0 as? NetlinkError)?.errno == EEXIST }
        try rt.replaceRoute(r4)

        let listed = try rt.routes()
        #expect(Set(listed.map(\.destination.description)) == ["10.10.0.0/16", "fd10::/48", "10.96.0.0/12"])
        #expect(listed.allSatisfy { $0.routeProtocol == WireMeshRouteProtocol && $0.table == 254 })
        #expect(listed.first { $0.destination == r4.destination }?.interfaceIndex == index)
        #expect(listed.first { $0.destination == closed.destination }?.type == .unreachable)
        #expect(listed.first { $0.destination == closed.destination }?.metric == 4000)

        // The reference view agrees: `ip route show proto 87`.
        let ref4 = try jsonArray(try ns.ip("-j", "route", "show", "proto", "\(WireMeshRouteProtocol)"))
        #expect(Set(ref4.compactMap { $0["dst"] as? String }) == ["10.10.0.0/16", "10.96.0.0/12"])
        let ref6 = try jsonArray(try ns.ip("-j", "-6", "route", "show", "proto", "\(WireMeshRouteProtocol)"))
        #expect(ref6.compactMap { $0["dst"] as? String } == ["fd10::/48"])

        // Deleting through our tag cannot remove the foreign route with the same destination shape.
        let foreign = Route(destination: try IPPrefix("10.20.0.0/16"), interfaceIndex: index)
        #expect { try rt.deleteRoute(foreign) } throws: { ($0 as? NetlinkError)?.errno == ESRCH }
        #expect(try ns.ip("route", "show", "10.20.0.0/16").contains("10.20.0.0/16"))

        try rt.deleteRoute(r4)
        try rt.deleteRoute(closed)
        #expect(try rt.routes().map(\.destination) == [r6.destination])
        #expect(try jsonArray(try ns.ip("-j", "route", "show", "proto", "\(WireMeshRouteProtocol)")).isEmpty)
        #expect { try rt.deleteRoute(r4) } throws: { ($0 as? NetlinkError)?.errno == ESRCH }
    }

    @Test func socketsInDifferentNamespacesAreIsolated() throws {
        let a = try TestNamespace()
        let b = try TestNamespace()
        defer {
            a.remove()
            b.remove()
        }
        let ra = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: a.path))
        let rb = RouteNetlink(socket: try NetlinkSocket.open(.route, inNetworkNamespaceAt: b.path))
        try ra.createLink(name: "wmiso0", kind: "veth")
        #expect(throws: NetlinkError.noSuchInterface("wmiso0")) { try rb.link(named: "wmiso0") }
        #expect(try ra.link(named: "wmiso0").name == "wmiso0")
        #expect(throws: NetlinkError.self) {
            _ = try NetlinkSocket.open(.route, inNetworkNamespaceAt: "/var/run/netns/wm-does-not-exist")
        }
    }

    /// `nft` as the reference: a committed change moves the generation, a listing does not.
    @Test func nftablesGenerationMovesOnEveryCommitOnly() throws {
        let ns = try TestNamespace()
        defer { ns.remove() }
        func generation() throws -> UInt32 {
            let socket = try NetlinkSocket.open(.netfilter, inNetworkNamespaceAt: ns.path)
            return try #require(NftablesGeneration.parse(try socket.transact(NftablesGeneration.request(), operation: "getgen")))
        }
        func nft(_ args: String...) throws {
            let r = try run(["ip", "netns", "exec", ns.name, "nft"] + args)
            guard r.status == 0 else { throw TestFailure("nft \(args.joined(separator: " ")): \(r.err)") }
        }
        let start = try generation()
        #expect(try generation() == start)
        try nft("add", "table", "ip", "wmgen")
        let added = try generation()
        #expect(added != start)
        try nft("add", "chain", "ip", "wmgen", "c")
        try nft("add", "rule", "ip", "wmgen", "c", "counter")
        let filled = try generation()
        #expect(filled != added)
        try nft("list", "table", "ip", "wmgen")
        #expect(try generation() == filled)
        // A flush that removes a rule moves it (a flush of an empty table commits nothing and does not).
        try nft("flush", "table", "ip", "wmgen")
        #expect(try generation() != filled)
    }
}

/// The `wiremesh link/route` commands, run for real inside a namespace with `ip netns exec`.
@Suite struct LinkCommandTests {
    /// The `wiremesh` binary built next to this test bundle.
    static let binary: String? = {
        guard let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let path = URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("wiremesh").path
        return FileManager.default.isExecutableFile(atPath: path) ? path : nil
    }()

    private func wiremesh(_ ns: TestNamespace, _ args: String...) throws -> (status: Int32, out: String, err: String) {
        try run(["ip", "netns", "exec", ns.name, Self.binary!] + args)
    }

    @Test func linkAndRouteCommands() throws {
        guard Self.binary != nil else {
            print("skipped: the wiremesh executable is not built next to the tests (run 'swift build' first)")
            return
        }
        let ns = try TestNamespace()
        defer { ns.remove() }
        try ns.ip("link", "add", "wmc0", "type", "veth", "peer", "name", "wmc1")

        let add = try wiremesh(ns, "link", "add", "wg0", "--mtu", "1420", "--address", "10.6.0.1/24", "--up")
        if (try? KernelBackend()) == nil {
            // This host's kernel: no WireGuard. One line, suggests the userspace backend, leaves nothing.
            #expect(add.status == 1)
            #expect(add.err.contains("'wg0'") && add.err.contains("userspace backend"))
            #expect(add.err.split(separator: "\n").count == 1)
            #expect(try run(["ip", "-n", ns.name, "link", "show", "dev", "wg0"]).status != 0)
        } else {
            // Inside the VM: a real WireGuard link with MTU, address and up.
            #expect(add.status == 0, "\(add.err)")
            let wg = try jsonArray(try ns.ip("-j", "-d", "addr", "show", "dev", "wg0")).first
            #expect((wg?["linkinfo"] as? [String: Any])?["info_kind"] as? String == "wireguard")
            #expect(wg?["mtu"] as? Int == 1420)
            #expect((wg?["flags"] as? [String])?.contains("UP") == true)
            #expect(((wg?["addr_info"] as? [[String: Any]]) ?? []).contains { $0["local"] as? String == "10.6.0.1" })
            let again = try wiremesh(ns, "link", "add", "wg0")
            #expect(again.status == 1 && again.err.contains("already exists"))
            #expect(try wiremesh(ns, "link", "del", "wg0").status == 0)
        }

        #expect(
            try wiremesh(ns, "link", "set", "wmc0", "--mtu", "1380", "--address", "10.7.0.1/24", "--up").status == 0)
        let link = try jsonArray(try ns.ip("-j", "addr", "show", "dev", "wmc0")).first
        #expect(link?["mtu"] as? Int == 1380)
        #expect(((link?["addr_info"] as? [[String: Any]]) ?? []).contains { $0["local"] as? String == "10.7.0.1" })

        #expect(try wiremesh(ns, "route", "add", "10.70.0.0/16", "--dev", "wmc0").status == 0)
        #expect(try wiremesh(ns, "route", "add", "fd70::/48", "--dev", "wmc0").status == 0)
        let list = try wiremesh(ns, "route", "list", "--json")
        #expect(list.status == 0)
        let routes = try jsonArray(list.out)
        #expect(Set(routes.compactMap { $0["destination"] as? String }) == ["10.70.0.0/16", "fd70::/48"])
        #expect(routes.allSatisfy { $0["dev"] as? String == "wmc0" && $0["protocol"] as? Int == 87 })
        #expect(try wiremesh(ns, "route", "list").out.contains("10.70.0.0/16 dev wmc0"))
        #expect(try wiremesh(ns, "route", "del", "10.70.0.0/16", "--dev", "wmc0").status == 0)
        #expect(try ns.ip("route", "show", "proto", "87").isEmpty)

        // Bad input: exit 2 and one line naming the problem; nothing changed.
        let badCIDR = try wiremesh(ns, "route", "add", "10.0.0.0/33", "--dev", "wmc0")
        #expect(badCIDR.status == 2 && badCIDR.err.contains("10.0.0.0/33"))
        #expect(try wiremesh(ns, "link", "set", "wmc0", "--address", "10.1.2.3/99").status == 2)
        #expect(try wiremesh(ns, "link", "set", "wmc0", "--mtu", "big").status == 2)
        #expect(try wiremesh(ns, "link", "set", "wmc0", "--up", "--down").status == 2)
        #expect(try wiremesh(ns, "link", "del", "bad/name").status == 2)
        // System failures: exit 1.
        let missing = try wiremesh(ns, "link", "set", "wmzz", "--up")
        #expect(missing.status == 1 && missing.err.contains("'wmzz'"))
        #expect(try wiremesh(ns, "route", "del", "10.70.0.0/16", "--dev", "wmc0").status == 1)

        #expect(try wiremesh(ns, "link", "del", "wmc0").status == 0)
        #expect(try run(["ip", "-n", ns.name, "link", "show", "dev", "wmc1"]).status != 0)
    }

    @Test func withoutCapNetAdminTheErrorSaysSo() throws {
        guard let binary = Self.binary else {
            print("skipped: the wiremesh executable is not built next to the tests (run 'swift build' first)")
            return
        }
        let ns = try TestNamespace()
        defer { ns.remove() }
        let r = try run([
            "ip", "netns", "exec", ns.name, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
            "--inh-caps=-all", "--bounding-set=-all", binary, "route", "add", "10.5.0.0/16", "--dev", "lo",
        ])
        #expect(r.status == 1)
        #expect(r.err.contains("CAP_NET_ADMIN"))
        #expect(try ns.ip("route", "show", "proto", "87").isEmpty)
    }
}
