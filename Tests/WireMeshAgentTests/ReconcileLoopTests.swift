import IPNetwork
import Membership
import NIOConcurrencyHelpers
import Testing
import WireMeshCrypto
@testable import WireMeshAgent

@Suite("Reconcile loop")
struct ReconcileLoopTests {
    final class Counter: Sendable {
        let value = NIOLockedValueBox(0)
        func bump() { value.withLockedValue { $0 += 1 } }
        var count: Int { value.withLockedValue { $0 } }
    }

    func event(_ i: Int) throws -> MemberEvent {
        let identity = SigningIdentity.generate()
        let record = NodeRecord(name: "n\(i)", identity: identity.publicKey, wireguardKey: Key.generatePrivate().publicKey(),
                                gossipAddress: Endpoint(address: try IPAddress("192.0.2.1"), port: 7946))
        let signed = try SignedNodeRecord(signing: record, with: identity)
        return MemberEvent(kind: .joined, member: Member(record: signed, status: .alive(incarnation: 0), since: Instant(nanoseconds: 0)))
    }

    @Test func aBurstOfEventsIsOnePassNotOnePerEvent() async throws {
        let (events, feed) = AsyncStream<MemberEvent>.makeStream()
        for i in 0..<200 { feed.yield(try event(i)) }
        let passes = Counter()
        let loop = ReconcileLoop(reconcile: { passes.bump() }, isLeaving: { false }, leaves: AsyncStream { _ in }, events: events, resync: .seconds(3600))
        let run = Task { try await loop.run() }
        // Wait for the first pass, then for any pass the burst still causes.
        while passes.count == 0 { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(300))
        #expect(passes.count >= 1 && passes.count <= 10, "200 queued events caused \(passes.count) passes")
        feed.yield(try event(999))
        let before = passes.count
        while passes.count == before { try await Task.sleep(for: .milliseconds(10)) }
        run.cancel()
        _ = try? await run.value
    }

    @Test func eventsEndingOnTheirOwnIsAnError() async throws {
        let (events, feed) = AsyncStream<MemberEvent>.makeStream()
        feed.finish()  // what the transport does when its socket closes
        let loop = ReconcileLoop(reconcile: {}, isLeaving: { false }, leaves: AsyncStream { _ in }, events: events, resync: .seconds(3600))
        await #expect(throws: ReconcileLoop.GossipStopped.self) { try await loop.run() }
    }

    @Test func endingAfterALeaveIsNotAnError() async throws {
        let (events, feed) = AsyncStream<MemberEvent>.makeStream()
        feed.finish()
        let loop = ReconcileLoop(reconcile: {}, isLeaving: { true }, leaves: AsyncStream { _ in }, events: events, resync: .seconds(3600))
        await #expect(throws: Never.self) { try await loop.run() }
    }

    @Test func withoutEventsItResyncsEveryPeriod() async throws {
        let (events, _) = AsyncStream<MemberEvent>.makeStream()
        let passes = Counter()
        let loop = ReconcileLoop(reconcile: { passes.bump() }, isLeaving: { false }, leaves: AsyncStream { _ in },
                                 events: events, resync: .milliseconds(20))
        let run = Task { try await loop.run() }
        while passes.count < 3 { try await Task.sleep(for: .milliseconds(10)) }
        run.cancel()
        try await run.value
        #expect(passes.count >= 3)
    }

    @Test func aLeaveEndsTheLoopWhileEventsGoOn() async throws {
        let (events, feed) = AsyncStream<MemberEvent>.makeStream()
        let (leaves, leave) = AsyncStream<Void>.makeStream()
        let passes = Counter()
        let loop = ReconcileLoop(reconcile: { passes.bump() }, isLeaving: { true }, leaves: leaves, events: events,
                                 resync: .seconds(3600))
        let run = Task { try await loop.run() }
        feed.yield(try event(1))
        while passes.count == 0 { try await Task.sleep(for: .milliseconds(10)) }
        leave.yield()
        // Ends by itself (the gossip events have not ended), after the second the leave is given.
        let started = ContinuousClock.now
        try await run.value
        #expect(ContinuousClock.now - started >= .milliseconds(900))
    }

    @Test func cancellationIsNotAnError() async throws {
        let (events, _) = AsyncStream<MemberEvent>.makeStream()
        let passes = Counter()
        let loop = ReconcileLoop(reconcile: { passes.bump() }, isLeaving: { false }, leaves: AsyncStream { _ in }, events: events,
                                 resync: .seconds(3600))
        let run = Task { try await loop.run() }
        try await Task.sleep(for: .milliseconds(50))
        run.cancel()
        await #expect(throws: Never.self) { try await run.value }
        #expect(passes.count == 0, "no event and no resync due: no pass")
    }
}
