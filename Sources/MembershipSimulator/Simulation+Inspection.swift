import IPNetwork
import Membership
import WireMeshCrypto


/// What a test or benchmark reads off a running simulation.
extension Simulation {
    /// The node's membership core (nil while crashed).
    public func node(_ i: Int) -> MembershipNode? { cores[i] }

    /// What the node's sealing counted: datagrams on the wire and those dropped before its core.
    public func sealCounters(_ i: Int) -> SealCounters { seals[i].counters }

    /// Index of the node with this name.
    public func index(of name: String) -> Int? { nameIndex[name].map(Int.init) }

    /// True when the node is running and has not left.
    public func isLive(_ i: Int) -> Bool { hosts[i].up && !hosts[i].left }

    /// True when the node is running (it may have left).
    public func isUp(_ i: Int) -> Bool { hosts[i].up }

    /// Indices of running nodes that have not left.
    public var liveNodes: [Int] { (0..<n).filter { isLive($0) } }

    /// What `observer` currently believes about `subject`.
    public func view(of subject: Int, at observer: Int) -> Member? {
        cores[observer]?.member(named: names[subject])
    }

    /// The current own record version of a running node.
    public func currentVersion(_ i: Int) -> UInt64? { cores[i]?.localRecord.record.version }

    /// True when every live node sees every other live node alive at its current record version.
    public func isConverged() -> Bool {
        let live = liveNodes
        var versions = [UInt64](repeating: 0, count: n)
        for s in live { versions[s] = cores[s]!.localRecord.record.version }
        for o in live {
            let row = o * n
            for s in live where s != o {
                if viewRank[row + s] != 0 || viewVersion[row + s] != versions[s] { return false }
            }
        }
        return true
    }

    /// Live (observer, subject) pairs that are not yet converged (for diagnostics).
    public func unconvergedPairs(limit: Int = 10) -> [(observer: Int, subject: Int, rank: UInt8, version: UInt64)] {
        var out: [(Int, Int, UInt8, UInt64)] = []
        let live = liveNodes
        for o in live {
            for s in live where s != o {
                let v = cores[s]!.localRecord.record.version
                if viewRank[o * n + s] != 0 || viewVersion[o * n + s] != v {
                    out.append((o, s, viewRank[o * n + s], viewVersion[o * n + s]))
                    if out.count >= limit { return out }
                }
            }
        }
        return out
    }

    /// A hash of everything that happened (event times, kinds, nodes, payload bytes, datagram sizes,
    /// view changes).
    public var traceHash: UInt64 { trace.value }
}
