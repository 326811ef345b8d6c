import Foundation
import IPNetwork
import LinePort
import Netlink

/// One result of `wiremesh doctor`: what was checked, how it went, what was seen, and what to do.
public struct Finding: Codable, Sendable, Equatable {
    /// `ok` and `info` need nothing; `warn` is worth a look; `fail` makes `doctor` exit 1.
    public enum Status: String, Codable, Sendable, Comparable {
        case ok, info, warn, fail

        var rank: Int { [.ok: 0, .info: 1, .warn: 2, .fail: 3][self]! }
        public static func < (a: Status, b: Status) -> Bool { a.rank < b.rank }
    }

    /// The check's short name (wireguard, privileges, ports, mtu, agent, device, routes, handshakes, clock).
    public var check: String
    public var status: Status
    /// What was seen, in operator words (never a key).
    public var detail: String
    /// What the operator should do (nil when there is nothing to do).
    public var fix: String?

    public init(check: String, status: Status, detail: String, fix: String? = nil) {
        self.check = check
        self.status = status
        self.detail = detail
        self.fix = fix
    }
}

/// What `doctor --json` prints.
public struct DoctorReport: Codable, Sendable, Equatable {
    /// False when some finding failed.
    public var ok: Bool
    public var findings: [Finding]

    public init(findings: [Finding]) {
        self.findings = findings
        ok = !findings.contains { $0.status == .fail }
    }
}

/// What the thin I/O layer (`Doctor.gather`) saw on this host; the decisions are `Doctor.findings`.
public struct DoctorFacts: Sendable {
    /// A bind probe of one port the agent uses.
    public struct Port: Sendable, Equatable {
        public var what: String
        public var address: String
        public var port: UInt16
        public var flag: String
        /// The errno of the failed bind; nil when the port was free.
        public var bindErrno: Int32?
        /// The processes holding a socket on that port, e.g. "nc (pid 4242)" (empty: not found).
        public var holders: [String]

        public init(what: String, address: String, port: UInt16, flag: String, bindErrno: Int32?, holders: [String] = []) {
            self.what = what
            self.address = address
            self.port = port
            self.flag = flag
            self.bindErrno = bindErrno
            self.holders = holders
        }
    }

    /// A peer as the WireGuard device holds it: its key (base64, as `wg` shows it) and allowed IPs.
    public struct DevicePeer: Sendable, Equatable {
        public var publicKey: String
        public var allowedIPs: [IPPrefix]

        public init(publicKey: String, allowedIPs: [IPPrefix]) {
            self.publicKey = publicKey
            self.allowedIPs = allowedIPs
        }
    }

    /// The generic netlink family `wireguard` resolved.
    public var kernelWireGuard = false
    /// Path of `wireguard-go` found in PATH.
    public var wireGuardGo: String?
    /// CAP_NET_ADMIN in this process's effective set (nil: unknown).
    public var netAdmin: Bool?
    public var ports: [Port] = []
    /// The WireGuard interface (the running agent's, else the configured one).
    public var interface: String
    /// nil: no such link.
    public var interfaceMTU: Int?
    public var interfaceIndex: Int32?
    /// The listen port of a WireGuard device of that name (nil: none).
    public var interfaceListenPort: UInt16?
    /// The peers of that device, read by doctor itself (nil: no device, or it could not be read).
    public var devicePeers: [DevicePeer]?
    public var advertiseAddress: IPAddress?
    public var underlayMTU: Int?
    public var controlSocket: String
    /// Why the agent did not answer `status` (nil when it did).
    public var agentError: String?
    public var status: StatusInfo?
    public var peers: [PeerInfo]?
    public var stateDirectory: String
    /// The cluster pod range from the state directory (nil: node not set up, or unreadable).
    public var podRange: IPPrefix?
    /// The IPv6 pod range of a dual-stack cluster (nil: IPv4 only, or no state).
    public var podRangeV6: IPPrefix?
    /// Routes tagged with the agent's protocol (nil: could not be read, see `routesError`).
    public var routes: [Route]?
    public var routesError: String?
    /// This host's wall clock, ms since 1970.
    public var nowMs: Int64

