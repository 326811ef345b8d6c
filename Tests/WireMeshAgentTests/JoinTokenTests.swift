import Foundation
import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireMeshAgent

/// A deterministic cluster with a member able to admit nodes.
struct JoinFixture {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let member: JoinExchange.MemberContext
    let token: JoinToken
    var records: [TokenRecord]
    let joinerIdentity = SigningIdentity.generate()
    let joinerWireGuard = Key.generatePrivate().publicKey()
    let ipam: IPAM

    init(clusterID: String = "cafe0000cafe0000", uses: Int? = 2, ttl: TimeInterval = 86_400) throws {
        let settings = ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
        member = JoinExchange.MemberContext(clusterID: clusterID, settings: settings,
                                            keyring: Keyring(primary: .generate(), others: [.generate()]),
                                            joinSigning: .generate(), members: [1, 2, 3])
        let (t, r) = try JoinToken.issue(clusterID: clusterID, endpoints: [try Endpoint("192.0.2.1:7946"), try Endpoint("[2001:db8::2]:7946")],
                                         joinSigning: member.joinSigning.publicKey, ttl: ttl, uses: uses, now: now)
        token = t
        records = [r]
        ipam = try IPAM(clusterRange: settings.podRange, nodePrefixLength: 24)
    }

    func request(nonce: [UInt8] = secureRandomBytes(24), token: JoinToken? = nil) -> JoinRequest {
        JoinExchange.makeRequest(token: token ?? self.token, nodeName: "node-b", identity: joinerIdentity.publicKey,
                                 wireGuardPublicKey: joinerWireGuard, nonce: nonce)
    }

    func assign(_ request: JoinRequest) throws -> NodeAssignment {
        let block = try ipam.allocate(for: request.nodeName, claims: [], now: 0)
        return NodeAssignment(name: request.nodeName, podCIDR: block, overlayAddress: ipam.overlayAddress(of: block))
    }

    func admit(_ request: JoinRequest, at time: Date? = nil, records: [TokenRecord]? = nil) throws -> JoinExchange.Admission {
        try JoinExchange.admit(request, records: records ?? self.records, member: member, now: time ?? now,
                               memberNonce: secureRandomBytes(24), assign: assign)
    }
}

@Suite("JoinToken")
struct JoinTokenTests {
    @Test func textRoundTrips() throws {
        let f = try JoinFixture()
        let text = f.token.text
        #expect(text.hasPrefix("wmj1."))
        #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
        let parsed = try JoinToken(parsing: "  " + text + "\n")
        #expect(parsed == f.token)
        #expect(parsed.endpoints.map(\.description) == ["192.0.2.1:7946", "[2001:db8::2]:7946"])
        #expect(parsed.expiresAt == f.now.addingTimeInterval(86_400))
        #expect(parsed.idText.count == 16)
    }

    @Test func goldenLayout() throws {
        // Fixed inputs give a fixed token: the format is a contract between versions of the CLI.
        var counter: UInt8 = 0
        let (token, record) = try JoinToken.issue(
            clusterID: "c1", endpoints: [try Endpoint("10.0.0.1:7946")],
            joinSigning: try IdentityPublicKey(bytes: [UInt8](repeating: 7, count: 32)), ttl: 60, uses: 1,
            now: Date(timeIntervalSince1970: 1_000), random: { n in counter += 1; return [UInt8](repeating: counter, count: n) })
        #expect(token.idText == "0101010101010101")
        #expect(record.id == "0101010101010101")
        #expect(record.expiresAt == Date(timeIntervalSince1970: 1_060))
        #expect(record.usesLeft == 1)
        let body = Array(base64URLDecode(String(token.text.dropFirst(5)))!)
        #expect(body.count == 1 + 8 + 32 + 8 + 16 + 3 + 1 + 7 + 4)
        #expect(body[0] == 1)
        #expect(Array(body[1..<9]) == [UInt8](repeating: 1, count: 8))
        #expect(Array(body[9..<41]) == [UInt8](repeating: 2, count: 32))
        #expect(Array(body[41..<49]) == [0, 0, 0, 0, 0, 0, 0x04, 0x24])  // 1060
        #expect(Array(body[65..<68]) == [2, 0x63, 0x31])  // "c1"
        #expect(Array(body[68..<76]) == [1, 4, 10, 0, 0, 1, 0x1F, 0x0A])
    }

