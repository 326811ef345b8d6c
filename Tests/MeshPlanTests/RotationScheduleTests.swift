import MeshPlan
import Testing
import WireMeshCrypto

/// Scheduled key rotation with virtual time (seconds): deadlines, jitter, restarts, retries.
@Suite struct RotationScheduleTests {
    let day = 86_400.0
    let key = Key.generatePrivate().publicKey()

    @Test func deadlineIsTheIntervalFromTheKeysCreationWithinTheJitter() {
        let s = KeyRotationSchedule(interval: day)
        for _ in 0..<200 {
            let k = Key.generatePrivate().publicKey()
            let d = s.deadline(keyCreatedAt: 1000, node: "n1", key: k)
            #expect(d >= 1000 + 0.9 * day && d < 1000 + 1.1 * day)
        }
    }

    @Test func aClusterCreatedAtOnceSpreadsOverTheJitterWindow() {
        let s = KeyRotationSchedule(interval: day)
        let deadlines = (0..<100).map { s.deadline(keyCreatedAt: 0, node: "node\($0)", key: Key.generatePrivate().publicKey()) }
        #expect(Set(deadlines).count == 100, "two nodes got the same deadline")
        // 100 uniform draws over ±10 %: the extremes lie well apart (a constant jitter would give 0).
        #expect(deadlines.max()! - deadlines.min()! > 0.1 * day)
        // And not all on one side of the nominal deadline.
        #expect(deadlines.contains { $0 < day } && deadlines.contains { $0 > day })
    }

    @Test func theSameNodeAndKeyGetTheSameDeadlineAfterARestart() {
        let s = KeyRotationSchedule(interval: day)
        let before = s.deadline(keyCreatedAt: 5000, node: "n1", key: key)
        #expect(s.deadline(keyCreatedAt: 5000, node: "n1", key: key) == before)
        #expect(s.deadline(keyCreatedAt: 5000, node: "n2", key: key) != before, "the node name seeds the jitter too")
    }

    @Test func waitsUntilTheDeadlineThenRotates() {
        let s = KeyRotationSchedule(interval: day)
        let due = s.deadline(keyCreatedAt: 0, node: "n1", key: key)
        #expect(s.decide(now: 10, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: 0, lastFailure: nil) == .wait(until: due))
        #expect(s.decide(now: due - 0.001, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: 0, lastFailure: nil) == .wait(until: due))
        #expect(s.decide(now: due, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: 0, lastFailure: nil) == .rotate)
    }

    @Test func aRestartDoesNotResetTheSchedule() {
        // The agent restarts half-way: the deadline still counts from the key's creation.
        let s = KeyRotationSchedule(interval: day)
        let due = s.deadline(keyCreatedAt: 0, node: "n1", key: key)
        let restart = day / 2
        #expect(s.decide(now: restart + 10, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: restart,
                         lastFailure: nil) == .wait(until: due))
    }

    @Test func anOverdueKeyRotatesShortlyAfterStartNotAtOnce() {
        // The agent was down past the deadline: it rotates once the view had `settle` to arrive.
        let s = KeyRotationSchedule(interval: day, settle: 5)
        let start = 3 * day
        #expect(s.decide(now: start, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: start,
                         lastFailure: nil) == .wait(until: start + 5))
        #expect(s.decide(now: start + 5, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: start,
                         lastFailure: nil) == .rotate)
    }

    @Test func aFailedRotationIsRetriedAfterTheRetryDelay() {
        let s = KeyRotationSchedule(interval: day, retry: 30)
        let due = s.deadline(keyCreatedAt: 0, node: "n1", key: key)
        #expect(s.decide(now: due + 1, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: 0,
                         lastFailure: due) == .wait(until: due + 30))
        #expect(s.decide(now: due + 30, keyCreatedAt: 0, node: "n1", key: key, agentStartedAt: 0,
                         lastFailure: due) == .rotate)
    }

    @Test func theNewKeyStartsANewPeriod() {
        let s = KeyRotationSchedule(interval: day)
        let due = s.deadline(keyCreatedAt: 0, node: "n1", key: key)
        let next = Key.generatePrivate().publicKey()
        let after = s.decide(now: due + 1, keyCreatedAt: due, node: "n1", key: next, agentStartedAt: 0, lastFailure: nil)
        #expect(after == .wait(until: s.deadline(keyCreatedAt: due, node: "n1", key: next)))
        if case .wait(let until) = after { #expect(until >= due + 0.9 * day) }
    }

    @Test func jitterFractionStaysInRange() {
        for i in 0..<1000 {
            let f = KeyRotationSchedule.jitterFraction(node: "n\(i)", key: Key.generatePrivate().publicKey())
            #expect(f >= -1 && f < 1)
        }
    }
}