    public init(interface: String, controlSocket: String, stateDirectory: String, nowMs: Int64) {
        self.interface = interface
        self.controlSocket = controlSocket
        self.stateDirectory = stateDirectory
        self.nowMs = nowMs
    }
}

/// The decisions of `wiremesh doctor`: pure functions of `DoctorFacts`, so each is tested with made-up facts.
public enum Doctor {
    /// WireGuard's REJECT_AFTER_TIME: a session older than this has no keys left.
    public static let handshakeStaleSeconds = 180
    /// Record versions below this (Nov 2017) are not wall-clock stamps.
    static let plausibleWallClockMs: UInt64 = 1_500_000_000_000
    /// Gossip takes well under this from a record's creation to any member; closer stamps prove nothing.
    static let skewNoiseMs: Int64 = 2_000

    /// Every check's finding, in the order an operator fixes things (the host, then the agent, then the mesh).
    public static func findings(_ f: DoctorFacts) -> [Finding] {
        [wireGuard(f), privileges(f)] + ports(f) + [mtu(f), agent(f), deviceSync(f), routes(f), handshakes(f), clockSkew(f)]
    }

    static let startAgent = "start the agent: 'systemctl start wiremesh' (or 'wiremesh agent'); 'journalctl -u wiremesh' says why it stopped"

    static func wireGuard(_ f: DoctorFacts) -> Finding {
        if f.kernelWireGuard {
            return Finding(check: "wireguard", status: .ok, detail: "kernel WireGuard is available (generic netlink family 'wireguard')")
        }
        if let go = f.wireGuardGo {
            return Finding(check: "wireguard", status: .ok,
                           detail: "no kernel WireGuard; the agent uses wireguard-go (\(go)), in userspace")
        }
        return Finding(check: "wireguard", status: .fail, detail: "neither kernel WireGuard nor wireguard-go is available",
                       fix: "load the kernel module ('modprobe wireguard'), or install wireguard-go ('apt-get install wireguard-go') into PATH")
    }

    static func privileges(_ f: DoctorFacts) -> Finding {
        switch f.netAdmin {
        case true?: return Finding(check: "privileges", status: .ok, detail: "CAP_NET_ADMIN is in the effective set")
        case false?:
            return Finding(check: "privileges", status: .fail,
                           detail: "this process lacks CAP_NET_ADMIN: the agent needs it for the interface and routes, and doctor to read them",
                           fix: "run as root (sudo), as the systemd unit does")
        case nil:
            return Finding(check: "privileges", status: .info, detail: "CAP_NET_ADMIN unknown (no CapEff line in /proc/self/status)")
        }
    }

    static func ports(_ f: DoctorFacts) -> [Finding] {
        f.ports.map { p in
            let name = "\(p.what) \(p.port)"
            guard let err = p.bindErrno else {
                if f.status != nil {
                    return Finding(check: "ports", status: .warn, detail: "\(name) on \(p.address) is free, yet the agent runs and should hold it",
                                   fix: "check that doctor runs in the agent's network namespace, and restart the agent if it persists")
                }
                return Finding(check: "ports", status: .ok, detail: "\(name) on \(p.address) is free")
            }
            if err == EADDRINUSE {
                if let s = f.status, p.port == s.gossipPort || p.port == s.wireGuardPort {
                    return Finding(check: "ports", status: .ok, detail: "\(name) is held by the running agent")
                }
                if p.port == f.interfaceListenPort {
                    return Finding(check: "ports", status: .ok,
                                   detail: "\(name) is held by WireGuard interface \(f.interface), which the agent takes over when it starts")
                }
                if !p.holders.isEmpty {
                    let who = p.holders.joined(separator: ", ")
                    return Finding(check: "ports", status: .fail, detail: "\(name) on \(p.address) is held by another process: \(who)",
                                   fix: "stop \(who), or choose another \(p.flag)")
                }
                return Finding(check: "ports", status: .fail, detail: "\(name) on \(p.address) is held by another process",
                               fix: "stop the process holding it ('ss -lunp' / 'ss -ltnp' names it) or choose another \(p.flag)")
            }
            return Finding(check: "ports", status: .fail, detail: "\(name) on \(p.address) cannot be bound: \(String(cString: strerror(err)))",
                           fix: err == EADDRNOTAVAIL ? "give --advertise-address one of this host's addresses" : "run as root, or choose another \(p.flag)")
        }
    }

