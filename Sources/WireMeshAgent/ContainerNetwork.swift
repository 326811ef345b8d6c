#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import Logging
import Netlink
import ServiceLifecycle
import WireMeshJoin

/// Puts containers on the mesh: this node's CNI config list for the runtime (`CNIConfig`) and the
/// egress table (`EgressRules`). Set up when the agent starts, checked again every `interval`,
/// removed on `leave`.
public struct ContainerNetwork: Sendable {
    /// The conflist as it should be.
    public var cni: CNIConfig
    /// Where runtimes read CNI config lists (`--cni-config-dir`).
    public var directory: String
    /// The egress tables as they should be: IPv4, then IPv6 in a dual-stack cluster.
    public var egress: [EgressRules]

    /// The conflist's path.
    public var configListPath: String { directory + "/" + CNIConfig.fileName }

    /// The plan for a node: its block, overlay address and interface, MTU and directories; in a
    /// dual-stack cluster also the IPv6 range and block (`clusterRangeV6`, `blockV6`: both or neither).
    public init(config: AgentConfig, clusterRange: IPPrefix, block: IPPrefix, overlayAddress: IPAddress, mtu: Int,
                clusterRangeV6: IPPrefix? = nil, blockV6: IPPrefix? = nil) {
        directory = config.cniConfigDirectory
        cni = CNIConfig(block: block.network, mtu: mtu, bridge: CNIConfig.bridgeName(forInterface: config.interface),
                        ipamDataDirectory: ContainerNetwork.ipamDataDirectory(stateDirectory: config.stateDirectory),
                        blockV6: blockV6?.network)
        egress = [EgressRules(clusterRange: clusterRange, block: block, overlayAddress: overlayAddress, interface: config.interface)]
        if let clusterRangeV6, let blockV6 {
            // The IPv6 overlay address is the IPv6 block's first, like the IPv4 one.
            egress.append(EgressRules(clusterRange: clusterRangeV6, block: blockV6, overlayAddress: blockV6.firstAddress,
                                      interface: config.interface))
        }
    }

    /// The plan for a node from its state.
    public init(config: AgentConfig, settings: ClusterSettings, node: NodeAssignment, mtu: Int) {
        self.init(config: config, clusterRange: settings.podRange, block: node.podCIDR, overlayAddress: node.overlayAddress,
                  mtu: mtu, clusterRangeV6: settings.podRangeV6, blockV6: node.podCIDRV6)
    }

    /// `host-local`'s store for a node: inside its state directory.
    public static func ipamDataDirectory(stateDirectory: String) -> String { stateDirectory + "/cni-ipam" }

    /// Writes the conflist (atomically, 0644: runtimes read it) unless the file already holds exactly
    /// it; creates the directory if missing. Returns whether it wrote. The error names the file and
    /// what to do; a failed write leaves the previous file (or none), never part of one.
    @discardableResult
    public func writeConfigList() throws -> Bool {
        let text = try cni.render()
        do {
            if let have = try AtomicFile.readIfExists(configListPath), have == Array(text.utf8) { return false }
            try Self.makeDirectory(directory)
            try AtomicFile.write(text, to: configListPath, mode: 0o644)
            return true
        } catch {
            throw AgentError("cannot write the CNI config \(configListPath): \(error): make \(directory) writable by the agent (root), or choose another directory with --cni-config-dir (cni-config-dir, WIREMESH_CNI_CONFIG_DIR)")
        }
    }

    /// Programs each egress table unless the kernel already holds exactly it. Returns whether any changed.
    /// An IPv6 table left from a dual-stack plan that no longer has one is not removed here (`leave` does).
    @discardableResult
    public func programEgress() throws -> Bool {
        let nft = try Nftables()
        var changed = false
        for rules in egress {
            if let listing = try nft.listTable(family: rules.family, name: EgressRules.tableName),
               rules.matches(listing: listing) { continue }
            try nft.run(try rules.replaceBatch(), operation: "replace table \(rules.family) \(EgressRules.tableName)")
            changed = true
        }
        return changed
    }