    @Test func neverCarriesTheClusterKey() throws {
        let f = try JoinFixture()
        let body = base64URLDecode(String(f.token.text.dropFirst(5)))!
        for key in f.member.keyring.keys {
            let k = key.key.bytes
            #expect(!(0...(body.count - k.count)).contains { Array(body[$0..<$0 + k.count]) == k })
        }
        #expect(!f.token.text.contains(f.member.joinSigning.seed.base64.dropLast()))
    }

    @Test(arguments: [
        ("wmj2.AAAA", "does not start with 'wmj1.'"),
        ("wmj1.", "not base64url"),
        ("wmj1.a*b", "not base64url"),
        ("wmj1.AQI", "truncated"),
    ])
    func garbledTokensSayWhatIsWrong(text: String, problem: String) {
        do {
            _ = try JoinToken(parsing: text)
            Issue.record("'\(text)' parsed")
        } catch let e as JoinError {
            guard case .garbled(let what) = e else { Issue.record("\(e)"); return }
            #expect(what.contains(problem), "\(what)")
            #expect(e.description.hasPrefix("garbled join token: "))
            #expect(e.description.hasSuffix("copy the whole token printed by 'wiremesh token create'"))
        } catch { Issue.record("\(error)") }
    }

    @Test func damagedCopyIsCaughtByTheChecksum() throws {
        let text = try JoinFixture().token.text
        var chars = Array(text)
        let i = chars.count / 2
        chars[i] = chars[i] == "A" ? "B" : "A"
        #expect(throws: JoinError.garbled("checksum mismatch (incomplete or mistyped copy)")) {
            try JoinToken(parsing: String(chars))
        }
        #expect(throws: JoinError.self) { try JoinToken(parsing: String(text.dropLast(6))) }
    }

    @Test func structurallyBadBodyWithValidChecksum() {
        func seal(_ body: [UInt8]) -> String {
            "wmj1." + base64URLEncode(body + Array(KeyDerivation.genericHash(body, outputLength: 16).prefix(4)))
        }
        #expect(throws: JoinError.garbled("unsupported token version 9")) { try JoinToken(parsing: seal([9] + [UInt8](repeating: 0, count: 70))) }
        #expect(throws: JoinError.garbled("truncated in the secret")) { try JoinToken(parsing: seal([1] + [UInt8](repeating: 0, count: 20))) }
        var w = ByteWriter()
        w.u8(1); w.bytes([UInt8](repeating: 1, count: 40)); w.i64(5); w.bytes([UInt8](repeating: 0, count: 16))
        w.string8("c"); w.u8(1); w.u8(5)
        #expect(throws: JoinError.garbled("member endpoint has unknown address family 5")) { try JoinToken(parsing: seal(w.buffer)) }
    }

    /// Random damage to a valid token never crashes the parser: it parses (the damage hit nothing
    /// the checksum covers, which cannot happen) or throws a `garbled` error.
    @Test func randomDamageIsAlwaysAGarbledError() throws {
        let text = try JoinFixture().token.text
        var rng = SystemRandomNumberGenerator()
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ")
        for _ in 0..<2000 {
            var chars = Array(text)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: chars[Int.random(in: 0..<chars.count, using: &rng)] = alphabet.randomElement(using: &rng)!
            case 1: chars.removeLast(Int.random(in: 1..<chars.count, using: &rng))
            default: chars.insert(alphabet.randomElement(using: &rng)!, at: Int.random(in: 0...chars.count, using: &rng))
            }
            let damaged = String(chars)
            if damaged == text { continue }
            do {
                let parsed = try JoinToken(parsing: damaged)
                // Only whitespace-equivalent damage (e.g. a trailing space) may still parse, to the same token.
                #expect(parsed.text == text, "damaged token \(damaged) parsed to something else")
            } catch let e as JoinError {
                guard case .garbled = e else { Issue.record("unexpected \(e)"); continue }
            }
        }
    }

    @Test func issueRejectsBadParameters() throws {
        let pk = SigningIdentity.generate().publicKey
        let ep = [try Endpoint("10.0.0.1:7946")]
        #expect(throws: JoinError.self) { try JoinToken.issue(clusterID: "c", endpoints: ep, joinSigning: pk, ttl: 0, uses: nil, now: Date()) }
        #expect(throws: JoinError.self) { try JoinToken.issue(clusterID: "c", endpoints: ep, joinSigning: pk, ttl: 60, uses: 0, now: Date()) }
        #expect(throws: JoinError.self) { try JoinToken.issue(clusterID: "c", endpoints: [], joinSigning: pk, ttl: 60, uses: nil, now: Date()) }
    }
}

