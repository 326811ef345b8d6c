import Foundation
import Membership
import Metrics
import Prometheus
import WireGuard
import WireMeshCrypto

/// The agent's Prometheus metric names (base units, `_total` counters). Recorded through swift-metrics:
/// with `--metrics-address` the process is bootstrapped with swift-prometheus (`MetricsServer`), without
/// it every call goes to swift-metrics' no-op backend. No label carries a key or a secret: peers are
/// named by their node name.
public enum MetricName {
    public static let peers = "wiremesh_peers"                                      // {state}
    public static let peerLastHandshake = "wiremesh_peer_last_handshake_seconds"    // {peer}: seconds since
    public static let peerReceiveBytes = "wiremesh_peer_receive_bytes_total"       // {peer}
    public static let peerTransmitBytes = "wiremesh_peer_transmit_bytes_total"     // {peer}
    public static let gossipDatagrams = "wiremesh_gossip_datagrams_total"          // {direction}
    public static let gossipBytes = "wiremesh_gossip_bytes_total"                  // {direction}
    public static let gossipDropped = "wiremesh_gossip_datagrams_dropped_total"    // {reason}
    public static let suspicions = "wiremesh_suspicions_total"                     // {outcome}
    public static let probes = "wiremesh_probes_total"                             // {event}
    public static let pushPulls = "wiremesh_push_pulls_total"                      // {event}
    public static let pushPullBytes = "wiremesh_push_pull_bytes_total"             // {direction}
    public static let reconcileDuration = "wiremesh_reconcile_duration_seconds"
    public static let reconcileOperations = "wiremesh_reconcile_operations_total"  // {kind}
    public static let driftRepaired = "wiremesh_drift_repaired_total"
    public static let keyAge = "wiremesh_key_age_seconds"
    public static let keyRotations = "wiremesh_key_rotations_total"
    public static let clusterKeyGeneration = "wiremesh_cluster_key_generation"
    public static let joins = "wiremesh_joins_total"                               // {result}
}

/// The process's metrics backend: swift-metrics bootstrapped once with swift-prometheus.
public enum AgentMetricsBackend {
    private static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Passes take milliseconds: finer buckets than the default 5 ms .. 10 s.
        factory.durationHistogramBuckets[MetricName.reconcileDuration] = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5)]
        MetricsSystem.bootstrap(factory)
        // Counters exist from the start at 0 (an alert on `rate()` or `increase()` needs the series).
        for counter in [Counter(label: MetricName.driftRepaired), Counter(label: MetricName.keyRotations),
                        Counter(label: MetricName.joins, dimensions: [("result", "admitted")]),
                        Counter(label: MetricName.joins, dimensions: [("result", "refused")])] {
            counter.increment(by: 0)
        }
        return registry
    }()

    /// Bootstraps swift-metrics (once per process) and returns the registry `/metrics` emits.
    public static func bootstrap() -> PrometheusCollectorRegistry { registry }
}

/// Per-peer series as last scraped, so the counters follow the device's and series of peers that went
/// away are removed.
struct PeerSeries: Sendable {
    var bytes: [String: (receive: UInt64, transmit: UInt64)] = [:]
    /// The gossip transport's counters at the last scrape (they become Prometheus counters by delta).
    var gossip: [String: Int] = [:]
}

/// The gossip transport's counters under their metric names and labels.
enum GossipSeries {
    static func values(_ c: GossipCounters) -> [String: Int] {
        [
            "\(MetricName.gossipDatagrams)|direction|in": c.seal.datagramsReceived,
            "\(MetricName.gossipDatagrams)|direction|out": c.seal.datagramsSent,
            "\(MetricName.gossipBytes)|direction|in": c.seal.bytesReceived,
            "\(MetricName.gossipBytes)|direction|out": c.seal.bytesSent,
            "\(MetricName.gossipDropped)|reason|truncated": c.seal.droppedTruncated,
            "\(MetricName.gossipDropped)|reason|oversized": c.seal.droppedOversized,
            "\(MetricName.gossipDropped)|reason|bad_version": c.seal.droppedBadVersion,
            "\(MetricName.gossipDropped)|reason|bad_key": c.seal.droppedAuthFailed,
            "\(MetricName.gossipDropped)|reason|replay": c.seal.droppedReplayed,
            "\(MetricName.gossipDropped)|reason|malformed": c.membership.droppedMalformed,
            "\(MetricName.gossipDropped)|reason|bad_signature": c.membership.rejectedBadSignature,
            "\(MetricName.gossipDropped)|reason|identity_conflict": c.membership.rejectedIdentityConflict,
            "\(MetricName.gossipDropped)|reason|view_full": c.membership.rejectedViewFull,
            "\(MetricName.gossipDropped)|reason|untrusted": c.membership.rejectedUntrusted,
            "\(MetricName.gossipDropped)|reason|repeated": c.membership.rejectedRepeated,
            "\(MetricName.suspicions)|outcome|refuted": c.membership.suspicionsRefuted,
            "\(MetricName.suspicions)|outcome|confirmed": c.membership.suspicionsConfirmed,
            // What a lossy underlay costs (failed probes, retries, stream probes over the line port).
            "\(MetricName.probes)|event|failed": c.membership.probesFailed,
            "\(MetricName.probes)|event|retried": c.membership.probeRetriesSent,
            "\(MetricName.probes)|event|stream_sent": c.membership.streamProbesSent,
            "\(MetricName.probes)|event|stream_acked": c.membership.streamProbeAcks,
            "\(MetricName.probes)|event|stream_answered": c.membership.streamProbesAnswered,
            "\(MetricName.probes)|event|stream_refused": c.membership.streamProbesRefused,
            "\(MetricName.probes)|event|suspicion_check": c.membership.suspicionChecksSent,
            // Whole-view swaps over the line port (a heal, a mass join) and what was refused.
            "\(MetricName.pushPulls)|event|started": c.membership.pushPullsStarted,
            "\(MetricName.pushPulls)|event|answered": c.membership.pushPullsAnswered,
            "\(MetricName.pushPulls)|event|applied": c.membership.pushPullRepliesApplied,
            "\(MetricName.pushPulls)|event|refused_oversized": c.membership.pushPullOversized,
            "\(MetricName.pushPulls)|event|refused_unsolicited": c.membership.pushPullUnsolicited,
            "\(MetricName.pushPulls)|event|refused_rate": c.membership.pushPullRateLimited,
            "\(MetricName.pushPullBytes)|direction|in": c.membership.pushPullBytesReceived,
            "\(MetricName.pushPullBytes)|direction|out": c.membership.pushPullBytesSent,
        ]
    }
}