    static func mtu(_ f: DoctorFacts) -> Finding {
        guard let mtu = f.interfaceMTU else {
            return Finding(check: "mtu", status: f.status == nil ? .info : .warn,
                           detail: "interface \(f.interface) does not exist, so its MTU cannot be checked",
                           fix: f.status == nil ? nil : "restart the agent: it creates the interface again")
        }
        guard let underlay = f.underlayMTU, let address = f.advertiseAddress else {
            return Finding(check: "mtu", status: .info,
                           detail: "interface \(f.interface) has MTU \(mtu); the underlay interface (the one with the advertise address) was not found")
        }
        // WireGuard adds 32 B + UDP 8 B + the outer IP header: 60 B over IPv4, 80 B over IPv6.
        let overhead = address.isIPv4 ? 60 : 80
        if mtu + overhead > underlay {
            return Finding(check: "mtu", status: .fail,
                           detail: "interface \(f.interface) has MTU \(mtu), but the underlay (\(address)) has \(underlay): with \(overhead) B of WireGuard overhead, full-size packets are fragmented or dropped",
                           fix: "set --mtu \(underlay - AgentConfig.wireGuardOverhead) (or remove --mtu: the default is underlay MTU − \(AgentConfig.wireGuardOverhead)) and restart the agent")
        }
        return Finding(check: "mtu", status: .ok,
                       detail: "interface \(f.interface) MTU \(mtu) fits the underlay MTU \(underlay) with \(overhead) B of WireGuard overhead (\(address.isIPv4 ? "IPv4" : "IPv6"))")
    }

    static func agent(_ f: DoctorFacts) -> Finding {
        if let s = f.status {
            return Finding(check: "agent", status: .ok,
                           detail: "the agent answers at \(f.controlSocket): node \(s.nodeName), cluster \(s.clusterID), \(s.backend) backend, \(s.livePeers) live peers")
        }
        let reason = f.agentError ?? "no answer"
        return Finding(check: "agent", status: .fail, detail: "the agent does not answer at \(f.controlSocket): \(reason)",
                       fix: f.podRange == nil ? "set the node up first: 'wiremesh init' or 'wiremesh join TOKEN'" : startAgent)
    }

    static func deviceSync(_ f: DoctorFacts) -> Finding {
        guard let s = f.status else {
            return Finding(check: "device", status: .info, detail: "not checked: the agent is not running")
        }
        if s.healthy == false {
            let problems = s.problems ?? []
            return Finding(check: "device", status: .fail,
                           detail: "the agent cannot bring the device in line with its plan: " + (problems.isEmpty ? "no reason given" : problems.joined(separator: "; ")),
                           fix: "do what the problem above says; 'wiremesh status' shows it too, and the agent log has the details")
        }
        var problems: [String] = []
        let missing = (f.peers ?? []).filter { $0.state == "alive" && $0.onDevice == false }.map(\.name)
        if !missing.isEmpty {
            problems.append("alive members with no peer on the device: \(missing.joined(separator: ", ")); traffic to their pods is dropped")
        }
        let misrouted = misroutedBlocks(f)
        if !misrouted.isEmpty {
            problems.append("pod blocks the device does not route to their member: \(misrouted.joined(separator: ", "))")
        }
        if !problems.isEmpty {
            return Finding(check: "device", status: .fail, detail: problems.joined(separator: "; "),
                           fix: "wait for the agent's next resync (10 s), which rewrites the device; if it persists, the agent log names the error (e.g. a pod CIDR conflict)")
        }
        let checked = f.devicePeers.map { " and every alive member's pod block is in its peer's allowed IPs (\($0.count) peers read)" } ?? ""
        return Finding(check: "device", status: .ok, detail: "the device matches the plan: the agent reports itself healthy\(checked)")
    }