@Suite("JoinExchange")
struct JoinExchangeTests {
    @Test func successfulJoinHandsOverClusterKeyAndPodCIDR() throws {
        let f = try JoinFixture()
        // The joiner only has the token text.
        let token = try JoinToken(parsing: f.token.text)
        let request = f.request(token: token)
        // Over the wire as JSON.
        let wireRequest = try ControlCodec.decode(JoinRequest.self, from: try ControlCodec.encodeLine(request))
        #expect(wireRequest == request)
        let admission = try f.admit(wireRequest)
        let wireResponse = try ControlCodec.decode(JoinResponse.self, from: try ControlCodec.encodeLine(admission.response))
        let grant = try JoinExchange.accept(wireResponse, for: request, token: token)

        #expect(grant.clusterID == f.member.clusterID)
        #expect(grant.keyring == f.member.keyring)
        #expect(grant.settings == f.member.settings)
        #expect(grant.joinSigning.publicKey == f.member.joinSigning.publicKey)
        #expect(grant.members == [1, 2, 3])
        #expect(grant.assignment == admission.assignment)
        #expect(f.member.settings.podRange.contains(grant.assignment.podCIDR))
        #expect(grant.assignment.overlayAddress == grant.assignment.podCIDR.address)
        // One use consumed, nonce remembered.
        #expect(admission.updatedRecord.usesLeft == 1)
        #expect(admission.updatedRecord.usedNonces.count == 1)
    }

