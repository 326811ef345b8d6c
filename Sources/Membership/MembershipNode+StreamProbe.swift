import IPNetwork

// Stream probes: memberlist's TCP fallback. When a probe target has not acked by the last direct
// retry, the ping also goes over a stream, which retransmits what datagrams lose; its ack ends the
// probe like any other. Both directions are one message, checked like a datagram's and bounded.
extension MembershipNode {
    /// Largest stream probe request or reply (a ping with two names, or an ack), before sealing.
    public static let streamProbeMaxBytes = 2 * 256 + 16

    /// Takes a stream probe that `from` sent: exactly one ping addressed to this node. Answers
    /// `Directive.streamProbeReply` with its ack, at most `streamProbeAnswersPerInterval` per probe
    /// interval; anything else is refused (no directive: the shell closes the stream).
    public mutating func receiveStreamProbe(request payload: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        guard !hasLeft, payload.count <= Self.streamProbeMaxBytes,
              case let decoded = WireFormat.decodePayload(payload), decoded.messages.count == 1,
              case .ping(let seq, let target, _) = decoded.messages[0], target == local.record.name else {
            counters.streamProbesRefused += 1
            return finish(now: now)
        }
        guard streamProbeAnswers.admit(now: now, window: config.probeInterval, limit: config.streamProbeAnswersPerInterval) else {
            counters.streamProbesRefused += 1
            return finish(now: now)
        }
        counters.streamProbesAnswered += 1
        output.append(.streamProbeReply(payload: WireFormat.encode(.ack(seq: seq)), to: from))
        return finish(now: now)
    }

    /// Takes the reply to our stream probe of the member at `from`: one ack of the probe now pending
    /// for that very member (not a relay's, not another member's), else refused.
    public mutating func receiveStreamProbe(reply payload: [UInt8], from: Endpoint, now: Instant) -> [Directive] {
        guard payload.count <= Self.streamProbeMaxBytes,
              case let decoded = WireFormat.decodePayload(payload), decoded.messages.count == 1,
              case .ack(let seq) = decoded.messages[0],
              let p = probe, p.seq == seq, table[p.target]?.signed.record.gossipAddress == from else {
            counters.streamProbesRefused += 1
            return finish(now: now)
        }
        if !p.acked { counters.streamProbeAcks += 1 }
        handleAck(seq: seq, now: now)
        return finish(now: now)
    }
}

/// At most `limit` admissions per window of time (a fixed window that starts at the first admission
/// after the previous one ended): bounds what answering costs, whoever asks.
struct RateWindow {
    var start: Instant = .zero
    var count = 0

    mutating func admit(now: Instant, window: Duration, limit: Int) -> Bool {
        if now - start >= window || now < start {
            start = now
            count = 0
        }
        guard count < limit else { return false }
        count += 1
        return true
    }
}