    /// "BLOCK of MEMBER (WHAT)" for each pod block of an alive member (with a peer on the device) that the
    /// device does not route to that member's peer: in no peer's allowed IPs, or in another member's.
    /// A block on a peer whose key is no member's is left alone: during a key rotation the old key
    /// keeps the block until the new one has a session.
    static func misroutedBlocks(_ f: DoctorFacts) -> [String] {
        guard let device = f.devicePeers, let peers = f.peers else { return [] }
        let memberByKey = Dictionary(peers.map { ($0.publicKey, $0.name) }, uniquingKeysWith: { a, _ in a })
        var out: [String] = []
        for member in peers where member.state == "alive" && member.onDevice != false {
            for text in member.podCIDRs {
                guard let block = try? IPPrefix(text) else { continue }
                let owners = device.filter { $0.allowedIPs.contains { $0.contains(block) } }
                if owners.isEmpty {
                    out.append("\(text) of \(member.name) (in no peer's allowed IPs)")
                } else if !owners.contains(where: { $0.publicKey == member.publicKey }),
                          let other = owners.compactMap({ memberByKey[$0.publicKey] }).first {
                    out.append("\(text) of \(member.name) (in \(other)'s allowed IPs)")
                }
            }
        }
        return out
    }

    static func routes(_ f: DoctorFacts) -> Finding {
        guard let range = f.podRange else {
            return Finding(check: "routes", status: .info, detail: "not checked: no cluster range known (no node state in \(f.stateDirectory))")
        }
        guard let routes = f.routes else {
            return Finding(check: "routes", status: .warn, detail: "could not read the routing table: \(f.routesError ?? "unknown error")",
                           fix: "run doctor as root in the agent's network namespace")
        }
        // Each range of the cluster (IPv4, and IPv6 if dual-stack) needs both routes.
        let ranges = [range] + [f.podRangeV6].compactMap { $0 }
        var missing: [String] = []
        var backstop = true
        for range in ranges {
            let mine = routes.filter { $0.destination.network == range.network }
            let into = mine.contains { $0.type == .unicast && $0.interfaceIndex != nil && $0.interfaceIndex == f.interfaceIndex }
            let unreachable = mine.contains { $0.type == .unreachable }
            if !into { missing.append("the route for \(range) into \(f.interface)") }
            if !unreachable { missing.append("the 'unreachable' backstop for \(range)"); backstop = false }
        }
        if missing.isEmpty {
            let text = ranges.map(\.description).joined(separator: " and ")
            return Finding(check: "routes", status: .ok,
                           detail: "fail-closed routes present: \(text) into \(f.interface) and unreachable (protocol \(WireMeshRouteProtocol))")
        }
        let effect = backstop
            ? "pod traffic is dropped instead of tunnelled"
            : "if \(f.interface) is gone, pod traffic leaves in clear by the default route"
        return Finding(check: "routes", status: .fail,
                       detail: "missing \(missing.joined(separator: " and ")) (protocol \(WireMeshRouteProtocol)): \(effect)",
                       fix: f.status == nil ? startAgent + " (it restores its routes)"
                           : "restart the agent ('systemctl restart wiremesh'): it restores its routes; 'wiremesh route list' shows them")
    }

