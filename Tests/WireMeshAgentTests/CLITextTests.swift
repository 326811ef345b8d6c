import Foundation
import Testing
@testable import WireMeshAgent

@Suite("CLI text: tables, token lines, the settings reference")
struct CLITextTests {
    @Test func tableColumnsStartAtTheSameOffsetInEveryRow() {
        let header = ["ID", "STATE", "ISSUED BY"]
        let rows = [["0011223344556677", "valid", "node-a"], ["88", "revoked-long-state", "b"], ["9", "x", ""]]
        let lines = CLIText.table(header: header, rows: rows).split(separator: "\n").map(String.init)
        #expect(lines.count == 4)
        #expect(lines[0].hasPrefix("ID  "))
        for column in 1..<header.count {
            // The offset of each column: where the header's title starts.
            let offset = lines[0].range(of: header[column])!.lowerBound.utf16Offset(in: lines[0])
            for (i, row) in rows.enumerated() where !row[column].isEmpty {
                let line = lines[i + 1]
                let start = line.index(line.startIndex, offsetBy: offset)
                #expect(line[start...].hasPrefix(row[column]), "row \(i) column \(column): '\(line)'")
                #expect(line[line.index(before: start)] == " ")
            }
        }
        #expect(lines.allSatisfy { !$0.hasSuffix(" ") }, "no trailing blanks: \(lines)")
    }

    @Test func tokenCreatedLineNamesIdExpiryAndUsesButNoSecret() {
        let expires = Date(timeIntervalSince1970: 1_900_000_000)
        let info = TokenInfo(id: "0011223344556677", state: .valid, createdAt: nil, expiresAt: expires, usesLimit: 3, usesLeft: 3)
        let line = CLIText.tokenCreated(info)
        #expect(line.contains("0011223344556677") && line.contains(StateStore.timestamp(expires)) && line.contains("3 uses"), "\(line)")
        #expect(line.contains("wiremesh token revoke 0011223344556677"))
        #expect(!line.contains("\n"))
        var unlimited = info
        unlimited.usesLimit = nil
        #expect(CLIText.tokenCreated(unlimited).contains("unlimited uses"))
        #expect(CLIText.uses(1) == "1 use")
    }

    @Test func settingsReferenceListsEveryKeyWithFlagVariableAndDefault() {
        let text = ConfigReference.text
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        for key in ConfigKey.allCases {
            let row = lines.first { $0.hasPrefix("  \(key.flag) ") }
            #expect(row?.contains(key.environmentVariable) == true, "no row for \(key.flag)")
            #expect(text.contains("(default: \(key.defaultText))"), "\(key)")
        }
        #expect(lines.allSatisfy { $0.count <= ConfigReference.width }, "a line wider than \(ConfigReference.width) columns")
        #expect(ConfigKey.gossipPort.defaultText == "\(AgentConfig().gossipPort)")
        #expect(ConfigKey.clusterKeyGrace.defaultText == "\(AgentConfig().clusterKeyGrace.components.seconds)s")
    }
}
