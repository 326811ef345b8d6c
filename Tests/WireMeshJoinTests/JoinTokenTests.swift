import ByteCodec
import Foundation
import IPNetwork
import Membership
import Testing
import WireMeshCrypto
@testable import WireMeshJoin

/// A deterministic cluster with a member able to admit nodes.
struct JoinFixture {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let member: JoinExchange.MemberContext
    let token: JoinToken
    /// The issuer's entries (`tokens.json`).
    var records: [TokenRecord]
    let joinerIdentity = SigningIdentity.generate()
    let joinerWireGuard = Key.generatePrivate().publicKey()
    let ipam: IPAM

    init(clusterID: String = "cafe0000cafe0000", uses: Int? = 2, ttl: TimeInterval = 86_400, authority: SigningIdentity = .generate()) throws {
        let settings = ClusterSettings(podRange: try IPPrefix("10.244.0.0/16"), nodePrefixLength: 24)
        member = JoinExchange.MemberContext(clusterID: clusterID, settings: settings,
                                            keyring: Keyring(primary: .generate(), others: [.generate()]),
                                            authority: authority, revocations: nil, members: [1, 2, 3])
        let (t, r) = try JoinToken.issue(clusterID: clusterID, endpoints: [try Endpoint("192.0.2.1:7946"), try Endpoint("[2001:db8::2]:7946")],
                                         authority: member.authority, revocationSerial: 0, ttl: ttl, uses: uses, now: now)
        token = t
        records = [r]
        ipam = try IPAM(clusterRange: settings.podRange, nodePrefixLength: 24)
    }

    func request(nonce: [UInt8] = secureRandomBytes(24), token: JoinToken? = nil, name: String = "node-b") -> JoinRequest {
        JoinExchange.makeRequest(token: token ?? self.token, nodeName: name, identity: joinerIdentity.publicKey,
                                 wireGuardPublicKey: joinerWireGuard, nonce: nonce)
    }

    func assign(_ request: JoinRequest) throws -> NodeAssignment {
        let block = try ipam.allocate(for: request.nodeName, claims: [], now: 0)
        return NodeAssignment(name: request.nodeName, podCIDR: block, overlayAddress: ipam.overlayAddress(of: block))
    }

    /// The issuer's view of its own token (no other member announced anything).
    var view: ClusterToken? { TokenRecords.merge(local: ("node-a", records), members: [])[token.idText] }

    func admit(_ request: JoinRequest, at time: Date? = nil, view: ClusterToken?? = .none, usedNonces: [String] = [],
               member: JoinExchange.MemberContext? = nil) throws -> JoinExchange.Admission {
        try JoinExchange.admit(request, token: view ?? self.view, usedNonces: usedNonces, member: member ?? self.member,
                               now: time ?? now, memberNonce: secureRandomBytes(24), assign: assign)
    }

    /// Another member's announcement of the token.
    func announcement(revoked: Bool = false, used: UInt16 = 0) -> TokenAnnouncement {
        TokenAnnouncement(id: token.id, expiresAt: UInt32(token.expiresAt.timeIntervalSince1970),
                          usesLimit: UInt16(token.usesLimit ?? 0), revoked: revoked, used: used)
    }
}

@Suite("JoinToken")
struct JoinTokenTests {
    @Test func textRoundTrips() throws {
        let f = try JoinFixture()
        let text = f.token.text
        #expect(text.hasPrefix("wmj3."))
        #expect(!text.contains("=") && !text.contains("+") && !text.contains("/"))
        let parsed = try JoinToken(parsing: "  " + text + "\n")
        #expect(parsed == f.token)
        #expect(parsed.endpoints.map(\.description) == ["192.0.2.1:7946", "[2001:db8::2]:7946"])
        #expect(parsed.expiresAt == f.now.addingTimeInterval(86_400))
        #expect(parsed.usesLimit == 2)
        #expect(parsed.idText.count == 16)
        #expect(try JoinToken(parsing: try JoinFixture(uses: nil).token.text).usesLimit == nil)
    }

