import ArgumentParser
import WireMeshAgent

/// `wiremesh rotate-key`: asks the running agent to move this node to a new WireGuard key without
/// interrupting traffic; returns once every live peer was told (or did not answer in time).
struct RotateKeyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-key",
        abstract: "Move this node to a new WireGuard key without interrupting traffic.",
        discussion: "Prints the new public key and how many live peers switched directly; peers that did not answer follow from the gossiped record.")
    @OptionGroup var common: CommonOptions

    func run() throws {
        if case .done(let message) = try ask(common, .rotateKey) { print(message) }
    }
}
