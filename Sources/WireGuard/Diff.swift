import IPNetwork
import WireMeshCrypto

/// The smallest change that turns `actual` into `desired`, with `wg syncconf` semantics.
///
/// Never sets `replacePeers`: peers missing from `desired` are removed one by one, new peers are
/// added in full, and a peer present on both sides gets only the fields that differ, so a one-peer
/// change yields exactly one `PeerConfig` and equal states yield an empty config (idempotent).
///
/// What `desired` means where the model has no "unset":
/// - `privateKey == nil`: keep the device's key. `listenPort == 0`: any port is fine (keep it).
/// - `fwmark`: applied as given (0 turns it off).
/// - per peer, `endpoint == nil`: keep whatever the device has (roaming or a previous setting);
///   `presharedKey == nil` (or zero): no preshared key, cleared if the device has one;
///   keepalive and allowed IPs: applied as given.
///
/// Allowed IPs are compared as sets of masked prefixes (`10.0.0.1/24` equals `10.0.0.0/24`). If the
/// desired set only adds prefixes, only those are sent; any removal replaces that one peer's set
/// with the full desired set (Debian 12's kernel, 6.1, has no flag to remove one prefix).
///
/// Runs in O(peers + allowed IPs) using dictionaries keyed by public key: it runs on every
/// reconcile of devices with thousands of peers. `desired` must not list a public key twice.
public func diff(actual: Device, desired: Device) -> DeviceConfig {
    var config = DeviceConfig()

    // Devices clamp the private key they are given (RFC 7748), so compare clamped forms: a
    // file holding an unclamped key must not be re-sent on every apply.
    if let key = desired.privateKey, actual.privateKey.map(clamped) != clamped(key) {
        config.privateKey = key
    }
    if desired.listenPort != 0, desired.listenPort != actual.listenPort {
        config.listenPort = desired.listenPort
    }
    if desired.fwmark != actual.fwmark {
        config.fwmark = desired.fwmark
    }

    var actualIndex: [Key: Int] = [:]
    actualIndex.reserveCapacity(actual.peers.count)
    for (i, p) in actual.peers.enumerated() { actualIndex[p.publicKey] = i }

    // One pass over the desired peers; actual peers never matched are the ones to remove.
    var matched = [Bool](repeating: false, count: actual.peers.count)
    var changes: [PeerConfig] = []
    for want in desired.peers {
        guard let i = actualIndex[want.publicKey] else {
            changes.append(PeerConfig(
                publicKey: want.publicKey,
                presharedKey: nonZero(want.presharedKey),
                endpoint: want.endpoint,
                persistentKeepaliveInterval: want.persistentKeepaliveInterval == 0 ? nil : want.persistentKeepaliveInterval,
                allowedIPs: uniqueNetworks(want.allowedIPs)))
            continue
        }
        matched[i] = true
        if let change = peerDelta(actual: actual.peers[i], desired: want) {
            changes.append(change)
        }
    }

    // Removals first, so a prefix that moves from a removed peer to another one is never
    // briefly claimed by both.
    for (i, p) in actual.peers.enumerated() where !matched[i] {
        config.peers.append(PeerConfig(publicKey: p.publicKey, remove: true))
    }
    config.peers.append(contentsOf: changes)
    return config
}

/// Only what differs between two states of the same peer, or nil when they agree.
func peerDelta(actual: Peer, desired: Peer) -> PeerConfig? {
    var change = PeerConfig(publicKey: desired.publicKey)
    var changed = false

    let havePSK = nonZero(actual.presharedKey), wantPSK = nonZero(desired.presharedKey)
    if havePSK != wantPSK {
        change.presharedKey = wantPSK ?? .zero
        changed = true
    }
    if let e = desired.endpoint, e != actual.endpoint {
        change.endpoint = e
        changed = true
    }
    if desired.persistentKeepaliveInterval != actual.persistentKeepaliveInterval {
        change.persistentKeepaliveInterval = desired.persistentKeepaliveInterval
        changed = true
    }

    let want = uniqueNetworks(desired.allowedIPs)
    let have = PrefixLookup(actual.allowedIPs.map(\.network))
    let wanted = PrefixLookup(want)
    let added = want.filter { !have.contains($0) }
    let removedAny = have.items.contains { !wanted.contains($0) }
    if removedAny {
        change.replaceAllowedIPs = true
        change.allowedIPs = want
        changed = true
    } else if !added.isEmpty {
        change.allowedIPs = added
        changed = true
    }
    return changed ? change : nil
}

/// Masked prefixes in their first-seen order, without duplicates.
func uniqueNetworks(_ prefixes: [IPPrefix]) -> [IPPrefix] {
    var out: [IPPrefix] = []
    out.reserveCapacity(prefixes.count)
    if prefixes.count <= PrefixLookup.linearLimit {
        for p in prefixes {
            let n = p.network
            if !out.contains(n) { out.append(n) }
        }
        return out
    }
    var seen = Set<IPPrefix>()
    seen.reserveCapacity(prefixes.count)
    for p in prefixes {
        let n = p.network
        if seen.insert(n).inserted { out.append(n) }
    }
    return out
}

/// Membership test over a peer's prefixes: a linear scan for the usual handful (cheaper than
/// hashing thousands of tiny sets on a 5000-peer device), a Set beyond that so a peer with
/// thousands of prefixes stays linear overall.
struct PrefixLookup {
    static let linearLimit = 8
    let items: [IPPrefix]
    private let set: Set<IPPrefix>?

    init(_ items: [IPPrefix]) {
        self.items = items
        set = items.count > PrefixLookup.linearLimit ? Set(items) : nil
    }

    func contains(_ p: IPPrefix) -> Bool { set?.contains(p) ?? items.contains(p) }
}

/// `key` as X25519 uses it: low 3 bits of the first byte cleared, top bit cleared, bit 254 set.
func clamped(_ key: Key) -> Key {
    var b = key.bytes
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return try! Key(bytes: b)
}

private func nonZero(_ key: Key?) -> Key? {
    guard let k = key, !k.isZero else { return nil }
    return k
}
