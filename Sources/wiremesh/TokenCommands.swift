import ArgumentParser
import Foundation
import WireMeshAgent
import WireMeshJoin

/// `wiremesh token …`: join tokens, through the agent. A token is a secret: it goes to stdout of
/// `create` and nowhere else (errors, logs and the control socket carry its id only).
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token", abstract: "Create, list and revoke join tokens (on any member; state is gossiped).",
        subcommands: [Create.self, List.self, Revoke.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a new join token on stdout (alone: scripts read it), and its id, expiry and uses on stderr.",
            discussion: """
                Any member admits with the token (it lists this member and up to three other live members; the joiner \
                tries them in order), so the issuer may be down. Uses are counted across members through gossip: \
                joins admitted at the same moment by different members can exceed --uses by the number of racing joins.
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: ArgumentHelp("Lifetime, e.g. 24h, 30m.", valueName: "duration")) var ttl = "24h"
        @Option(help: ArgumentHelp(
            "How many joins it admits, 1-\(JoinToken.maxUses). One by default: a leaked token admits one node at most, "
                + "and a second use shows up as a refused join; give N to join N nodes with one token.",
            valueName: "n"))
        var uses = 1
        @Flag(help: "Print one JSON object on stdout instead: token, id, expires_at, uses_limit.")
        var json = false

        func run() throws {
            let seconds: Int64
            do { seconds = try parseDuration(ttl).components.seconds } catch {
                printError("token create: --ttl: \(error)")
                throw ExitCode(ExitStatus.usage)
            }
            guard seconds >= 1 else {
                printError("token create: --ttl must be at least 1s, got '\(ttl)'")
                throw ExitCode(ExitStatus.usage)
            }
            guard (1...JoinToken.maxUses).contains(uses) else {
                printError("token create: \(TokenRequestError.invalidUses(uses))")
                throw ExitCode(ExitStatus.usage)
            }
            guard case .tokenCreated(let token, let info) = try ask(common, .tokenCreate(ttlSeconds: seconds, uses: uses)) else {
                return
            }
            if json { return try printJSON(CreatedToken(token: token, info: info)) }
            print(token)
            printError(CLIText.tokenCreated(info))
        }
    }

    /// `token create --json`.
    struct CreatedToken: Encodable {
        var token: String
        var info: TokenInfo

        enum CodingKeys: String, CodingKey { case token, id, expiresAt = "expires_at", usesLimit = "uses_limit" }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(token, forKey: .token)
            try c.encode(info.id, forKey: .id)
            try c.encode(info.expiresAt, forKey: .expiresAt)
            try c.encode(info.usesLimit, forKey: .usesLimit)  // null (unlimited, from an older member), not left out
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the cluster's tokens (issued on any member).")
        @OptionGroup var common: CommonOptions
        @Flag(help: "Print a JSON array: id, state, created_at, expires_at, uses_limit, uses_consumed, uses_left, issued_by, revoked_by.")
        var json = false

        func run() throws {
            guard case .tokens(let tokens) = try ask(common, .tokenList) else { return }
            if json { return try printJSON(tokens) }
            print(CLIText.table(header: CLIText.tokenListHeader, rows: CLIText.tokenRows(tokens)), terminator: "")
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a token (any token of the cluster; all members refuse it once gossiped).")
        @OptionGroup var common: CommonOptions
        @Argument(help: ArgumentHelp(
            "The token's id (16 hex digits, as 'token list' and 'token create' show it), or the whole token, or '-' to read it "
                + "from stdin (out of the process list). A whole token never leaves this process: only its id is sent.",
            valueName: "id-or-token"))
        var id: String

        func run() throws {
            let reference = id == "-" ? (readLine() ?? "") : id
            let tokenID: String
            do { tokenID = try TokenReference.id(from: reference) } catch {
                printError("token revoke: \(error)")
                throw ExitCode(ExitStatus.usage)
            }
            if case .done(let message) = try ask(common, .tokenRevoke(id: tokenID)) { print(message) }
        }
    }
}
