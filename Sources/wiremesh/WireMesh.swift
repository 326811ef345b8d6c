import ArgumentParser

/// The `wiremesh` command line: every subcommand is a thin shell over the library targets.
@main
struct WireMesh: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wiremesh",
        abstract: "A WireGuard mesh agent: encrypted pod-to-pod traffic between hosts.",
        subcommands: [
            InitCommand.self, JoinCommand.self, AgentCommand.self, StatusCommand.self, PeersCommand.self,
            TokenCommand.self, LeaveCommand.self, RotateKeyCommand.self, ClusterKeyCommand.self,
            GenKey.self, PubKey.self, GenPSK.self,
            DeviceCommand.self,
            LinkCommand.self, RouteCommand.self,
        ]
    )
}
