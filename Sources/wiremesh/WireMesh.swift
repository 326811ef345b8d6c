import ArgumentParser
import Foundation
import WireMeshAgent

/// The `wiremesh` command line: every subcommand is a thin shell over the library targets.
@main
struct WireMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wiremesh",
        abstract: "A WireGuard mesh agent: encrypted pod-to-pod traffic between hosts.",
        discussion: "Exit status: 0 done, 1 operational failure (agent not reachable, system refused), 2 bad input.\n\n"
            + ConfigReference.text,
        version: WireMeshVersion.current,
        subcommands: [
            InitCommand.self, JoinCommand.self, AgentCommand.self, StatusCommand.self, PeersCommand.self,
            TokenCommand.self, LeaveCommand.self, RotateKeyCommand.self, ClusterKeyCommand.self, EvictCommand.self,
            DoctorCommand.self, GraphCommand.self,
            GenKey.self, PubKey.self, GenPSK.self,
            DeviceCommand.self,
            LinkCommand.self, RouteCommand.self,
        ]
    )

    /// argument-parser's own `main`, except that usage errors exit 2 like every other bad input
    /// (its default is 64, EX_USAGE).
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch {
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            Foundation.exit(ExitStatus.usage)
        }
    }
}