    static func handshakes(_ f: DoctorFacts) -> Finding {
        guard let peers = f.peers else {
            return Finding(check: "handshakes", status: .info, detail: "not checked: the agent is not running")
        }
        let alive = peers.filter { $0.state == "alive" && $0.onDevice != false }
        let stale = alive.filter { ($0.secondsSinceHandshake ?? Int.max) > handshakeStaleSeconds }
        if alive.isEmpty { return Finding(check: "handshakes", status: .ok, detail: "no other alive members") }
        if stale.isEmpty {
            return Finding(check: "handshakes", status: .ok,
                           detail: "all \(alive.count) alive peers had a handshake in the last \(handshakeStaleSeconds) s")
        }
        let list = stale.map { p in "\(p.name) (" + (p.secondsSinceHandshake.map { "\($0) s ago" } ?? "never") + ")" }
        let port = f.status.map { "UDP \($0.wireGuardPort)" } ?? "the WireGuard UDP port"
        // Never a handshake, yet bytes sent to the peer: handshake initiations (the device counts them)
        // that nobody answered. Idle peers send nothing, so this one is broken, not quiet.
        let unanswered = stale.filter { $0.secondsSinceHandshake == nil && ($0.transmitBytes ?? 0) > 0 }
        if !unanswered.isEmpty {
            let names = unanswered.map { "\($0.name) (\($0.transmitBytes!) B sent, never a handshake)" }
            return Finding(check: "handshakes", status: .fail,
                           detail: "alive members that never answered this node's handshake initiations: \(names.joined(separator: ", "))"
                               + (stale.count > unanswered.count ? "; all without a handshake in \(handshakeStaleSeconds) s: \(list.joined(separator: ", "))" : ""),
                           fix: "let \(port) pass between this node and them, both ways (firewalls, security groups; 'nft list ruleset'); check their endpoint in 'wiremesh peers' is reachable from here")
        }
        return Finding(check: "handshakes", status: .warn,
                       detail: "alive members without a handshake in \(handshakeStaleSeconds) s: \(list.joined(separator: ", "))",
                       fix: "check that \(port) passes between this node and them (firewalls; their endpoint in 'wiremesh peers'); a peer with no traffic and no --persistent-keepalive has no handshake: send traffic and run doctor again")
    }

    static func clockSkew(_ f: DoctorFacts) -> Finding {
        guard let peers = f.peers else {
            return Finding(check: "clock", status: .info, detail: "not checked: the agent is not running")
        }
        // A record's version is its maker's wall clock when it made it, and it reaches us later, never
        // earlier: a stamp in our future proves the maker's clock is ahead by at least that much.
        let stamped = peers.filter { ($0.recordVersion ?? 0) >= plausibleWallClockMs && $0.state != "left" }
        let ahead = stamped.compactMap { p -> (String, Int64)? in
            let by = Int64(clamping: p.recordVersion!) - f.nowMs
            return by > skewNoiseMs ? (p.name, by) : nil
        }.sorted { $0.1 > $1.1 }
        if let worst = ahead.first {
            let list = ahead.map { "\($0.0) by at least \($0.1 / 1000) s" }.joined(separator: ", ")
            let refused = worst.1 > RotationMessage.maxSkewMs
            return Finding(check: "clock", status: refused ? .fail : .warn,
                           detail: "member clocks ahead of this node's (their records are stamped in this node's future): \(list)"
                               + (refused ? "; key rotation messages more than \(RotationMessage.maxSkewMs / 1000) s off are refused" : ""),
                           fix: "run time sync (chrony or systemd-timesyncd) on those nodes and on this one")
        }
        return Finding(check: "clock", status: .info,
                       detail: "skew not measurable: members' records carry only the wall-clock time they were made (start, key rotation), "
                           + "so a clock behind this node's cannot be seen, and one ahead only while its record is newer than now; "
                           + "none of \(stamped.count) records is stamped in this node's future")
    }

    /// The text `doctor` prints: one line per finding, the fix indented under it.
    public static func text(_ findings: [Finding]) -> String {
        var out = ""
        for f in findings {
            let tag = ["ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"][f.status.rawValue]!
            out += "\(tag)  \(f.check): \(f.detail)\n"
            if let fix = f.fix { out += "      fix: \(fix)\n" }
        }
        let worst = findings.map(\.status).max() ?? .ok
        out += worst == .fail ? "something is wrong: see FAIL above\n"
            : worst == .warn ? "nothing failed; see the warnings above\n" : "all checks passed\n"
        return out
    }
}
