import Foundation

/// A token request the agent or the CLI refuses as asked: a bad value or an id nobody knows.
/// Messages never repeat what the user typed when it may be a token (a secret): they name the
/// problem, the token's id where one is known, and what to do.
public enum TokenRequestError: Error, Equatable, CustomStringConvertible {
    /// Neither 16 hex digits nor a join token (`length` characters, not echoed: it may be a damaged token).
    case notATokenReference(length: Int)
    /// Starts like a join token but does not parse (`reason` comes from the parser, never the text).
    case damagedToken(reason: String)
    /// A token of format 1 (`wmj1.…`): every member refuses it already.
    case outdatedToken
    /// No member announces a token with this id.
    case noSuchToken(id: String)
    /// `--uses` outside 1...`JoinToken.maxUses`.
    case invalidUses(Int)
    /// A lifetime (`--ttl`, `--token-ttl`) that is not positive or too long; `reason` says which.
    case invalidLifetime(String)

    /// The `ControlFailure` code: scripts tell bad input from operational failures by it.
    public var code: String {
        switch self {
        case .noSuchToken: return "unknown-token"
        default: return "invalid-value"
        }
    }

    public var description: String {
        switch self {
        case .notATokenReference(let length):
            return "the argument (\(length) characters, not repeated here in case it is a secret) is neither a token id "
                + "(16 hex digits, as 'wiremesh token list' shows) nor a join token (\(JoinToken.prefix)…)"
        case .damagedToken(let reason):
            return "the argument starts like a join token but is damaged (\(reason)): "
                + "copy the whole token, or give its id (16 hex digits) from 'wiremesh token list'"
        case .outdatedToken:
            return "the argument is a join token of format 1 (wmj1.…), which every member refuses already: nothing to revoke"
        case .noSuchToken(let id):
            return "no token with id \(id) in this cluster: 'wiremesh token list' shows them"
        case .invalidUses(let uses):
            return "--uses must be 1-\(JoinToken.maxUses), got \(uses) (leave it out for unlimited uses until the token expires)"
        case .invalidLifetime(let reason):
            return "token lifetime \(reason)"
        }
    }
}

/// How a person names a token on the command line (`wiremesh token revoke`): by its id, or by the
/// whole token, whose id is read locally so the secret never leaves the process.
public enum TokenReference {
    /// Length of a token id in hex digits.
    public static let idDigits = JoinToken.idLength * 2

    /// The id (16 lowercase hex digits) of the token `argument` names: its id in any case, or a whole
    /// join token (`wmj3.…`).
    public static func id(from argument: String) throws(TokenRequestError) -> String {
        let text = argument.trimmingCharacters(in: .whitespacesAndNewlines)
        if let id = try? validatedID(text) { return id }
        guard text.hasPrefix(JoinToken.prefix) || JoinToken.oldPrefixes.keys.contains(where: { text.hasPrefix($0) }) else {
            throw .notATokenReference(length: argument.count)
        }
        do {
            return try JoinToken(parsing: text).idText
        } catch JoinError.outdatedToken {
            throw .outdatedToken
        } catch JoinError.garbled(let reason) {
            throw .damagedToken(reason: reason)
        } catch {
            throw .damagedToken(reason: "unreadable")
        }
    }

    /// An id as a control request carries it: exactly 16 hex digits (returned lowercased). Anything
    /// else is refused without repeating it (an older CLI may have sent a whole token).
    public static func validatedID(_ text: String) throws(TokenRequestError) -> String {
        guard text.utf8.count == idDigits, text.utf8.allSatisfy({ isHexDigit($0) }) else {
            throw .notATokenReference(length: text.count)
        }
        return text.lowercased()
    }

    private static func isHexDigit(_ c: UInt8) -> Bool {
        (0x30...0x39).contains(c) || (0x41...0x46).contains(c) || (0x61...0x66).contains(c)
    }
}
