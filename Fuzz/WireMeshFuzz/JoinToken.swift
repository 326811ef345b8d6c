import ByteCodec
import Foundation
import IPNetwork
import Membership
import WireMeshCrypto
import WireMeshJoin

/// Join tokens and the join exchange, from both ends: the token text a joiner is given, the request an
/// authority reads on the line port, the response and the sealed grant a joiner reads.
///
/// The first byte picks the mode (its value mod 6), the rest is:
/// - 0: token text (`JoinToken(parsing:)`): a parsed token re-renders to the same text;
/// - 5: a token's binary layout without its checksum: the target appends the checksum and writes it as
///   token text, so mutations reach the fields behind the checksum (a mutated text fails it);
/// - 1: a `JoinRequest` JSON (authority side): `authenticate` (fixed authority, revocation serial 1)
///   never accepts a request whose MAC is not the token key's; what it accepts goes on to `admit`;
/// - 2: a `JoinRequest` JSON the target re-MACs with the key of the token its fields name (as a real
///   token holder would), so the fuzzer reaches `admit` (trust, IPAM) and `accept`: an admitted
///   joiner accepts the answer, and its certificate makes members trust its record;
/// - 3: a `JoinResponse` JSON for a fixed request (joiner side): `accept` takes only the authority's;
/// - 4: a grant's JSON, which the target seals and signs as the authority would for the fixed request,
///   so the fuzzer reaches the grant decoder and `accept`'s checks behind the seal.
enum JoinTokenTarget {
    static let target = FuzzTarget(
        name: "join-token",
        summary: "JoinToken(parsing:), JoinRequest/JoinResponse/JoinGrant decoding, JoinExchange.authenticate/admit/accept (fixed keys; re-MAC'd and re-sealed modes)",
        run: run, seeds: seeds)

    static let f = TrustFixture.self
    static let now = Date(timeIntervalSince1970: 1_800_000_000)
    static let settings = ClusterSettings(podRange: TrustFixture.range, nodePrefixLength: 24)
    static let joiner = SigningIdentity(seed: TrustFixture.key(0xF0))
    static let memberNonce = [UInt8](repeating: 0x4D, count: JoinExchange.nonceLength)

    /// The token every fixed exchange uses (3 uses, valid for an hour at `now`), and its request.
    static let token: JoinToken = try! JoinToken.issue(
        clusterID: TrustFixture.clusterID, endpoints: [try! Endpoint("192.0.2.1:7946"), try! Endpoint("[2001:db8::1]:7946")],
        authority: TrustFixture.authority, revocationSerial: TrustFixture.revocations.serial, ttl: 3600, uses: 3, now: now,
        random: { [UInt8](repeating: 0x17, count: $0) }).0
    static let request = JoinExchange.makeRequest(
        token: token, nodeName: "joiner", identity: joiner.publicKey, wireGuardPublicKey: TrustFixture.key(0xF1).publicKey(),
        requestedPodCIDR: nil, nonce: [UInt8](repeating: 0x4A, count: JoinExchange.nonceLength))

    static var context: JoinExchange.MemberContext {
        .init(clusterID: TrustFixture.clusterID, settings: settings, keyring: TrustFixture.keyring, authority: TrustFixture.authority,
              revocations: TrustFixture.revocations, members: MemberBlob.encode([1, 2].map { TrustFixture.signed($0) }))
    }

    static func run(_ data: [UInt8]) {
        guard let first = data.first else { return }
        let body = Array(data.dropFirst())
        switch first % 6 {
        case 0: parseToken(body)
        case 5: parseToken(Array(tokenText(layout: body).utf8))
        case 1: if let r = decodeRequest(body) { authenticate(r) }
        case 2: if let r = decodeRequest(body) { remacAndAdmit(r) }
        case 3: decodeResponse(body)
        default: sealedGrant(body)
        }
    }

    /// `wmj3.` ‖ base64url(layout ‖ checksum), the checksum as `JoinToken.text` makes it (checked by `seeds`).
    static func tokenText(layout: [UInt8]) -> String {
        let bytes = layout + KeyDerivation.genericHash(layout, outputLength: 16).prefix(4)
        var s = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        while s.hasSuffix("=") { s.removeLast() }
        return JoinToken.prefix + s
    }