    @Test func goldenLayout() throws {
        // Fixed inputs give a fixed token: the format is a contract between versions of the CLI.
        var counter: UInt8 = 0
        let seed = SigningIdentity(seed: try Key(bytes: [UInt8](repeating: 7, count: 32)))
        let (token, record) = try JoinToken.issue(
            clusterID: "c1", endpoints: [try Endpoint("10.0.0.1:7946")], authority: seed, revocationSerial: 0, ttl: 60, uses: 1,
            now: Date(timeIntervalSince1970: 1_000), random: { n in counter += 1; return [UInt8](repeating: counter, count: n) })
        #expect(token.idText == "0101010101010101")
        #expect(record.id == "0101010101010101" && record.issued && !record.revoked && record.used == 0)
        #expect(record.expiresAt == Date(timeIntervalSince1970: 1_060) && record.createdAt == Date(timeIntervalSince1970: 1_000))
        #expect(record.usesLimit == 1)
        let body = Array(base64URLDecode(String(token.text.dropFirst(5)))!)
        #expect(body.count == 1 + 8 + 32 + 8 + 2 + 16 + 3 + 1 + 7 + 4)
        #expect(body[0] == 3)
        #expect(Array(body[1..<9]) == [UInt8](repeating: 1, count: 8))
        #expect(Array(body[9..<41]) == JoinToken.derivedKey(authoritySeed: seed.seed, revocationSerial: 0, id: token.id, expiresAt: 1_060, usesLimit: 1).bytes)
        #expect(Array(body[41..<49]) == [0, 0, 0, 0, 0, 0, 0x04, 0x24])  // 1060
        #expect(Array(body[49..<51]) == [0, 1])  // uses limit
        #expect(Array(body[67..<70]) == [2, 0x63, 0x31])  // "c1"
        #expect(Array(body[70..<78]) == [1, 4, 10, 0, 0, 1, 0x1F, 0x0A])
    }

