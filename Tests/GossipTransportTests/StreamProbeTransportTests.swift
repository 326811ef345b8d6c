import Foundation
import IPNetwork
import LinePort
@testable import Membership
import Testing
@testable import WireMeshAgent
import WireMeshCrypto

/// Stream probes (memberlist's TCP fallback) carried over the line port between real transports on
/// 127.0.0.1, and what the agent's side refuses before the core sees it.
@Suite("Gossip transport: stream probes over the line port")
struct StreamProbeTransportTests {
    let support = PushPullTransportTests()

    func probe(_ target: String, seq: UInt32, keyring: Keyring, clusterID: [UInt8], reply: Bool = false,
               from: String? = "127.0.0.1:9") -> PushPullEnvelope {
        let payload = WireFormat.encode(.ping(seq: seq, target: target, source: "mallory"))
        return PushPullEnvelope(from: from, sealed: StreamProbeSeal.seal(payload, reply: reply, keyring: keyring, clusterID: clusterID))
    }

    @Test("a stream probe goes out over the line port and its sealed ack comes back to the prober's core")
    func roundTrip() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("stream-probe-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let slot = PushPullTransportTests.Slot()
        let port = try await LineServer.bind(PushPullTransportTests.loopback) { request in
            guard case .streamProbe(let envelope) = request, let t = await slot.transport else {
                return .refused(.malformed("stream probes only here"))
            }
            return await t.answerStreamProbe(envelope)
        }
        let endpoint = Endpoint(address: PushPullTransportTests.loopback.address, port: UInt16(port.localPort!))
        let a = try await GossipTransport.bind(try support.settings("alpha", keyring: keyring, clusterID: cluster, bind: endpoint))
        await slot.set(a)
        // The prober gives a stream a probe interval: a long one here, for a loaded machine.
        var bravo = try support.settings("bravo", keyring: keyring, clusterID: cluster)
        bravo.config.probeInterval = .seconds(30)
        let b = try await GossipTransport.bind(bravo)
        let tasks = [Task { try await a.run() }, Task { try await b.run() }, Task { try await port.run() }]
        defer { for task in tasks { task.cancel() } }
        // bravo has no probe of alpha pending: its core takes the ack in and refuses it as unsolicited,
        // which shows the whole way (sealed out, answered, sealed back, opened, handed to the core).
        let ping = WireFormat.encode(.ping(seq: 42, target: "alpha", source: "bravo"))
        let to = a.localAddress
        try await b.withHandler { $0.execute([.streamProbe(payload: ping, to: to)]) }
        let done = try await support.eventually { try await b.counters().membership.streamProbesRefused >= 1 }
        #expect(done, "bravo's core never got the reply")
        #expect(try await a.counters().membership.streamProbesAnswered == 1)
        #expect(try await b.counters().membership.streamProbeAcks == 0)
    }

    @Test("stream probes sealed wrongly, as a push/pull, as a reply, without a sender, of another member or replayed are refused")
    func hostileProbesRefused() async throws {
        let keyring = Keyring(primary: .generate())
        let cluster = Array("stream-probe-test-\(UInt32.random(in: 0...UInt32.max))".utf8)
        let t = try await GossipTransport.bind(try support.settings("alpha", keyring: keyring, clusterID: cluster))
        let task = Task { try await t.run() }
        defer { task.cancel() }
        func refused(_ reply: LineReply) -> Bool { if case .refused(.streamProbe) = reply { true } else { false } }
        let valid = probe("alpha", seq: 7, keyring: keyring, clusterID: cluster)
        #expect(refused(await t.answerStreamProbe(probe("alpha", seq: 7, keyring: Keyring(primary: .generate()), clusterID: cluster))))
        #expect(refused(await t.answerStreamProbe(probe("alpha", seq: 7, keyring: keyring, clusterID: cluster, reply: true))))
        #expect(refused(await t.answerStreamProbe(probe("alpha", seq: 7, keyring: keyring, clusterID: cluster, from: nil))))
        #expect(refused(await t.answerStreamProbe(probe("bravo", seq: 7, keyring: keyring, clusterID: cluster))))
        // A push/pull payload is sealed under other associated data: not a probe.
        let pushPull = PushPullEnvelope(from: "127.0.0.1:9", sealed: PushPullSeal.seal(WireFormat.encode(.ping(seq: 7, target: "alpha", source: "m")),
                                                                                       reply: false, keyring: keyring, clusterID: cluster))
        #expect(refused(await t.answerStreamProbe(pushPull)))
        guard case .streamProbe(let answer) = await t.answerStreamProbe(valid),
              let opened = answer.sealedBytes.flatMap({ StreamProbeSeal.open($0, reply: true, keyring: keyring, clusterID: cluster) }) else {
            Issue.record("a valid probe was not answered with a sealed reply")
            return
        }
        #expect(WireFormat.decodePayload(opened).messages == [.ack(seq: 7)])
        #expect(refused(await t.answerStreamProbe(valid)), "a replayed probe was answered")
        let line = LineRequest.streamProbe(valid).line()
        guard case .streamProbe(let decoded) = try LineRequest.decode(line: Array(line.dropLast())) else {
            Issue.record("decoded to another kind")
            return
        }
        #expect(decoded == valid)
    }
}
