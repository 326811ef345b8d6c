import IPNetwork

extension Device {
    /// What a WireGuard device does with `config` (the semantics of a SET, kernel and wireguard-go
    /// alike): the device an in-memory dataplane holds after it, and the reference for round trips.
    ///
    /// An allowed IP is unique per interface: giving it to one peer takes it from any other, which is
    /// what moves a rotating node's prefixes to its new key in one operation.
    public func applying(_ config: DeviceConfig) -> Device {
        var d = self
        if let k = config.privateKey {
            d.privateKey = k.isZero ? nil : k
            d.publicKey = d.privateKey?.publicKey()
        }
        if let p = config.listenPort { d.listenPort = p }
        if let m = config.fwmark { d.fwmark = m }
        if config.replacePeers { d.peers = [] }
        for pc in config.peers {
            let i = d.peers.firstIndex { $0.publicKey == pc.publicKey }
            if pc.remove {
                if let i { d.peers.remove(at: i) }
                continue
            }
            if i == nil && pc.updateOnly { continue }
            var p = i.map { d.peers[$0] } ?? Peer(publicKey: pc.publicKey)
            if let k = pc.presharedKey { p.presharedKey = k.isZero ? nil : k }
            if let e = pc.endpoint { p.endpoint = e }
            if let s = pc.persistentKeepaliveInterval { p.persistentKeepaliveInterval = s }
            if pc.replaceAllowedIPs { p.allowedIPs = [] }
            for ip in pc.allowedIPs where !p.allowedIPs.contains(ip.network) {
                p.allowedIPs.append(ip.network)
                for j in d.peers.indices where d.peers[j].publicKey != pc.publicKey {
                    d.peers[j].allowedIPs.removeAll { $0 == ip.network }
                }
            }
            if let i { d.peers[i] = p } else { d.peers.append(p) }
        }
        return d
    }
}