    /// The binary layout of a token's text (no checksum), for mode 5's seeds.
    static func layout(of token: JoinToken) -> [UInt8] {
        var s = String(token.text.dropFirst(JoinToken.prefix.count)).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Array(Data(base64Encoded: s)!.dropLast(4))
    }

    static func parseToken(_ body: [UInt8]) {
        let text = String(decoding: body, as: UTF8.self)
        do {
            let token = try JoinToken(parsing: text)
            require(token.text == text.trimmingCharacters(in: .whitespacesAndNewlines), "a parsed token re-renders to other text")
            require((try? JoinToken(parsing: token.text)) == token, "a re-rendered token parses differently")
            require(token.id.count == JoinToken.idLength && !token.endpoints.isEmpty && token.endpoints.count <= 255, "a parsed token breaks its shape")
            // What a joiner does next with it.
            let request = JoinExchange.makeRequest(token: token, nodeName: "joiner", identity: joiner.publicKey,
                                                   wireGuardPublicKey: TrustFixture.key(0xF1).publicKey(), nonce: [UInt8](repeating: 1, count: 24))
            require(Int64(token.expiresAt.timeIntervalSince1970) == request.expiresAt, "the request carries another expiry")
        } catch let e as JoinError {
            switch e {
            case .garbled(let why): require(!why.isEmpty, "a garbled token without a reason")
            case .outdatedToken: break
            default: fatalError("invariant broken: parsing threw \(e)")
            }
        } catch {
            fatalError("invariant broken: parsing threw \(type(of: error)), not JoinError: \(error)")
        }
    }

    /// Decodes a request; what decodes encodes to JSON that decodes to the same request.
    static func decodeRequest(_ body: [UInt8]) -> JoinRequest? {
        guard let request = try? JSONDecoder().decode(JoinRequest.self, from: Data(body)) else { return nil }
        let json = try! JSONEncoder().encode(request)
        require((try? JSONDecoder().decode(JoinRequest.self, from: json)) == request, "a join request re-encoded decodes differently")
        return request
    }

    /// The token a request's fields name, with the key the authority derives for them.
    static func token(for request: JoinRequest) -> JoinToken? {
        guard let id = Hex.decode(request.tokenID), id.count == JoinToken.idLength, (0...JoinToken.maxUses).contains(request.usesLimit),
              (0...Int64(UInt32.max)).contains(request.expiresAt) else { return nil }
        let uses = request.usesLimit == 0 ? nil : request.usesLimit
        let key = JoinToken.derivedKey(authoritySeed: TrustFixture.authority.seed, revocationSerial: TrustFixture.revocations.serial,
                                       id: id, expiresAt: request.expiresAt, usesLimit: uses)
        return JoinToken(id: id, key: key, clusterID: request.clusterID, endpoints: token.endpoints,
                         expiresAt: Date(timeIntervalSince1970: TimeInterval(request.expiresAt)), usesLimit: uses,
                         authorityFingerprint: JoinToken.fingerprint(of: TrustFixture.authority.publicKey))
    }

    /// `authenticate` accepts only a MAC made with the token key; an accepted request goes to `admit`.
    static func authenticate(_ request: JoinRequest) {
        let key: Key
        do {
            key = try JoinExchange.authenticate(request, authority: TrustFixture.authority, revocationSerial: TrustFixture.revocations.serial)
        } catch let e as JoinError {
            switch e {
            case .malformedMessage, .authenticationFailed: return
            default: fatalError("invariant broken: authenticate threw \(e)")
            }
        } catch {
            fatalError("invariant broken: authenticate threw \(type(of: error)), not JoinError")
        }
        // The MAC is the one the holder of that token computes over these very fields.
        guard let t = token(for: request), request.clusterID == t.clusterID, request.nonce.count == JoinExchange.nonceLength else {
            fatalError("invariant broken: authenticate accepted a request no token can make")
        }
        require(t.key == key, "authenticate returned another key than the token's")
        let again = JoinExchange.makeRequest(token: t, nodeName: request.nodeName, identity: request.identityPublicKey,
                                             wireGuardPublicKey: request.wireGuardPublicKey, requestedPodCIDR: request.requestedPodCIDR,
                                             nonce: request.nonce)
        require(again == request, "authenticate accepted a MAC the token key does not make over these fields")
        admitAndAccept(request, token: t)
    }

