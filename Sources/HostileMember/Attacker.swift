#if canImport(Glibc)
import Glibc
#endif
import Foundation
import IPNetwork
import LinePort
import Membership
import WireMeshAgent
import WireMeshJoin
import WireMeshCrypto

/// One member's secrets as a thief holds them: its state directory (identity seed, cluster keys,
/// certificate, cluster id), and a UDP socket of its own on the underlay. Everything it sends is
/// built and sealed here exactly as the agent would, so a refusal is the cluster's doing, not a
/// malformed datagram.
final class Attacker {
    /// The member's state (nil for a stranger: then only `identity` and `keyring` are its own).
    let state: NodeState?
    let identity: SigningIdentity
    var keyring: Keyring
    let clusterID: String
    let fd: CInt
    let local: Endpoint
    /// Datagrams sent, received, and received but not opened by `keyring`.
    var sent = 0, received = 0, unopened = 0
    /// Every record and liveness claim heard so far, by member name.
    var records: [String: SignedNodeRecord] = [:]
    var statuses: [String: (version: UInt64, status: MemberStatus)] = [:]
    /// Answer pings addressed to `pingName` (keeps the member alive in the others' views).
    var pingName: String?
    var acksSent = 0

    /// Where keys fetched from members are kept between runs (the thief's own memory, next to the
    /// stolen state): an evicted member holds the newest key it was ever handed.
    let keysFile: String?

    init(stateDir: String?, bind: Endpoint, stranger: Bool = false) throws {
        if let stateDir, !stranger {
            let state = try StateStore(directory: stateDir).load()
            self.state = state
            identity = state.identity
            keyring = state.keyring
            clusterID = state.clusterID
            keysFile = stateDir + "/hostile-fetched-keys"
            if let text = try? String(contentsOfFile: keysFile!, encoding: .utf8) {
                for line in text.split(separator: "\n") {
                    if let k = try? Key(base64: String(line)), !keyring.keys.contains(ClusterKey(key: k)) { keyring.install(ClusterKey(key: k)) }
                }
            }
        } else {
            // A stranger: its own identity and a cluster key of its own. It may know the cluster id
            // (tokens carry it), so it uses the real one when given a state directory to read it from.
            state = nil
            keysFile = nil
            identity = .generate()
            keyring = Keyring(primary: .generate())
            if let stateDir, let id = try? StateStore(directory: stateDir).recordedClusterID() {
                clusterID = id
            } else {
                clusterID = "0000000000000000"
            }
        }
        local = bind
        fd = try Self.socket(bind)
    }

    deinit { close(fd) }

    /// Asks the targets for the keyring as this member, like its agent would at start (a rotation
    /// may have happened since the state was taken); keeps every key it gets, the newest primary.
    func syncKeyring(_ targets: [Endpoint], stateDir: String) async {
        guard let state, let keysFile else { return }
        let saved = MemberBlob.decode((try? StateStore(directory: stateDir).loadMembers()) ?? [])
        for target in targets {
            guard let member = saved.first(where: { $0.record.gossipAddress == target }) else { continue }
            let ephemeral = Key.generatePrivate()
            let request = KeyringRequest(clusterID: clusterID, node: state.node.name, ephemeral: ephemeral,
                                         issuedAt: Int64(Date().timeIntervalSince1970 * 1000), identity: identity)
            guard case .keyring(let answer)? = try? await LineClient.exchange(.keyring(request), with: target, timeout: .seconds(3)),
                  let got = try? answer.open(for: request, ephemeral: ephemeral, memberIdentity: member.record.identity, clusterID: clusterID),
                  let primary = got.first?.key else { continue }
            var ring = Keyring(primary: primary)
            for k in got.map(\.key) + keyring.keys where !ring.keys.contains(k) { ring.install(k) }
            keyring = ring
            try? ring.keys.map(\.key.base64).joined(separator: "\n").write(toFile: keysFile, atomically: true, encoding: .utf8)
            return
        }
    }

