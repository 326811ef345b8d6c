import Foundation
import Testing
import TestSupport
import WireMeshAgent

/// README.md, read from the package root (found from this file's path).
private func readme() throws -> String {
    try String(contentsOfFile: packageRoot + "/README.md", encoding: .utf8)
}

/// A command line or a code span of the README, split into the commands it chains.
private struct Snippet {
    /// Where it is (for messages).
    var line: Int
    var text: String

    /// Commands separated by |, && or ; outside brackets (so `[--json | --dump]` stays one command),
    /// each as tokens with brackets and a trailing comment removed.
    var commands: [[String]] {
        var text = self.text
        if let comment = text.range(of: #"(^|\s)#"#, options: .regularExpression) { text = String(text[..<comment.lowerBound]) }
        var out: [[String]] = [[]]
        var depth = 0
        for raw in text.split(whereSeparator: \.isWhitespace).map(String.init) {
            if depth == 0 && ["|", "&&", ";", "||"].contains(raw) { out.append([]); continue }
            depth += raw.filter { $0 == "[" }.count - raw.filter { $0 == "]" }.count
            let token = raw.trimmingCharacters(in: CharacterSet(charactersIn: "[]()"))
            if !token.isEmpty && token != "|" { out[out.count - 1].append(token) }
        }
        return out.filter { !$0.isEmpty }
    }
}

/// Every line of a fenced code block, and every inline code span elsewhere.
private func snippets(_ text: String) -> [Snippet] {
    var out: [Snippet] = []
    var inBlock = false
    for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
        if line.hasPrefix("```") { inBlock.toggle(); continue }
        if inBlock { out.append(Snippet(line: i + 1, text: String(line))); continue }
        for match in line.matches(of: /`([^`]+)`/) { out.append(Snippet(line: i + 1, text: String(match.1))) }
    }
    return out
}

/// `--flag` → `flag` for tokens that are long options (`--x=1` too).
private func longOption(_ token: String) -> String? {
    guard let m = token.wholeMatch(of: /--([a-z][a-z0-9-]*)(=.*)?/) else { return nil }
    return String(m.1)
}

/// Flags argument-parser gives every command without listing them in its help dump.
private let builtInOptions: Set<String> = ["help", "generate-completion-script"]

@Suite("README and the command line agree")
struct ReadmeTests {
    @Test func everyOptionOfEveryCommandIsInTheReadme() throws {
        let text = try readme()
        let tree = try commandTree()
        var missing: [String] = []
        for (path, node) in tree.walk() where path.last != "help" {
            for option in node.options.sorted()
                where text.firstMatch(of: try Regex("--\(option)(?![a-z0-9-])")) == nil {
                missing.append("--\(option) (\(path.joined(separator: " ")))")
            }
        }
        #expect(missing.isEmpty, "options the README does not mention: \(Set(missing).sorted())")
    }

    @Test func everyWiremeshCommandAndFlagInTheReadmeExists() throws {
        let text = try readme()
        let tree = try commandTree()
        let allOptions = tree.walk().reduce(into: Set<String>()) { $0.formUnion($1.node.options) }
        // Flags of the repository's own scripts (./scripts/demo --keep, ./scripts/bench rotation --backend kernel).
        let scriptFlags = Set(["scripts", "examples"].flatMap { dir -> [String] in
            let files = FileManager.default.enumerator(atPath: packageRoot + "/" + dir)?.compactMap { $0 as? String } ?? []
            return files.flatMap { file -> [String] in
                guard let body = try? String(contentsOfFile: packageRoot + "/\(dir)/\(file)", encoding: .utf8) else { return [] }
                return body.matches(of: /--[a-z][a-z0-9-]*/).map { String($0.0.dropFirst(2)) }
            }
        })
        var problems: [String] = []
        for snippet in snippets(text) {
            for command in snippet.commands {
                let program = command[0]
                if (program as NSString).lastPathComponent == "wiremesh" && !program.hasPrefix(".build") {
                    // A wiremesh command line: its subcommands must exist and its flags belong to it.
                    var node = tree
                    var path = ["wiremesh"]
                    var rest = command.dropFirst()
                    while let next = rest.first, let sub = node.subcommand(next) {
                        node = sub
                        path.append(next)
                        rest = rest.dropFirst()
                    }
                    if let next = rest.first, longOption(next) == nil, node.subcommands?.isEmpty == false {
                        problems.append("line \(snippet.line): '\(next)' is not a subcommand of '\(path.joined(separator: " "))'")
                    }
                    for option in rest.compactMap(longOption) where !node.options.contains(option) && !builtInOptions.contains(option) {
                        problems.append("line \(snippet.line): '\(path.joined(separator: " "))' has no --\(option)")
                    }
                } else if longOption(program) != nil || program.hasSuffix(":") {
                    // A bare flag or config key in prose: wiremesh's, unless a script the README names defines it.
                    for option in command.compactMap(longOption) where !allOptions.contains(option) && !scriptFlags.contains(option) {
                        problems.append("line \(snippet.line): --\(option) is an option of no wiremesh command")
                    }
                }
                // Other programs (swift, install, systemctl, the scripts) have flags of their own.
            }
        }
        #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
    }

    @Test func theReadmeListsEverySettingWithItsVariableAndDefault() throws {
        let rows = try readme().split(separator: "\n").filter { $0.hasPrefix("|") }
        for key in ConfigKey.allCases {
            let row = rows.first { $0.contains("`\(key.flag)`") }
            #expect(row != nil, "no settings row for \(key.flag)")
            #expect(row?.contains("`\(key.environmentVariable)`") == true, "\(key.flag): no \(key.environmentVariable) in \(row ?? "")")
            #expect(row?.contains(key.defaultText) == true, "\(key.flag): default '\(key.defaultText)' not in \(row ?? "")")
        }
    }
}
