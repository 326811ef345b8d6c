@testable import MembershipSimulator
import Testing

@Suite("Simulator event queue")
struct EventQueueTests {
    @Test("pops by time, and in scheduling order among equal times")
    func ordering() {
        var q = EventQueue<Int>()
        var rng = SimRandom(seed: 5)
        var expected: [(Int64, Int)] = []
        for i in 0..<2000 {
            let t = Int64(rng.next() % 50)
            q.push(at: t, i)
            expected.append((t, i))
        }
        expected.sort { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
        var popped: [(Int64, Int)] = []
        while let e = q.pop() { popped.append((e.time, e.payload)) }
        #expect(popped.map(\.0) == expected.map(\.0))
        #expect(popped.map(\.1) == expected.map(\.1))
        #expect(q.isEmpty)
    }

    @Test("interleaved pushes and pops keep the heap order")
    func interleaved() {
        var q = EventQueue<Int64>()
        var rng = SimRandom(seed: 6)
        var now: Int64 = 0
        for _ in 0..<5000 {
            if rng.chance(0.6) {
                let t = now + Int64(rng.next() % 1000)
                q.push(at: t, t)
            } else if let e = q.pop() {
                #expect(e.time >= now)
                #expect(e.payload == e.time)
                now = e.time
            }
        }
    }
}