    static func socket(_ bind: Endpoint) throws -> CInt {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HostileError("socket: \(String(cString: strerror(errno)))") }
        var one: CInt = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size))
        var size: CInt = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<CInt>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, socklen_t(MemoryLayout<CInt>.size))
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var sa = sockaddr(bind)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw HostileError("bind \(bind): \(String(cString: strerror(e)))")
        }
        return fd
    }

    static func sockaddr(_ e: Endpoint) -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = e.port.bigEndian
        inet_pton(AF_INET, e.address.description, &sa.sin_addr)
        return sa
    }

    // MARK: Sending

    /// Seals `messages` into one datagram with the held keyring and sends it.
    func send(_ messages: [WireMessage], to target: Endpoint) {
        sendRaw(DatagramSeal.datagram(messages, keyring: keyring, clusterID: Array(clusterID.utf8)), to: target)
    }

    /// Packs `messages` into as few datagrams as fit (payload budget of the agents: 1200 bytes).
    func sendPacked(_ messages: [WireMessage], to target: Endpoint, pace: Duration = .zero) {
        var batch: [WireMessage] = []
        var size = 0
        let budget = 1200 - DatagramSeal.overhead
        for m in messages {
            let n = WireFormat.encode(m).count
            if size + n > budget, !batch.isEmpty {
                send(batch, to: target)
                batch = []
                size = 0
                if pace > .zero { Thread.sleep(forTimeInterval: Double(pace.components.attoseconds) / 1e18) }
            }
            batch.append(m)
            size += n
        }
        if !batch.isEmpty { send(batch, to: target) }
    }

    func sendRaw(_ datagram: [UInt8], to target: Endpoint) {
        var sa = Self.sockaddr(target)
        let n = datagram.withUnsafeBytes { bytes in
            withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) {
                    sendto(fd, bytes.baseAddress, bytes.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        if n >= 0 { sent += 1 }
    }

    // MARK: Receiving

    /// Reads datagrams for `seconds`: opens them, remembers records and claims, answers pings
    /// addressed to `pingName`. Returns how many arrived.
    @discardableResult
    func drain(for seconds: Double) -> Int {
        let deadline = Date().addingTimeInterval(seconds)
        var count = 0
        var buffer = [UInt8](repeating: 0, count: 65_536)
        repeat {
            var from = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = buffer.withUnsafeMutableBytes { b in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: Glibc.sockaddr.self, capacity: 1) { recvfrom(fd, b.baseAddress, b.count, 0, $0, &len) }
                }
            }
            guard n > 0 else { continue }
            count += 1
            received += 1
            let sender = Endpoint(address: IPAddress(bytes: withUnsafeBytes(of: from.sin_addr.s_addr) { Array($0) })!,
                                  port: UInt16(bigEndian: from.sin_port))
            handle(Array(buffer[0..<n]), from: sender)
        } while Date() < deadline
        return count
    }

    func handle(_ datagram: [UInt8], from sender: Endpoint) {
        guard case .success(let decoded) = DatagramSeal.decode(datagram, keyring: keyring, clusterID: Array(clusterID.utf8)) else {
            unopened += 1
            return
        }
        var answer: [WireMessage] = []
        for m in decoded.messages {
            switch m {
            case .record(let s):
                if (records[s.record.name]?.record.version ?? 0) < s.record.version { records[s.record.name] = s }
            case .status(let name, let version, let status, _):
                if let old = statuses[name], old.version > version || (old.version == version && old.status > status) { break }
                statuses[name] = (version, status)
            case .digestEntries(_, _, _, let entries):
                for e in entries { pendingHashes.insert(e.nameHash) }
            case .ping(let seq, let target, _) where target == pingName:
                answer.append(.ack(seq: seq))
                acksSent += 1
            default:
                break
            }
        }
        if !answer.isEmpty { send(answer, to: sender) }
    }

    var pendingHashes: Set<UInt64> = []

    /// Learns the cluster as any member can: an empty digest makes `target` list its entries, and a
    /// request for each entry brings its record and status.
    func observe(_ targets: [Endpoint]) {
        for target in targets {
            pendingHashes = []
            send([.digestSummary(fingerprints: [UInt32](repeating: 0, count: MembershipConfig.wiremeshDefaults.digestBuckets))], to: target)
            drain(for: 0.2)
            let asked = Array(pendingHashes)
            for chunk in stride(from: 0, to: asked.count, by: 2) {
                let items = asked[chunk..<min(chunk + 2, asked.count)].map { DigestRequest(nameHash: $0, haveVersion: 0) }
                send([.request(items)], to: target)
            }
            drain(for: 0.2)
        }
    }

    /// Asks `target` for the current record and status of `name`.
    func refresh(_ name: String, at target: Endpoint) {
        send([.request([DigestRequest(nameHash: WireFormat.nameHash(name), haveVersion: 0)])], to: target)
    }

    /// The member whose gossip address is `endpoint`.
    func name(at endpoint: Endpoint) -> String? {
        records.values.first { $0.record.gossipAddress == endpoint }?.record.name
    }

    // MARK: Forging

    /// A record as a member would write it, signed by `signer`.
    func record(name: String, signer: SigningIdentity, version: UInt64, podCIDRs: [IPPrefix], overlay: IPAddress?,
                certificate: NodeCertificate?, wireGuardKey: Key? = nil, clusterKeys: [ClusterKeyTag] = []) throws -> SignedNodeRecord {
        var r = NodeRecord(name: name, identity: signer.publicKey, version: version,
                           wireguardKey: wireGuardKey ?? Key.generatePrivate().publicKey(),
                           wireguardEndpoints: [Endpoint(address: local.address, port: 51820)], gossipAddress: local,
                           podCIDRs: podCIDRs, overlayAddress: overlay)
        r.certificate = certificate
        r.clusterKeys = clusterKeys
        return try SignedNodeRecord(signing: r, with: signer)
    }

    /// The member's own record at `version`, with its own certificate and WireGuard key, changed by `edit`.
    func ownRecord(version: UInt64, _ edit: (inout NodeRecord) -> Void = { _ in }) throws -> SignedNodeRecord {
        guard let state else { throw HostileError("a stranger has no record of its own") }
        var r = NodeRecord(name: state.node.name, identity: identity.publicKey, version: version,
                           wireguardKey: state.wireGuardKey.publicKey(),
                           wireguardEndpoints: [Endpoint(address: local.address, port: 51820)], gossipAddress: local,
                           podCIDRs: state.node.podCIDRs, overlayAddress: state.node.overlayAddress)
        r.certificate = state.certificate
        r.clusterKeys = state.clusterKeys.tags
        r.revocationSerial = state.revocations?.serial ?? 0
        edit(&r)
        return try SignedNodeRecord(signing: r, with: identity)
    }

    /// A version above any this member's record had (versions are wall-clock milliseconds).
    var freshVersion: UInt64 {
        let seen = state.flatMap { records[$0.node.name]?.record.version } ?? 0
        return max(seen, UInt64(Date().timeIntervalSince1970 * 1000)) + 1000
    }
}

struct HostileError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Prints one JSON object on a line (what the e2e script reads).
func emit(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}
