import Foundation

/// Text the command line prints (kept here, as pure functions, so it is unit-tested).
public enum CLIText {
    /// An aligned table: a header row, then one row per item, columns two spaces apart, no trailing blanks.
    public static func table(header: [String], rows: [[String]]) -> String {
        let all = [header] + rows
        let widths = header.indices.map { i in all.map { $0.indices.contains(i) ? $0[i].count : 0 }.max() ?? 0 }
        return all.map { row in
            header.indices.map { i in
                (row.indices.contains(i) ? row[i] : "").padding(toLength: widths[i], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n") + "\n"
    }

    /// "1 use", "5 uses", or "unlimited uses until it expires".
    public static func uses(_ limit: Int?) -> String {
        guard let limit else { return "unlimited uses until it expires" }
        return limit == 1 ? "1 use" : "\(limit) uses"
    }

    /// The line `token create` prints on standard error next to the token (which goes alone to
    /// stdout): its id, expiry and uses, and how to revoke it. Never the token itself.
    public static func tokenCreated(_ info: TokenInfo) -> String {
        "token \(info.id): expires \(StateStore.timestamp(info.expiresAt)), \(uses(info.usesLimit)); "
            + "revoke it with 'wiremesh token revoke \(info.id)'"
    }

    /// The rows of `token list`, under `tokenListHeader`.
    public static func tokenRows(_ tokens: [TokenInfo]) -> [[String]] {
        tokens.map { t in
            [t.id, t.state.rawValue, StateStore.timestamp(t.expiresAt),
             t.usesLimit.map { "\(t.usesConsumed)/\($0)" } ?? "\(t.usesConsumed)/unlimited",
             t.issuedBy.isEmpty ? "?" : t.issuedBy.joined(separator: ","),
             t.revokedBy.isEmpty ? "-" : t.revokedBy.joined(separator: ",")]
        }
    }

    /// The header of `token list`.
    public static let tokenListHeader = ["ID", "STATE", "EXPIRES", "USED", "ISSUED BY", "REVOKED BY"]
}
