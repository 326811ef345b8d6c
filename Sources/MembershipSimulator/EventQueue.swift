/// A min-heap of timed items ordered by (time, insertion sequence), so items due at the same
/// virtual instant come out in the order they were scheduled: the simulator's only source of order.
struct EventQueue<Payload> {
    struct Entry {
        var time: Int64
        var sequence: UInt64
        var payload: Payload

        @inline(__always) func precedes(_ other: Entry) -> Bool {
            time != other.time ? time < other.time : sequence < other.sequence
        }
    }

    private var heap: [Entry] = []
    private var nextSequence: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }
    /// The time of the earliest item.
    var nextTime: Int64? { heap.first?.time }

    mutating func push(at time: Int64, _ payload: Payload) {
        heap.append(Entry(time: time, sequence: nextSequence, payload: payload))
        nextSequence &+= 1
        siftUp(heap.count - 1)
    }

    mutating func pop() -> Entry? {
        guard !heap.isEmpty else { return nil }
        let last = heap.removeLast()
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        siftDown(0)
        return top
    }

    mutating func removeAll() { heap.removeAll(keepingCapacity: true) }

    private mutating func siftUp(_ start: Int) {
        var i = start
        let item = heap[i]
        while i > 0 {
            let parent = (i - 1) >> 1
            guard item.precedes(heap[parent]) else { break }
            heap[i] = heap[parent]
            i = parent
        }
        heap[i] = item
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        let item = heap[i]
        let n = heap.count
        while true {
            let left = 2 * i + 1
            if left >= n { break }
            let right = left + 1
            let child = right < n && heap[right].precedes(heap[left]) ? right : left
            guard heap[child].precedes(item) else { break }
            heap[i] = heap[child]
            i = child
        }
        heap[i] = item
    }
}