    @Test func observerWithoutTheTokenLearnsNoKey() throws {
        let f = try JoinFixture()
        let request = f.request()
        let admission = try f.admit(request)
        let wire = try ControlCodec.encodeLine(request) + (try ControlCodec.encodeLine(admission.response))
        for key in f.member.keyring.keys {
            #expect(!String(decoding: wire, as: UTF8.self).contains(key.key.base64))
            let k = key.key.bytes
            #expect(!(0...(wire.count - k.count)).contains { Array(wire[$0..<$0 + k.count]) == k })
        }
        // A different token of the same cluster cannot open the answer.
        let other = try JoinFixture()
        let forged = JoinToken(id: f.token.id, secret: other.token.secret, clusterID: f.token.clusterID, endpoints: f.token.endpoints,
                               expiresAt: f.token.expiresAt, joinSigningFingerprint: f.token.joinSigningFingerprint)
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) {
            try JoinExchange.accept(admission.response, for: request, token: forged)
        }
    }

    @Test func replayedRequestIsRefused() throws {
        let f = try JoinFixture(uses: 5)
        let request = f.request()
        let first = try f.admit(request)
        #expect(throws: JoinError.replayed(id: f.token.idText)) { try f.admit(request, records: [first.updatedRecord]) }
        // A fresh request with the same token still works.
        let again = try f.admit(f.request(), records: [first.updatedRecord])
        #expect(again.updatedRecord.usesLeft == 3)
    }

    @Test func replayedResponseDoesNotOpenForANewRequest() throws {
        let f = try JoinFixture()
        let old = try f.admit(f.request())
        let newRequest = f.request()
        #expect(throws: JoinError.self) { try JoinExchange.accept(old.response, for: newRequest, token: f.token) }
    }

    @Test func expiredToken() throws {
        let f = try JoinFixture(ttl: 3600)
        let later = f.now.addingTimeInterval(3600)
        do {
            _ = try f.admit(f.request(), at: later)
            Issue.record("expired token admitted")
        } catch let e as JoinError {
            #expect(e == .expired(id: f.token.idText, at: f.token.expiresAt))
            #expect(e.description == "join token \(f.token.idText) expired at 2027-01-15T09:00:00Z: create a new one with 'wiremesh token create'")
            #expect(JoinRejection(e).code == "expired")
        }
    }

    @Test func revokedToken() throws {
        let f = try JoinFixture()
        let revoked = try TokenRecords.revoke(f.token.idText, in: f.records)
        #expect(throws: JoinError.revoked(id: f.token.idText)) { try f.admit(f.request(), records: revoked) }
        #expect(throws: JoinError.unknownToken(id: "ffffffffffffffff")) { try TokenRecords.revoke("ffffffffffffffff", in: f.records) }
    }

    @Test func unknownToken() throws {
        let f = try JoinFixture()
        #expect(throws: JoinError.unknownToken(id: f.token.idText)) { try f.admit(f.request(), records: []) }
    }

    @Test func tokenOfAnotherCluster() throws {
        let f = try JoinFixture()
        let other = try JoinFixture(clusterID: "0ther0000000000")
        do {
            _ = try f.admit(other.request())
            Issue.record("admitted a token of another cluster")
        } catch let e as JoinError {
            #expect(e == .otherCluster(token: "0ther0000000000", member: "cafe0000cafe0000"))
            #expect(JoinRejection(e).code == "other-cluster")
        }
    }

    @Test func usesExhausted() throws {
        let f = try JoinFixture(uses: 1)
        let first = try f.admit(f.request())
        #expect(first.updatedRecord.usesLeft == 0)
        #expect(first.updatedRecord.state(at: f.now) == .exhausted)
        #expect(throws: JoinError.exhausted(id: f.token.idText)) { try f.admit(f.request(), records: [first.updatedRecord]) }
    }

    @Test func unlimitedUsesUntilExpiry() throws {
        let f = try JoinFixture(uses: nil)
        var records = f.records
        for _ in 0..<5 { records = [try f.admit(f.request(), records: records).updatedRecord] }
        #expect(records[0].usesLeft == nil)
        #expect(records[0].state(at: f.now) == .valid)
    }

    @Test func tamperedRequestFailsAuthentication() throws {
        let f = try JoinFixture()
        var request = f.request()
        request.wireGuardPublicKey = Key.generatePrivate().publicKey()  // a man in the middle swaps the key
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(request) }
        var badMac = f.request()
        badMac.mac[0] ^= 0xFF
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(badMac) }
    }

    @Test func impostorMemberIsDetected() throws {
        let f = try JoinFixture()
        // An impostor holds the token (stolen) but not the cluster's join-signing key.
        let impostor = JoinExchange.MemberContext(clusterID: f.member.clusterID, settings: f.member.settings,
                                                  keyring: Keyring(primary: .generate()), joinSigning: .generate(), members: [])
        let request = f.request()
        let fake = try JoinExchange.admit(request, records: f.records, member: impostor, now: f.now,
                                          memberNonce: secureRandomBytes(24), assign: f.assign)
        do {
            _ = try JoinExchange.accept(fake.response, for: request, token: f.token)
            Issue.record("accepted an impostor's answer")
        } catch let e as JoinError {
            guard case .notAMember = e else { Issue.record("\(e)"); return }
        }
        // A genuine answer with the signature broken is refused too.
        var genuine = try f.admit(request).response
        genuine.signature[5] ^= 1
        #expect(throws: JoinError.self) { try JoinExchange.accept(genuine, for: request, token: f.token) }
    }

    @Test func ipamFailureRejectsTheJoin() throws {
        let f = try JoinFixture()
        do {
            _ = try JoinExchange.admit(f.request(), records: f.records, member: f.member, now: f.now, memberNonce: secureRandomBytes(24)) { _ in
                throw IPAMError.exhausted(range: try IPPrefix("10.244.0.0/16"), prefixLength: 24, blocks: 256)
            }
            Issue.record("admitted without a block")
        } catch {
            #expect(JoinRejection(error).code == "ipam")
        }
    }

    @Test func tokenListingAndPruning() throws {
        let f = try JoinFixture()
        let info = TokenInfo(f.records[0], now: f.now)
        #expect(info.state == .valid && info.usesLeft == 2 && info.id == f.token.idText)
        let wayLater = f.now.addingTimeInterval(86_400 + 8 * 86_400)
        #expect(TokenRecords.pruned(f.records, now: wayLater).isEmpty)
        #expect(TokenRecords.pruned(f.records, now: f.now.addingTimeInterval(86_400 + 3600)).count == 1)
    }
}