/// What one reconcile pass did, by kind (`wiremesh_reconcile_operations_total`).
enum ReconcileOperations {
    static func count(_ writes: [DeviceConfig], routesAdded: Int, routesRemoved: Int) -> [String: Int] {
        var out: [String: Int] = [:]
        for write in writes {
            if write.privateKey != nil { out["private_key", default: 0] += 1 }
            for p in write.peers {
                let kind = p.remove ? "peer_remove" : p.updateOnly ? "peer_kick" : "peer_set"
                out[kind, default: 0] += 1
            }
        }
        if routesAdded > 0 { out["route_add"] = routesAdded }
        if routesRemoved > 0 { out["route_remove"] = routesRemoved }
        return out
    }
}

extension Agent {
    /// Scrape-time values: members by state, each peer's handshake age and byte counters, key age,
    /// cluster key generation.
    func refreshMetrics() async {
        let members = await currentView().members.filter { $0.name != state.node.name }
        var byState = ["alive": 0, "suspect": 0, "dead": 0, "left": 0]
        for m in members { byState[Self.stateName(m.status), default: 0] += 1 }
        for (name, count) in byState { Gauge(label: MetricName.peers, dimensions: [("state", name)]).record(count) }

        let wall = clock.wall().timeIntervalSince1970
        let device = (try? reconciler.device())?.peers ?? []
        var byKey: [Key: Peer] = [:]
        for p in device { byKey[p.publicKey] = p }
        var seen = PeerSeries(gossip: peerSeries.gossip)
        for m in members {
            guard let peer = byKey[m.record.record.wireguardKey] else { continue }
            let label = [("peer", m.name)]
            if let hs = peer.lastHandshake, hs.seconds > 0 {
                Gauge(label: MetricName.peerLastHandshake, dimensions: label).record(max(0, wall - Double(hs.seconds)))
            }
            // The device's counters restart when a peer entry is re-created: count from zero again.
            let last = peerSeries.bytes[m.name] ?? (0, 0)
            let rx = peer.receiveBytes >= last.receive ? peer.receiveBytes - last.receive : peer.receiveBytes
            let tx = peer.transmitBytes >= last.transmit ? peer.transmitBytes - last.transmit : peer.transmitBytes
            Counter(label: MetricName.peerReceiveBytes, dimensions: label).increment(by: Int64(clamping: rx))
            Counter(label: MetricName.peerTransmitBytes, dimensions: label).increment(by: Int64(clamping: tx))
            seen.bytes[m.name] = (peer.receiveBytes, peer.transmitBytes)
        }
        for name in peerSeries.bytes.keys where seen.bytes[name] == nil {
            let label = [("peer", name)]
            Gauge(label: MetricName.peerLastHandshake, dimensions: label).destroy()
            Counter(label: MetricName.peerReceiveBytes, dimensions: label).destroy()
            Counter(label: MetricName.peerTransmitBytes, dimensions: label).destroy()
        }
        peerSeries = seen

        if let counters = try? await transport?.counters() {
            let now = GossipSeries.values(counters)
            for (key, value) in now {
                let parts = key.split(separator: "|").map(String.init)
                let last = peerSeries.gossip[key] ?? 0
                // A new transport (restart of gossip) counts from zero again.
                let delta = value >= last ? value - last : value
                if delta > 0 || peerSeries.gossip[key] == nil {
                    Counter(label: parts[0], dimensions: [(parts[1], parts[2])]).increment(by: delta)
                }
            }
            peerSeries.gossip = now
        }
        Gauge(label: MetricName.keyAge).record(max(0, wall - state.wireGuardKeyCreatedAt.timeIntervalSince1970))
        if let primary = clusterKeyStatus.keys.first(where: \.primary) {
            Gauge(label: MetricName.clusterKeyGeneration).record(Int64(clamping: primary.generation))
        }
    }

    /// nil when ready (gossip up, the device and routes as planned), else why not: `/readyz`.
    func notReady() -> String? {
        if transport == nil { return "gossip is not up yet" }
        return deviceProblem
    }
}
