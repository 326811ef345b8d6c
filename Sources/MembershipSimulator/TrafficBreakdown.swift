import Membership

/// Bytes sent on the simulated network by kind, for finding where bandwidth goes. Off by default:
/// counting decodes every payload a second time.
public struct TrafficBreakdown: Sendable, Equatable {
    /// What a byte was spent on.
    public enum Kind: Int, CaseIterable, Sendable {
        case ping, pingReq, ack, nack, record
        case statusAlive, statusSuspect, statusDead
        case leave, digestSummary, digestEntries, request, unknown
        /// Seal (version, nonce, tag) and UDP/IPv4 header of datagrams led by a probe message (ping,
        /// ping-req, ack, nack).
        case overheadProbe
        /// The same for datagrams that carry only broadcasts (gossip rounds, refutations, replies).
        case overheadGossip
        /// The same for anti-entropy datagrams (digests, requests).
        case overheadAntiEntropy
        /// Push/pull streams (payload, TCP/IP headers, handshakes).
        case stream
        /// Stream probes (the TCP fallback after failed indirect probes).
        case streamProbe

        public var label: String {
            switch self {
            case .ping: return "ping"
            case .pingReq: return "ping-req"
            case .ack: return "ack"
            case .nack: return "nack"
            case .record: return "record"
            case .statusAlive: return "status alive"
            case .statusSuspect: return "status suspect"
            case .statusDead: return "status dead"
            case .leave: return "leave"
            case .digestSummary: return "digest summary"
            case .digestEntries: return "digest entries"
            case .request: return "state request"
            case .unknown: return "unknown"
            case .overheadProbe: return "header+seal: probe datagrams"
            case .overheadGossip: return "header+seal: gossip datagrams"
            case .overheadAntiEntropy: return "header+seal: anti-entropy datagrams"
            case .stream: return "push/pull streams"
            case .streamProbe: return "stream probes"
            }
        }
    }

    /// Bytes per kind (indexed by `Kind.rawValue`).
    public var bytes = [Int](repeating: 0, count: Kind.allCases.count)
    /// Datagrams per leading kind: probe, gossip, anti-entropy.
    public var datagrams = [Int](repeating: 0, count: 3)

    public init() {}

    public subscript(_ k: Kind) -> Int { bytes[k.rawValue] }

    /// Attributes one sent datagram: its payload's messages and `overhead` bytes of seal and headers.
    mutating func count(payload: [UInt8], overhead: Int) {
        let decoded = WireFormat.decodePayload(payload)
        var lead: Kind?
        for m in decoded.messages {
            let k: Kind
            switch m {
            case .ping: k = .ping
            case .pingReq: k = .pingReq
            case .ack: k = .ack
            case .nack: k = .nack
            case .record: k = .record
            case .status(_, _, let s, _):
                switch s {
                case .alive: k = .statusAlive
                case .suspect: k = .statusSuspect
                default: k = .statusDead
                }
            case .leave: k = .leave
            case .digestSummary: k = .digestSummary
            case .digestEntries: k = .digestEntries
            case .request: k = .request
            }
            if lead == nil { lead = k }
            bytes[k.rawValue] += WireFormat.encode(m).count
        }
        let known = decoded.messages.reduce(0) { $0 + WireFormat.encode($1).count }
        bytes[Kind.unknown.rawValue] += payload.count - known
        let o: Kind
        switch lead {
        case .ping?, .pingReq?, .ack?, .nack?: o = .overheadProbe
        case .digestSummary?, .digestEntries?, .request?: o = .overheadAntiEntropy
        default: o = .overheadGossip
        }
        bytes[o.rawValue] += overhead
        datagrams[o.rawValue - Kind.overheadProbe.rawValue] += 1
    }

    /// The difference `self - earlier`.
    public func since(_ earlier: TrafficBreakdown) -> TrafficBreakdown {
        var d = self
        for i in d.bytes.indices { d.bytes[i] -= earlier.bytes[i] }
        for i in d.datagrams.indices { d.datagrams[i] -= earlier.datagrams[i] }
        return d
    }
}