    @Test func keyIsDerivedFromTheJoinSeedAndEveryPinnedField() throws {
        let seed = SigningIdentity.generate().seed
        let id: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8]
        let k = JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: id, expiresAt: 1_000, usesLimit: 3)
        // Deterministic: any member holding the seed computes the same key.
        #expect(k == JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: id, expiresAt: 1_000, usesLimit: 3))
        let variants = [
            JoinToken.derivedKey(authoritySeed: SigningIdentity.generate().seed, revocationSerial: 0, id: id, expiresAt: 1_000, usesLimit: 3),
            JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: [1, 2, 3, 4, 5, 6, 7, 9], expiresAt: 1_000, usesLimit: 3),
            JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: id, expiresAt: 1_001, usesLimit: 3),
            JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: id, expiresAt: 1_000, usesLimit: 4),
            JoinToken.derivedKey(authoritySeed: seed, revocationSerial: 0, id: id, expiresAt: 1_000, usesLimit: nil),
        ]
        for v in variants { #expect(v != k) }
        #expect(Set(variants.map(\.base64)).count == variants.count)
        // The key is not the seed, nor the join-signing subkey, nor anything the record carries.
        #expect(k.bytes != seed.bytes)
    }

    @Test func neverCarriesTheClusterKeyOrTheJoinSeed() throws {
        let f = try JoinFixture()
        let body = base64URLDecode(String(f.token.text.dropFirst(5)))!
        func contains(_ k: [UInt8]) -> Bool { (0...(body.count - k.count)).contains { Array(body[$0..<$0 + k.count]) == k } }
        for key in f.member.keyring.keys { #expect(!contains(key.key.bytes)) }
        #expect(!contains(f.member.authority.seed.bytes))
    }

    @Test(arguments: [
        ("wmj4.AAAA", "does not start with 'wmj3.'"),
        ("wmj3.", "not base64url"),
        ("wmj3.a*b", "not base64url"),
        ("wmj3.AQI", "truncated"),
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

    @Test func version1TokensAskForANewToken() {
        // A real format-1 token (from the previous release).
        let v1 = "wmj1.AQEBAQEBAQEBAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgIAAAAAAAAEJA"
        do {
            _ = try JoinToken(parsing: v1)
            Issue.record("a format-1 token parsed")
        } catch let e as JoinError {
            #expect(e == .outdatedToken(version: 1))
            #expect(e.description.contains("re-create the token with 'wiremesh token create'"))
            #expect(JoinRejection(e).code == .garbled)
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
            "wmj3." + base64URLEncode(body + Array(KeyDerivation.genericHash(body, outputLength: 16).prefix(4)))
        }
        #expect(throws: JoinError.garbled("unsupported token version 9")) { try JoinToken(parsing: seal([9] + [UInt8](repeating: 0, count: 70))) }
        #expect(throws: JoinError.garbled("truncated in the token key")) { try JoinToken(parsing: seal([3] + [UInt8](repeating: 0, count: 20))) }
        var w = ByteWriter()
        w.u8(3); w.raw([UInt8](repeating: 1, count: 40)); w.u64(5); w.u16(0); w.raw([UInt8](repeating: 0, count: 16))
        w.shortString("c"); w.u8(1); w.u8(5)
        #expect(throws: JoinError.garbled("member endpoint has unknown address family 5")) { try JoinToken(parsing: seal(w.bytes)) }
    }

    /// Found by fuzzing (join-token): a token whose expiry is past 2^53 s parsed to a `Date` that is not
    /// exactly its expiry (so it re-rendered as another token), and one near 2^63 s made `text` and
    /// `JoinExchange.makeRequest` trap converting the date back (a crafted token crashed `wiremesh join`).
    @Test func expiriesPastWhatATokenCanHoldAreGarbled() throws {
        func seal(_ body: [UInt8]) -> String {
            "wmj3." + base64URLEncode(body + Array(KeyDerivation.genericHash(body, outputLength: 16).prefix(4)))
        }
        func token(expiry: UInt64) -> String {
            var w = ByteWriter()
            w.u8(3); w.raw([UInt8](repeating: 4, count: 40)); w.u64(expiry); w.u16(0); w.raw([UInt8](repeating: 0, count: 16))
            w.shortString("c"); w.u8(1); w.endpoint(try! Endpoint("192.0.2.1:7946"))
            return seal(w.bytes)
        }
        for expiry: UInt64 in [0x0404_0404_0404_0404, UInt64(Int64.max), UInt64(Int64.max) + 1, .max, UInt64(UInt32.max) + 1] {
            #expect(throws: JoinError.garbled("expiry \(expiry) is past the year 2106")) { try JoinToken(parsing: token(expiry: expiry)) }
        }
        // The last second a token can hold still parses, and renders back to the same text.
        let last = token(expiry: UInt64(UInt32.max))
        let parsed = try JoinToken(parsing: last)
        #expect(parsed.text == last && parsed.expiresAt == Date(timeIntervalSince1970: TimeInterval(UInt32.max)))
    }

    /// Found by fuzzing (join-token, 4.5 million executions in): the last character of a token's text
    /// can carry bits past its bytes ('n' where 'g' ends the text), which Foundation's base64 decoder
    /// ignores, so two texts parsed to one token (and a parsed token re-rendered as other text).
    @Test func aTextWithBitsPastItsBytesIsGarbled() throws {
        let fuzzed = "wmj3.AxcXFxcXFxcXgnlGrbetkx02LihW-r49Kw3LZ82dqUN7ClJ_5ZTOQJ0AAAAAa0ngEAADOn68A7METBWbF1SbwaUlRhBjMGZmZWUwMGMwZmZlZTAwAgTAAAIBHwoGIAENuAAAAAAAAAAAAAAAAR8KYiNU4n"
        #expect(throws: JoinError.garbled("the part after 'wmj3.' is not base64url")) { try JoinToken(parsing: fuzzed) }
        let canonical = String(fuzzed.dropLast()) + "g"
        #expect(try JoinToken(parsing: canonical).text == canonical)
        // The same for every token text whose length leaves bits in its last character.
        for clusterID in ["c", "cc", "ccc"] {
            let text = try JoinFixture(clusterID: clusterID).token.text
            let body = text.dropFirst(JoinToken.prefix.count)
            guard body.count % 4 != 0 else { continue }
            let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
            let last = try #require(alphabet.firstIndex(of: body.last!))
            let damaged = String(text.dropLast()) + String(alphabet[last | 1])
            #expect(throws: JoinError.self) { try JoinToken(parsing: damaged) }
        }
    }

    /// Random damage to a valid token never crashes the parser: it parses (the damage hit nothing
    /// the checksum covers, which cannot happen) or throws a `garbled` error (or, if the damage
    /// rewrote the prefix to 'wmj1.', the outdated-format error).
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
                switch e {
                case .garbled: continue
                // Damage that turns the prefix into an older format's (wmj1., wmj2.) is told as such, which is right.
                case .outdatedToken where damaged.hasPrefix("wmj1.") || damaged.hasPrefix("wmj2."): continue
                default: Issue.record("unexpected \(e) for \(damaged)")
                }
            }
        }
    }

    @Test func issueRejectsBadParametersAndCapsEndpoints() throws {
        let js = SigningIdentity.generate()
        let ep = [try Endpoint("10.0.0.1:7946")]
        #expect(throws: TokenRequestError.invalidLifetime("must be positive, got 0 s")) {
            try JoinToken.issue(clusterID: "c", endpoints: ep, authority: js, revocationSerial: 0, ttl: 0, uses: nil, now: Date())
        }
        #expect(throws: TokenRequestError.invalidUses(0)) { try JoinToken.issue(clusterID: "c", endpoints: ep, authority: js, revocationSerial: 0, ttl: 60, uses: 0, now: Date()) }
        #expect(throws: TokenRequestError.invalidUses(65_536)) {
            try JoinToken.issue(clusterID: "c", endpoints: ep, authority: js, revocationSerial: 0, ttl: 60, uses: 65_536, now: Date())
        }
        #expect(throws: JoinError.self) { try JoinToken.issue(clusterID: "c", endpoints: [], authority: js, revocationSerial: 0, ttl: 60, uses: nil, now: Date()) }
        let many = try (1...6).map { try Endpoint("10.0.0.\($0):7946") }
        let (token, _) = try JoinToken.issue(clusterID: "c", endpoints: many, authority: js, revocationSerial: 0, ttl: 60, uses: nil, now: Date())
        #expect(token.endpoints == Array(many.prefix(4)))
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
        let wireRequest = try JSONDecoder().decode(JoinRequest.self, from: try JSONEncoder().encode(request))
        #expect(wireRequest == request)
        let admission = try f.admit(wireRequest)
        let wireResponse = try JSONDecoder().decode(JoinResponse.self, from: try JSONEncoder().encode(admission.response))
        let grant = try JoinExchange.accept(wireResponse, for: request, token: token)

        #expect(grant.clusterID == f.member.clusterID)
        #expect(grant.keyring == f.member.keyring)
        #expect(grant.settings == f.member.settings)
        #expect(grant.authority == f.member.authority.publicKey)
        #expect(grant.members == [1, 2, 3])
        #expect(grant.assignment == admission.assignment)
        #expect(f.member.settings.podRange.contains(grant.assignment.podCIDR))
        #expect(grant.assignment.overlayAddress == grant.assignment.podCIDR.address)
        #expect(admission.nonce == Data(request.nonce).base64EncodedString())
    }

    /// The issuer is down and nobody announced the token yet: another member holding the cluster's
    /// join-signing seed admits with it all the same (it stored nothing about the token).
    @Test func anyMemberAdmitsWithoutTheIssuer() throws {
        let f = try JoinFixture()
        let other = JoinExchange.MemberContext(clusterID: f.member.clusterID, settings: f.member.settings, keyring: f.member.keyring,
                                               authority: SigningIdentity(seed: f.member.authority.seed), revocations: nil, members: [9])
        let request = f.request()
        let admission = try f.admit(request, view: .some(nil), member: other)
        let grant = try JoinExchange.accept(admission.response, for: request, token: f.token)
        #expect(grant.members == [9])
        // A member of another cluster (other seed) cannot check it.
        let stranger = JoinExchange.MemberContext(clusterID: f.member.clusterID, settings: f.member.settings, keyring: f.member.keyring,
                                                  authority: .generate(), revocations: nil, members: [])
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(request, view: .some(nil), member: stranger) }
    }

    /// A name no record can hold (or that would reach logs with control characters) is refused before
    /// a token use, a block or a certificate is spent on it.
    @Test func aNameNoNodeCanRunUnderIsRefusedBeforeAnythingIsSpent() throws {
        let f = try JoinFixture()
        var assigned = 0
        for name in ["", String(repeating: "n", count: 64), "node\nb", "node b", "node\u{1b}[2J"] {
            #expect(throws: JoinError.self) {
                try JoinExchange.admit(f.request(name: name), token: f.view, usedNonces: [], member: f.member, now: f.now,
                                       memberNonce: secureRandomBytes(24)) { r in assigned += 1; return try f.assign(r) }
            }
        }
        #expect(assigned == 0)
        #expect(JoinExchange.nodeNameProblem(String(repeating: "n", count: 63)) == nil)
        #expect(JoinExchange.nodeNameProblem("é-node") == nil)
        _ = try f.admit(f.request(name: String(repeating: "n", count: 63)))
    }

    /// The MAC covers the expiry and the limit a member derives the key from: a joiner cannot
    /// stretch either.
    @Test func stretchedExpiryOrUsesFailAuthentication() throws {
        let f = try JoinFixture(uses: 1, ttl: 60)
        var later = f.request()
        later.expiresAt += 86_400
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(later, at: f.now.addingTimeInterval(3600), view: .some(nil)) }
        var more = f.request()
        more.usesLimit = 0
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(more, view: .some(nil)) }
        // Re-MACing needs K, which only the token (and members) have: a forged token of the same id fails too.
        let forged = JoinToken(id: f.token.id, key: .generatePrivate(), clusterID: f.token.clusterID, endpoints: f.token.endpoints,
                               expiresAt: f.token.expiresAt.addingTimeInterval(86_400), usesLimit: nil,
                               authorityFingerprint: f.token.authorityFingerprint)
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(f.request(token: forged), view: .some(nil)) }
    }

    @Test func observerWithoutTheTokenLearnsNoKey() throws {
        let f = try JoinFixture()
        let request = f.request()
        let admission = try f.admit(request)
        let wire = Array(try JSONEncoder().encode(request)) + Array(try JSONEncoder().encode(admission.response))
        for key in f.member.keyring.keys {
            #expect(!String(decoding: wire, as: UTF8.self).contains(key.key.base64))
            let k = key.key.bytes
            #expect(!(0...(wire.count - k.count)).contains { Array(wire[$0..<$0 + k.count]) == k })
        }
        // A token with the same id and another key cannot open the answer.
        let forged = JoinToken(id: f.token.id, key: .generatePrivate(), clusterID: f.token.clusterID, endpoints: f.token.endpoints,
                               expiresAt: f.token.expiresAt, usesLimit: f.token.usesLimit, authorityFingerprint: f.token.authorityFingerprint)
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) {
            try JoinExchange.accept(admission.response, for: request, token: forged)
        }
    }

    @Test func replayedRequestIsRefusedByTheMemberThatAnswered() throws {
        let f = try JoinFixture(uses: 5)
        let request = f.request()
        let first = try f.admit(request)
        var records = TokenRecords.recordingUse(of: request, nonce: first.nonce, in: f.records)
        #expect(records[0].used == 1 && records[0].usedNonces == [first.nonce])
        #expect(throws: JoinError.replayed(id: f.token.idText)) { try f.admit(request, usedNonces: records[0].usedNonces) }
        // A fresh request with the same token still works.
        let again = try f.admit(f.request(), usedNonces: records[0].usedNonces)
        records = TokenRecords.recordingUse(of: f.request(), nonce: again.nonce, in: records)
        #expect(records[0].used == 2)
    }

    /// A request replayed to another member gets an answer only the token holder with the joiner's
    /// nonce can open; an old answer does not open for a new request either.
    @Test func replayedRequestElsewhereYieldsNothingUsable() throws {
        let f = try JoinFixture()
        let request = f.request()
        let atB = try f.admit(request)  // B never saw the nonce
        let attacker = JoinToken(id: f.token.id, key: .generatePrivate(), clusterID: f.token.clusterID, endpoints: f.token.endpoints,
                                 expiresAt: f.token.expiresAt, usesLimit: f.token.usesLimit, authorityFingerprint: f.token.authorityFingerprint)
        #expect(throws: JoinError.self) { try JoinExchange.accept(atB.response, for: request, token: attacker) }
        #expect(throws: JoinError.self) { try JoinExchange.accept(atB.response, for: f.request(), token: f.token) }
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
            #expect(JoinRejection(e).code == .expired)
        }
        // Also at a member that never heard of the token: the expiry comes from the request.
        #expect(throws: JoinError.expired(id: f.token.idText, at: f.token.expiresAt)) { try f.admit(f.request(), at: later, view: .some(nil)) }
    }

    @Test func tokenOfAnotherCluster() throws {
        let f = try JoinFixture()
        let other = try JoinFixture(clusterID: "0ther0000000000")
        do {
            _ = try f.admit(other.request())
            Issue.record("admitted a token of another cluster")
        } catch let e as JoinError {
            // Its MAC fails first (another join-signing seed): the answer does not tell a stranger
            // this member's cluster id (issue 10).
            #expect(e == .authenticationFailed(id: other.token.idText))
            #expect(!JoinRejection(e).message.contains("cafe0000cafe0000"))
        }
    }

    @Test func unlimitedUsesUntilExpiry() throws {
        let f = try JoinFixture(uses: nil)
        var records = f.records
        for _ in 0..<5 {
            let request = f.request()
            let view = TokenRecords.merge(local: ("a", records), members: [])[f.token.idText]
            records = TokenRecords.recordingUse(of: request, nonce: try f.admit(request, view: view).nonce, in: records)
        }
        let view = TokenRecords.merge(local: ("a", records), members: [])[f.token.idText]!
        #expect(view.used == 5 && view.usesLeft == nil && view.state(at: f.now) == .valid)
    }

    @Test func tamperedRequestFailsAuthentication() throws {
        let f = try JoinFixture()
        var request = f.request()
        request.wireGuardPublicKey = Key.generatePrivate().publicKey()  // a man in the middle swaps the key
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(request) }
        var badMac = f.request()
        badMac.mac[0] ^= 0xFF
        #expect(throws: JoinError.authenticationFailed(id: f.token.idText)) { try f.admit(badMac) }
        var badID = f.request()
        badID.tokenID = "not-hex"
        #expect(throws: JoinError.self) { try f.admit(badID) }
    }

    @Test func version1RequestIsRefusedWithWhatToDo() throws {
        let f = try JoinFixture()
        var old = f.request()
        old.version = 1
        do {
            _ = try f.admit(old)
            Issue.record("a version 1 request was admitted")
        } catch let e as JoinError {
            #expect(e.description.contains("re-create the token"))
        }
        // A version 1 request on the wire (no expiry/limit fields) still decodes, to be refused clearly.
        let json = #"{"version":1,"token_id":"0101010101010101","cluster_id":"c","node_name":"n","identity_public_key":"\#(Data(f.joinerIdentity.publicKey.bytes).base64EncodedString())","wireguard_public_key":"\#(f.joinerWireGuard.base64)","nonce":"\#(Data([UInt8](repeating: 0, count: 24)).base64EncodedString())","mac":"AA=="}"#
        let decoded = try JSONDecoder().decode(JoinRequest.self, from: Data(json.utf8))
        #expect(decoded.version == 1 && decoded.expiresAt == 0)
    }

    @Test func impostorMemberIsDetected() throws {
        let f = try JoinFixture()
        // An impostor holds the token (stolen) but not the cluster's join-signing key; it answers as
        // if the MAC were fine (it cannot check it) with its own grant.
        let request = f.request()
        let genuineAdmission = try f.admit(request)
        let impostor = SigningIdentity.generate()
        var fake = genuineAdmission.response
        fake.authorityPublicKey = impostor.publicKey
        fake.signature = impostor.sign(Array("wmj2-resp".utf8) + JoinExchange.transcript(request: request, memberNonce: fake.memberNonce) + fake.sealed).bytes
        do {
            _ = try JoinExchange.accept(fake, for: request, token: f.token)
            Issue.record("accepted an impostor's answer")
        } catch let e as JoinError {
            guard case .notAMember = e else { Issue.record("\(e)"); return }
        }
        // A genuine answer with the signature broken is refused too.
        var genuine = genuineAdmission.response
        genuine.signature[5] ^= 1
        #expect(throws: JoinError.self) { try JoinExchange.accept(genuine, for: request, token: f.token) }
    }

    @Test func ipamFailureRejectsTheJoin() throws {
        let f = try JoinFixture()
        do {
            _ = try JoinExchange.admit(f.request(), token: f.view, usedNonces: [], member: f.member, now: f.now,
                                       memberNonce: secureRandomBytes(24)) { _ in
                throw IPAMError.exhausted(range: try IPPrefix("10.244.0.0/16"), prefixLength: 24, blocks: 256)
            }
            Issue.record("admitted without a block")
        } catch {
            #expect(JoinRejection(error).code == .ipam)
        }
    }
}