    /// The request as its token's holder would have made it (fields kept, MAC recomputed).
    static func remacAndAdmit(_ decoded: JoinRequest) {
        guard let t = token(for: decoded) else { return }
        var nonce = Array(decoded.nonce.prefix(JoinExchange.nonceLength))
        nonce += [UInt8](repeating: 0, count: JoinExchange.nonceLength - nonce.count)
        let request = JoinExchange.makeRequest(token: t, nodeName: decoded.nodeName, identity: decoded.identityPublicKey,
                                               wireGuardPublicKey: decoded.wireGuardPublicKey, requestedPodCIDR: decoded.requestedPodCIDR,
                                               nonce: nonce)
        do {
            let key = try JoinExchange.authenticate(request, authority: TrustFixture.authority, revocationSerial: TrustFixture.revocations.serial)
            require(key == t.key, "authenticate returned another key than the token's")
        } catch {
            fatalError("invariant broken: a request MAC'd with its token's key was refused: \(error)")
        }
        admitAndAccept(request, token: t)
    }

    /// The authority admits (or refuses with a typed reason); an admitted joiner accepts the answer and
    /// its record, certified by the grant, is trusted by members.
    static func admitAndAccept(_ request: JoinRequest, token: JoinToken) {
        let members = GossipTarget.setUp().members
        let local = NodeAssignment(name: f.names[f.local], podCIDR: f.podCIDR(f.local), overlayAddress: f.overlay(f.local))
        let admission: JoinExchange.Admission
        do {
            admission = try JoinExchange.admit(request, token: nil, usedNonces: [], member: context, now: now, memberNonce: memberNonce) {
                let candidate = try JoinCandidate($0, members: members, local: local, settings: settings, pending: [:],
                                                  nowMs: UInt64(now.timeIntervalSince1970 * 1000), monotonicNow: GossipTarget.start)
                return try candidate.assign($0)
            }
        } catch {
            let rejection = JoinRejection(error)
            require(rejection.code != .internal, "admit threw an untyped error: \(error)")
            return
        }
        require(!TrustFixture.revocations.contains(request.identityPublicKey), "an evicted identity was admitted")
        require(admission.assignment.name == request.nodeName, "admitted under another name")
        let grant: JoinGrant
        do {
            grant = try JoinExchange.accept(admission.response, for: request, token: token)
        } catch {
            fatalError("invariant broken: the joiner refused a genuine answer: \(error)")
        }
        require(grant.certificate == admission.certificate && grant.assignment == admission.assignment
                && grant.authority == TrustFixture.authority.publicKey && grant.clusterID == request.clusterID, "the grant differs from what was admitted")
        // The joiner's record as it will gossip it: members must take it (a valid name only: the
        // record format bounds names, the exchange does not).
        guard (1...63).contains(request.nodeName.utf8.count), request.clusterID == TrustFixture.clusterID else { return }
        var record = NodeRecord(name: request.nodeName, identity: request.identityPublicKey, wireguardKey: request.wireGuardPublicKey,
                                gossipAddress: try! Endpoint("192.0.2.99:7946"), podCIDRs: [grant.assignment.podCIDR],
                                overlayAddress: grant.assignment.overlayAddress)
        record.certificate = grant.certificate
        let refusal = TrustFixture.trust.refusal(for: record)
        require(refusal == nil, "members refuse the record of a node the authority admitted: \(refusal!)")
    }

    static func decodeResponse(_ body: [UInt8]) {
        guard let response = try? JSONDecoder().decode(JoinResponse.self, from: Data(body)) else { return }
        let json = try! JSONEncoder().encode(response)
        require((try? JSONDecoder().decode(JoinResponse.self, from: json)) == response, "a join response re-encoded decodes differently")
        accept(response)
    }

    /// The joiner's check: only the authority's answer for this request passes, and what passes holds
    /// a certificate for this node that the authority signed.
    static func accept(_ response: JoinResponse) {
        let grant: JoinGrant
        do {
            grant = try JoinExchange.accept(response, for: request, token: token)
        } catch let e as JoinError {
            switch e {
            case .malformedMessage, .notAMember, .authenticationFailed, .otherCluster: return
            default: fatalError("invariant broken: accept threw \(e)")
            }
        } catch {
            fatalError("invariant broken: accept threw \(type(of: error)), not JoinError")
        }
        require(grant.authority == TrustFixture.authority.publicKey && response.authorityPublicKey == grant.authority, "accepted another authority")
        require(grant.clusterID == token.clusterID && grant.assignment.name == request.nodeName, "accepted a grant for another cluster or node")
        require(grant.certificate.verify(clusterID: grant.clusterID, name: request.nodeName, identity: request.identityPublicKey,
                                         authority: grant.authority), "accepted a certificate the authority did not sign")
        require(grant.certificate.podCIDRs == [grant.assignment.podCIDR], "accepted a certificate for other prefixes")
        if let list = grant.revocations {
            require(list.verify(clusterID: grant.clusterID, authority: grant.authority), "accepted a revocation list the authority did not sign")
        }
        require(!grant.keyring.keys.isEmpty, "accepted a grant without a cluster key")
    }

