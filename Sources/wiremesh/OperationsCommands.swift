import ArgumentParser
import Foundation
import WireMeshAgent

struct DoctorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor", abstract: "Check this node and say what is wrong and how to fix it.",
        discussion: """
            Checks kernel WireGuard or wireguard-go, CAP_NET_ADMIN, the gossip/join and WireGuard ports (free, \
            or held by this node's agent or interface; another holder is named with its pid), the interface \
            MTU against the underlay, the agent (control socket), the device against the agent's plan (a peer \
            for every alive member, each pod block in its member's allowed IPs), the fail-closed routes, peers \
            without a handshake in 180 s (FAIL when this node's handshake initiations were never answered), \
            and clock skew seen through gossip. Each finding is ok, info, WARN or FAIL, \
            with the fix. Exits 1 when a check fails, 0 otherwise (warnings alone exit 0). Run it as root, \
            in the agent's network namespace.
            """)
    @OptionGroup var common: CommonOptions
    @Flag(help: "Print one JSON object: ok (false when a check failed) and findings (check, status, detail, fix).")
    var json = false

    func run() throws {
        let config = try loadConfig(common)
        let findings = Doctor.findings(Doctor.gather(config: config))
        let report = DoctorReport(findings: findings)
        if json { try printJSON(report) } else { print(Doctor.text(findings), terminator: "") }
        if !report.ok { throw ExitCode(ExitStatus.failure) }
    }
}

struct GraphCommand: ParsableCommand {
    enum Format: String, ExpressibleByArgument, CaseIterable { case dot, svg }

    static let configuration = CommandConfiguration(
        commandName: "graph", abstract: "Draw the mesh as this node sees it (Graphviz DOT or SVG).",
        discussion: """
            Nodes with their pod blocks; an edge from this node to each peer with the handshake age and \
            the bytes received and sent. Red: an alive member without a handshake in 180 s (stale); red and \
            dashed: an alive member with no peer on the device (missing). Gray: dead or departed members. \
            --format svg runs Graphviz ('dot -Tsvg'; apt-get install graphviz), e.g. \
            'wiremesh graph --format svg > mesh.svg'.
            """)
    @OptionGroup var common: CommonOptions
    @Option(help: "dot (Graphviz text) or svg (rendered by Graphviz's dot).") var format: Format = .dot

    func run() throws {
        guard case .status(let status) = try ask(common, .status), case .peers(let peers) = try ask(common, .peers) else {
            printError("graph: unexpected answer from the agent")
            throw ExitCode(ExitStatus.failure)
        }
        let text = MeshGraph.dot(status: status, peers: peers)
        switch format {
        case .dot: print(text, terminator: "")
        case .svg: FileHandle.standardOutput.write(try render(text))
        }
    }

    /// SVG from Graphviz's `dot`, found in PATH.
    func render(_ dot: String) throws -> Data {
        guard let path = findExecutable("dot") else {
            printError("graph: Graphviz's 'dot' is not in PATH: install graphviz ('apt-get install graphviz') or use --format dot")
            throw ExitCode(ExitStatus.failure)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = ["-Tsvg"]
        let input = Pipe(), output = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // The DOT text is small; write it all, then read: dot reads its whole input before writing.
        input.fileHandleForWriting.write(Data(dot.utf8))
        try input.fileHandleForWriting.close()
        let svg = output.fileHandleForReading.readDataToEndOfFile()
        let messages = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            printError("graph: '\(path) -Tsvg' failed (exit \(process.terminationStatus)): \(String(decoding: messages, as: UTF8.self))"
                + "; '--format dot' prints the text it was given")
            throw ExitCode(ExitStatus.failure)
        }
        return svg
    }
}