/// The cluster-wide token state merged from gossiped records.
@Suite("TokenGossip")
struct TokenGossipTests {
    @Test func revokedAnywhereIsRefusedEverywhere() throws {
        let f = try JoinFixture()
        // A issued it, B revoked it; C (which has no entry) merges both records.
        let view = TokenRecords.merge(local: ("c", []), members: [
            ("a", f.records.compactMap(\.announcement)), ("b", [f.announcement(revoked: true)]),
        ])[f.token.idText]!
        #expect(view.issuedBy == ["a"] && view.revokedBy == ["b"])
        #expect(view.state(at: f.now) == .revoked)
        #expect(throws: JoinError.revoked(id: f.token.idText)) { try f.admit(f.request(), view: view) }
        // C relays the revocation in its own record, so it outlives B.
        let adopted = try #require(TokenRecords.adoptingRevocations([], view: [view.id: view], now: f.now))
        #expect(adopted.count == 1 && adopted[0].revoked && !adopted[0].issued && adopted[0].expiresAt == f.token.expiresAt)
        #expect(TokenRecords.adoptingRevocations(adopted, view: [view.id: view], now: f.now) == nil)
        let afterB = TokenRecords.merge(local: ("c", adopted), members: [("a", f.records.compactMap(\.announcement))])[f.token.idText]!
        #expect(afterB.state(at: f.now) == .revoked)
        // Nothing to relay for a token that expired.
        #expect(TokenRecords.adoptingRevocations([], view: [view.id: view], now: f.token.expiresAt) == nil)
    }

