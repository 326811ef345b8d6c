import IPNetwork
@testable import LinePort
import Testing

/// The line port's bounds: idle connections from one host cannot take every slot (issue 10: ~1000 idle
/// connections exhausted an agent's descriptors).
@Suite struct ConnectionBudgetTests {
    @Test func oneSourceGetsItsShareAndTheTotalIsCapped() throws {
        let slots = ConnectionSlots(ConnectionBudget(total: 5, perSource: 2))
        let a = try IPAddress("10.0.0.1"), b = try IPAddress("10.0.0.2"), c = try IPAddress("10.0.0.3")
        #expect(slots.take(a) && slots.take(a))
        #expect(!slots.take(a), "a third connection from one source")
        #expect(slots.take(b) && slots.take(b) && slots.take(c))
        #expect(!slots.take(c), "the sixth connection in all")
        slots.give(a)
        #expect(slots.take(c), "a closed connection frees its slot")
        #expect(!slots.take(a))
        // Giving back what was never taken changes nothing (no negative counts).
        slots.give(try IPAddress("10.0.0.9"))
        #expect(!slots.take(try IPAddress("10.0.0.9")))
    }
}

/// The default budget fits the descriptor limit (issue 12: at `ulimit -n 64`, 128 held line-port
/// connections left the agent no descriptor for its UAPI socket and held up its control socket).
@Suite struct ConnectionBudgetFittingTests {
    @Test func aLowDescriptorLimitCutsTheBudgetToAQuarterOfWhatTheReserveLeaves() {
        let low = ConnectionBudget.fitting(descriptorLimit: 64)
        #expect(low.total == 8)
        #expect(low.perSource == 2, "one host cannot take every slot")
        let tiny = ConnectionBudget.fitting(descriptorLimit: 40)
        #expect(tiny.total == 4 && tiny.perSource == 2, "never below 4 in all and 2 per source")
        #expect(ConnectionBudget.fitting(descriptorLimit: 256).total == 56)
    }

    @Test func aUsualLimitKeepsTheDefaults() {
        #expect(ConnectionBudget.fitting(descriptorLimit: 1024) == ConnectionBudget())
        #expect(ConnectionBudget.fitting(descriptorLimit: nil) == ConnectionBudget())
    }
}
