import ArgumentParser
import WireMeshAgent

/// `wiremesh cluster-key`: the cluster (gossip) key.
struct ClusterKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cluster-key", abstract: "Rotate the cluster (gossip) key.",
        subcommands: [ClusterKeyRotateCommand.self])
}

/// `wiremesh cluster-key rotate`: asks the running agent to start a cluster key rotation.
struct ClusterKeyRotateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate",
        abstract: "Install a new cluster key on every member, then make it primary and drop the old one.",
        discussion: """
            Returns once the new key is installed on this node. Every member fetches it and lists it in its \
            signed record; each member seals gossip with it once every live member holds it, and removes the \
            old key a grace period later (--cluster-key-grace; default: 30s). A node that was down meanwhile \
            gets the keys from a member when it starts again. 'wiremesh status' shows the keys and the phase.
            """)
    @OptionGroup var common: CommonOptions

    func run() throws {
        if case .done(let message) = try ask(common, .clusterKeyRotate) { print(message) }
    }
}

/// `wiremesh evict NAME`: removes a node from the cluster for good (on an authority node).
struct EvictCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evict",
        abstract: "Evict a node: every member drops its peer and refuses it from now on (run on an authority node).",
        discussion: """
            The authority signs a revocation list naming the node's identity and rotates the cluster key. \
            Every member fetches both, removes the node's WireGuard peer and refuses its records, keyring \
            requests and joins; the evicted node's copy of the cluster key stops opening gossip once the old \
            key is retired (--cluster-key-grace). Join tokens created before the eviction stop working: create \
            new ones. 'wiremesh peers' lists evicted nodes. To bring the machine back, join it again from a fresh \
            state directory with a new token.
            """)
    @Argument(help: "The node's name, as 'wiremesh peers' lists it.") var name: String
    @OptionGroup var common: CommonOptions

    func run() throws {
        if case .done(let message) = try ask(common, .evict(name: name)) { print(message) }
    }
}