    @Test func revokeOnAMemberThatDidNotIssue() throws {
        let f = try JoinFixture()
        let view = TokenRecords.merge(local: ("b", []), members: [("a", f.records.compactMap(\.announcement))])
        let revoked = try TokenRecords.revoke(f.token.idText.uppercased(), in: [], view: view)
        #expect(revoked == [TokenRecord(id: f.token.idText, expiresAt: f.token.expiresAt, usesLimit: 2, revoked: true)])
        #expect(throws: TokenRequestError.noSuchToken(id: "ffffffffffffffff")) { try TokenRecords.revoke("ffffffffffffffff", in: [], view: view) }
        // At the issuer, the revocation goes into its own entry.
        let atIssuer = try TokenRecords.revoke(f.token.idText, in: f.records, view: [:])
        #expect(atIssuer.count == 1 && atIssuer[0].revoked && atIssuer[0].issued)
    }

    @Test func usesAreCountedAcrossRecords() throws {
        let f = try JoinFixture(uses: 2)
        let one = TokenRecords.merge(local: ("c", []), members: [
            ("a", f.records.compactMap(\.announcement)), ("b", [f.announcement(used: 1)]),
        ])[f.token.idText]!
        #expect(one.used == 1 && one.usesLeft == 1 && one.state(at: f.now) == .valid)
        _ = try f.admit(f.request(), view: one)
        // C admitted one too: with B's, the limit is reached for everyone.
        let request = f.request()
        let cRecords = TokenRecords.recordingUse(of: request, nonce: "n", in: [])
        #expect(cRecords == [TokenRecord(id: f.token.idText, expiresAt: f.token.expiresAt, usesLimit: 2, used: 1, usedNonces: ["n"])])
        let two = TokenRecords.merge(local: ("c", cRecords), members: [
            ("a", f.records.compactMap(\.announcement)), ("b", [f.announcement(used: 1)]),
        ])[f.token.idText]!
        #expect(two.used == 2 && two.usesLeft == 0 && two.state(at: f.now) == .exhausted)
        #expect(throws: JoinError.exhausted(id: f.token.idText)) { try f.admit(f.request(), view: two) }
        // A's view sees the same, from the announcements.
        let atA = TokenRecords.merge(local: ("a", f.records), members: [
            ("b", [f.announcement(used: 1)]), ("c", cRecords.compactMap(\.announcement)),
        ])[f.token.idText]!
        #expect(atA.state(at: f.now) == .exhausted && atA.createdAt == f.now)
        // The member's own name in the member list is not counted twice.
        let selfListed = TokenRecords.merge(local: ("c", cRecords), members: [("c", cRecords.compactMap(\.announcement))])[f.token.idText]!
        #expect(selfListed.used == 1)
    }