    // The exchange's sealing, as `JoinExchange` does it (checked against `admit` by `seeds`).
    static func transcript(_ request: JoinRequest) -> [UInt8] {
        Array(request.tokenID.utf8) + request.nonce + memberNonce + request.identityPublicKey.bytes + request.wireGuardPublicKey.bytes
    }

    static func grantKey(_ request: JoinRequest, _ token: JoinToken) -> ClusterKey {
        ClusterKey(key: try! Key(bytes: KeyDerivation.genericHash(Array("wmjseal2".utf8) + transcript(request), key: token.key.bytes)))
    }

    static func associatedData(_ request: JoinRequest) -> [UInt8] { Array("wmj2".utf8) + Array(request.tokenID.utf8) }

    /// A response carrying `grant` (JSON bytes) sealed and signed as the authority does.
    static func response(sealing grant: [UInt8]) -> JoinResponse {
        let sealed = grantKey(request, token).seal(grant, associatedData: associatedData(request))
        let signature = TrustFixture.authority.sign(Array("wmj2-resp".utf8) + transcript(request) + sealed)
        return try! JSONDecoder().decode(JoinResponse.self, from: JSONEncoder().encode([
            "member_nonce": Data(memberNonce).base64EncodedString(),
            "authority_public_key": Data(TrustFixture.authority.publicKey.bytes).base64EncodedString(),
            "sealed": Data(sealed).base64EncodedString(), "signature": Data(signature.bytes).base64EncodedString(),
        ]))
    }

    static func sealedGrant(_ body: [UInt8]) {
        accept(response(sealing: body))
    }

    /// The fixed request admitted (the genuine response), and its grant's JSON.
    static func genuine() throws -> (JoinResponse, [UInt8]) {
        let admission = try JoinExchange.admit(request, token: nil, usedNonces: [], member: context, now: now, memberNonce: memberNonce) {
            try IPAM(clusterRange: settings.podRange, nodePrefixLength: 24).assign($0.nodeName, requested: nil, claims: [], now: 0)
        }
        let grant = try grantKey(request, token).open(admission.response.sealed, associatedData: associatedData(request))
        // The target's sealing is the exchange's: the same grant sealed by it is accepted.
        _ = try JoinExchange.accept(response(sealing: grant), for: request, token: token)
        return (admission.response, grant)
    }

    static func seeds() throws -> [[UInt8]] {
        func json<T: Encodable>(_ v: T) throws -> [UInt8] { Array(try JSONEncoder().encode(v)) }
        let (response, grant) = try genuine()
        let unlimited = try JoinToken.issue(clusterID: "other-cluster", endpoints: [try Endpoint("198.51.100.7:7946")],
                                            authority: TrustFixture.mallory, revocationSerial: 0, ttl: 60, uses: nil, now: now,
                                            random: { [UInt8](repeating: 0xEE, count: $0) }).0
        var evicted = request
        evicted.identityPublicKey = TrustFixture.identities[TrustFixture.evicted].publicKey
        var asking = request
        asking.requestedPodCIDR = try IPPrefix("10.244.200.0/24")
        asking.nodeName = "n1"
        guard tokenText(layout: layout(of: token)) == token.text else { throw FuzzSeedError("token text drifted") }
        return [
            [5] + layout(of: token),
            [5] + layout(of: unlimited),
            [0] + Array(token.text.utf8),
            [0] + Array("  \(unlimited.text)\n".utf8),
            [0] + Array("wmj2.AAAA".utf8),
            [1] + (try json(request)),
            [2] + (try json(request)),
            [2] + (try json(evicted)),
            [2] + (try json(asking)),
            [3] + (try json(response)),
            [4] + grant,
        ]
    }
}
