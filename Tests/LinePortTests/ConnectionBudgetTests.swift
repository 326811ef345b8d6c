import IPNetwork
@testable import LinePort
import NIOConcurrencyHelpers
import Testing

/// The line port's bounds: idle connections from one host cannot take every slot (issue 10: ~1000 idle
/// connections exhausted an agent's descriptors), and a flood from a few hosts cannot keep a joiner out.
@Suite struct ConnectionBudgetTests {
    /// Slots whose connections record being closed.
    final class Harness: Sendable {
        let slots: ConnectionSlots
        let closed = NIOLockedValueBox<[String]>([])
        init(_ budget: ConnectionBudget) { slots = ConnectionSlots(budget) }

        /// A connection named `name` from `address`: its slot, or nil when refused (the connection it
        /// pushed out, if any, is closed as the server would).
        func connect(_ name: String, from address: String) throws -> UInt64? {
            let (slot, evicted) = slots.take(try IPAddress(address), close: { self.closed.withLockedValue { $0.append(name) } })
            evicted?()
            return slot
        }
        var closedNames: [String] { closed.withLockedValue { $0 } }
    }

    @Test func oneSourceGetsItsShareAndTheTotalIsCapped() throws {
        let h = Harness(ConnectionBudget(total: 5, perSource: 2))
        let a1 = try h.connect("a1", from: "10.0.0.1"), a2 = try h.connect("a2", from: "10.0.0.1")
        #expect(a1 != nil && a2 != nil)
        #expect(try h.connect("a3", from: "10.0.0.1") == nil, "a third connection from one source")
        #expect(try h.connect("b1", from: "10.0.0.2") != nil && h.connect("b2", from: "10.0.0.2") != nil)
        #expect(try h.connect("c1", from: "10.0.0.3") != nil)
        #expect(try h.connect("c2", from: "10.0.0.3") == nil, "the sixth connection in all, every source as big as it may get")
        h.slots.give(a1!)
        #expect(try h.connect("c2", from: "10.0.0.3") != nil, "a closed connection frees its slot")
        #expect(try h.connect("a3", from: "10.0.0.1") == nil)
        // Giving back what was never taken, or twice, changes nothing (no negative counts).
        h.slots.give(999)
        h.slots.give(a1!)
        #expect(h.slots.openCount == 5)
        #expect(h.closedNames.isEmpty, "nobody was pushed out")
    }

    @Test func aNewSourceTakesTheOldestIdleSlotOfTheBiggestSourceWhenAllAreTaken() throws {
        let h = Harness(ConnectionBudget(total: 6, perSource: 4))
        // A flood from two addresses fills every slot: 4 + 2.
        for i in 1...4 { _ = try h.connect("a\(i)", from: "10.0.0.1") }
        for i in 1...2 { _ = try h.connect("b\(i)", from: "10.0.0.2") }
        #expect(try h.connect("a5", from: "10.0.0.1") == nil, "the biggest source gets nothing more")
        #expect(try h.connect("b3", from: "10.0.0.2") != nil, "b (2) is pushed up to a's size (4 -> 3)")
        #expect(h.closedNames == ["a1"], "a's oldest idle connection made room")
        #expect(try h.connect("b4", from: "10.0.0.2") == nil, "3 and 3: moving one would even nothing out")
        // A joiner from a third address gets in, again at the expense of the oldest idle of the biggest.
        let joiner = try h.connect("joiner", from: "10.0.0.9")
        #expect(joiner != nil)
        #expect(h.closedNames == ["a1", "a2"])
        // Its single connection is never pushed out, whoever comes next.
        #expect(try h.connect("c1", from: "10.0.0.3") != nil)
        #expect(try h.connect("c2", from: "10.0.0.3") == nil)
        #expect(!h.closedNames.contains("joiner"))
    }

    @Test func aConnectionThatSentItsLineIsNotPushedOut() throws {
        let h = Harness(ConnectionBudget(total: 2, perSource: 2))
        let a1 = try #require(try h.connect("a1", from: "10.0.0.1"))
        let a2 = try #require(try h.connect("a2", from: "10.0.0.1"))
        h.slots.busy(a1)
        h.slots.busy(a2)
        #expect(try h.connect("b1", from: "10.0.0.2") == nil, "both are being answered: the newcomer waits")
        #expect(h.closedNames.isEmpty)
        h.slots.give(a1)
        #expect(try h.connect("b1", from: "10.0.0.2") != nil)
    }

    @Test func oneIPv6HostIsOneSourceAndMappedIPv4IsIPv4() throws {
        #expect(ConnectionBudget.source(try IPAddress("2001:db8:1:2:aaaa::1")) == (try IPAddress("2001:db8:1:2::")))
        #expect(ConnectionBudget.source(try IPAddress("::ffff:10.1.2.3")) == (try IPAddress("10.1.2.3")))
        #expect(ConnectionBudget.source(try IPAddress("10.1.2.3")) == (try IPAddress("10.1.2.3")))
        let h = Harness(ConnectionBudget(total: 10, perSource: 2))
        #expect(try h.connect("x1", from: "2001:db8::1") != nil && h.connect("x2", from: "2001:db8::2") != nil)
        #expect(try h.connect("x3", from: "2001:db8::ffff:3") == nil, "every address of one /64 counts as one source")
        #expect(try h.connect("y1", from: "2001:db8:0:1::1") != nil, "the next /64 is another source")
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