    @Test func announcementsDropExpiredTokensAndStayBounded() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        func record(_ i: Int, expiresIn: TimeInterval, revoked: Bool = false, used: Int = 0) -> TokenRecord {
            TokenRecord(id: String(format: "%016x", i), createdAt: now, expiresAt: now.addingTimeInterval(expiresIn), usesLimit: nil,
                        issued: true, revoked: revoked, used: used)
        }
        let expired = record(1, expiresIn: -1, revoked: true)
        let live = record(2, expiresIn: 60)
        #expect(TokenRecords.announcements([expired, live], now: now).map(\.id) == [live.announcement!.id])
        #expect(TokenRecords.liveCount([expired, live], now: now) == 1)
        // More entries than a record has room for: revocations and used ones are kept first.
        var many = (100..<140).map { record($0, expiresIn: 3600 + Double($0)) }
        many.append(record(7, expiresIn: 10, revoked: true))
        many.append(record(8, expiresIn: 10, used: 1))
        let announced = TokenRecords.announcements(many, now: now)
        #expect(announced.count == TokenAnnouncement.maxPerRecord)
        #expect(announced.contains(record(7, expiresIn: 10, revoked: true).announcement!))
        #expect(announced.contains(record(8, expiresIn: 10, used: 1).announcement!))
        #expect(announced.map(\.id) == announced.map(\.id).sorted { $0.lexicographicallyPrecedes($1) })
        // Locally, entries (and their nonces) go a week after expiry.
        #expect(TokenRecords.pruned([expired, live], now: now.addingTimeInterval(8 * 86_400)).isEmpty)
        #expect(TokenRecords.pruned([expired, live], now: now.addingTimeInterval(3600)) == [expired, live])
    }

    @Test func listingShowsTheClusterView() throws {
        let f = try JoinFixture()
        let view = TokenRecords.merge(local: ("b", []), members: [
            ("a", f.records.compactMap(\.announcement)), ("c", [f.announcement(used: 1)]),
        ])[f.token.idText]!
        #expect(view.id == f.token.idText && view.state(at: f.now) == .valid && view.issuedBy == ["a"] && view.revokedBy.isEmpty)
        #expect(view.usesLimit == 2 && view.used == 1 && view.usesLeft == 1 && view.createdAt == f.now)
    }
}
