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