    /// After a leave: removes the conflist (runtimes stop putting new containers on the mesh) and
    /// the egress table. `host-local`'s store stays with the state directory. Best effort, each
    /// failure logged.
    public static func remove(directory: String, logger: Logger) {
        let path = directory + "/" + CNIConfig.fileName
        if unlink(path) != 0 && errno != ENOENT {
            logger.warning("leave: could not remove the CNI config \(path): \(String(cString: strerror(errno)))")
        }
        for family in EgressRules.families {
            do { try Nftables().run(try EgressRules.removeBatch(family: family), operation: "delete table \(family) \(EgressRules.tableName)") } catch {
                logger.warning("leave: could not remove the \(family) egress table: \(error)")
            }
        }
    }

    /// Can the conflist be written in `directory`? Checked by `init`/`join` before they write any
    /// state or spend a token: the nearest existing ancestor must be a directory this process may
    /// write in (a read-only filesystem fails here too).
    public static func checkWritable(directory: String) throws {
        var path = directory
        while true {
            var st = stat()
            if stat(path, &st) == 0 {
                guard st.st_mode & S_IFMT == S_IFDIR else {
                    throw AgentError("cannot write the CNI config in \(directory): \(path) is not a directory: choose another --cni-config-dir")
                }
                guard access(path, W_OK) == 0 else {
                    throw AgentError("cannot write the CNI config in \(directory): \(path): \(String(cString: strerror(errno))): make it writable, or choose another --cni-config-dir")
                }
                return
            }
            let parent = AtomicFile.parentDirectory(of: path)
            if parent == path { return }
            path = parent
        }
    }

    /// `mkdir -p` with 0755 (runtimes read the directory).
    static func makeDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue { return }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
    }
}

/// Sets up the container network at start and puts the egress table back whenever it is gone or
/// changed (a firewall reload that flushed the ruleset), checking every `interval`.
struct ContainerNetworkService: Service {
    let network: ContainerNetwork
    let interval: Duration
    let logger: Logger

    /// Writes the conflist (an error stops the agent: runtimes would use a stale or no config) and
    /// programs the egress table (an error is logged: pod-to-pod traffic does not need it, and the
    /// service retries).
    func start() throws {
        // A block the CNI config cannot describe leaves the node without containers, not without the mesh.
        do { _ = try network.cni.render() } catch {
            logger.warning("containers: no CNI config and no egress table for this node: \(error)")
            return
        }
        if try network.writeConfigList() {
            logger.info("wrote CNI config", metadata: ["path": "\(network.configListPath)",
                                                       "block": "\(([network.cni.block] + [network.cni.blockV6].compactMap { $0 }).map(\.description).joined(separator: ","))"])
        }
        var verified: UInt32?
        _ = check(lastProblem: nil, verifiedAt: &verified)  // a problem is logged here and again by the first check of `run`
    }

    /// Programs the table if needed; returns the problem (nil: none), logged when it is not `lastProblem`
    /// (once per distinct problem, not every interval). `verifiedAt` is the nftables generation at
    /// which the table was last found as planned: while the generation has not moved, no table can
    /// have changed, and the check is one netlink round trip instead of loading libnftables and
    /// listing the table (which kept the agent's idle CPU and resident pages up every 10 s).
    func check(lastProblem: String?, verifiedAt: inout UInt32?) -> String? {
        let before = try? NftablesGeneration.current()
        if let before, before == verifiedAt { return nil }
        do {
            if try network.programEgress() {
                logger.info("programmed egress table", metadata: ["table": "\(network.egress.map { "\($0.family) \(EgressRules.tableName)" }.joined(separator: ","))"])
                // Our own commit moved the generation; a change by someone else in between is seen
                // at the next move.
                verifiedAt = try? NftablesGeneration.current()
            } else {
                verifiedAt = before
            }
            return nil
        } catch {
            verifiedAt = nil
            let problem = "\(error)"
            if problem != lastProblem { logger.error("egress masquerade not programmed: \(problem)") }
            return problem
        }
    }

    func run() async throws {
        guard (try? network.cni.render()) != nil else { return }  // see `start`
        // Cancelled on graceful shutdown: a sleeping check must not hold up the agent's exit.
        try? await cancelWhenGracefulShutdown {
            var problem: String?
            var verified: UInt32?
            while !Task.isCancelled {
                try await Task.sleep(for: interval)
                problem = check(lastProblem: problem, verifiedAt: &verified)
            }
        }
    }
}
