import Foundation
import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireMeshJoin

@Suite("TokenReference: naming a token for revoke without echoing it")
struct TokenReferenceTests {
    func issued(uses: Int? = 1) throws -> JoinToken {
        try JoinToken.issue(clusterID: "c1", endpoints: [try Endpoint("192.0.2.1:7946")], authority: SigningIdentity.generate(),
                            revocationSerial: 0, ttl: 3600, uses: uses, now: Date()).0
    }

    @Test func anIdInAnyCaseIsItsLowercaseForm() throws {
        let token = try issued()
        #expect(try TokenReference.id(from: token.idText) == token.idText)
        #expect(try TokenReference.id(from: token.idText.uppercased()) == token.idText)
        #expect(try TokenReference.id(from: "  \(token.idText)\n") == token.idText)
        #expect(try TokenReference.validatedID("00AABBCCDDEEFF11") == "00aabbccddeeff11")
    }

    @Test func aWholeTokenGivesItsIdLocally() throws {
        for uses in [nil, 1, 7] {
            let token = try issued(uses: uses)
            #expect(try TokenReference.id(from: token.text) == token.idText)
            #expect(try TokenReference.id(from: token.text + "\n") == token.idText)
        }
    }

    @Test func badReferencesAreRefusedWithoutRepeatingThem() throws {
        let token = try issued()
        let text = token.text
        let body = String(text.dropFirst(JoinToken.prefix.count))
        func damaged(_ e: TokenRequestError) -> Bool { if case .damagedToken = e { true } else { false } }
        let cases: [(String, (TokenRequestError) -> Bool)] = [
            (String(text.dropLast(3)), damaged),                                        // cut short
            (text.lowercased(), damaged),                                               // mistyped: checksum or not canonical base64url
            (body, { $0 == .notATokenReference(length: body.count) }),                   // the prefix was not copied
            ("wmj1.abcdef", { $0 == .outdatedToken }),
            ("0011223344556677aa", { $0 == .notATokenReference(length: 18) }),
            ("001122334455667g", { $0 == .notATokenReference(length: 16) }),
            ("", { $0 == .notATokenReference(length: 0) }),
        ]
        for (input, matches) in cases {
            do {
                let id = try TokenReference.id(from: input)
                Issue.record("accepted \(input.debugDescription) as \(id)")
            } catch {
                #expect(matches(error), "\(input.debugDescription): \(error)")
                if input.count > 6 { #expect(!"\(error)".contains(input), "the error repeats the input: \(error)") }
                #expect(!"\(error)".lowercased().contains(body.prefix(12).lowercased()), "the error repeats token text: \(error)")
            }
        }
        // What the agent accepts on the control socket: only an id, never a whole token.
        #expect(throws: TokenRequestError.notATokenReference(length: text.count)) { try TokenReference.validatedID(text) }
    }
}
