import WireMeshCrypto

/// The gossip datagram on the wire: version byte ‖ XChaCha20-Poly1305(payload), associated data =
/// cluster id ‖ version, sealed with the keyring's primary key and opened with any installed key.
///
/// Owned by the shells (UDP transport, simulator), never by `MembershipNode`: the core emits and
/// takes plaintext payloads and holds no key, so its outputs are a function of its inputs (sealing
/// draws a random nonce per datagram). The core budgets for `overhead` through
/// `MembershipConfig.sealOverhead`.
public struct DatagramSeal: Sendable {
    /// The only datagram format version this code speaks.
    public static let version: UInt8 = 1
    /// Bytes sealing adds to a payload (version byte, nonce, tag).
    public static let overhead = 1 + ClusterKey.overhead

    /// Why a datagram was dropped before its payload reached the core.
    public enum Drop: Error, Sendable, Equatable {
        case oversized, truncated, badVersion, authFailed, replayed
    }

    /// An authenticated payload and the key that opened it.
    public struct Opened: Sendable, Equatable {
        public var payload: [UInt8]
        /// Index in the keyring's keys of the key that opened it (0: the primary).
        public var keyIndex: Int
    }

    /// Cluster keys: seals with the primary, opens with any (replace to rotate the cluster key).
    public var keyring: Keyring
    /// The cluster id, bound into every datagram's authentication tag.
    public let clusterID: [UInt8]
    /// Largest datagram accepted (and, through the core's budget, produced).
    public let maxDatagram: Int
    /// Datagrams sealed and opened, and every reason one was refused.
    public private(set) var counters = SealCounters()
    /// Nonces of the datagrams opened lately (`ReplayFilter`).
    public private(set) var replays = ReplayFilter()

    public init(keyring: Keyring, clusterID: [UInt8], maxDatagram: Int = 1200) {
        self.keyring = keyring
        self.clusterID = clusterID
        self.maxDatagram = maxDatagram
    }

    /// Seals one payload the core emitted, counting it.
    public mutating func seal(_ payload: [UInt8]) -> [UInt8] {
        let datagram = Self.seal(payload, keyring: keyring, clusterID: clusterID)
        counters.datagramsSent += 1
        counters.bytesSent += datagram.count
        return datagram
    }

    /// Opens a received datagram for the core; nil (counted by reason) when it must be dropped. A
    /// datagram opened before (the same nonce, within `ReplayFilter`'s window) is dropped as a replay.
    public mutating func open(_ datagram: [UInt8], now: Instant) -> Opened? {
        counters.datagramsReceived += 1
        counters.bytesReceived += datagram.count
        switch Self.open(datagram, keyring: keyring, clusterID: clusterID, maxDatagram: maxDatagram) {
        case .success(let opened):
            // Checked after the tag: only authentic datagrams take a place in the filter.
            guard replays.admit(nonce: datagram.dropFirst().prefix(ClusterKey.nonceLength), now: now) else {
                counters.droppedReplayed += 1
                return nil
            }
            if opened.keyIndex > 0 { counters.openedWithOtherKey += 1 }
            return opened
        case .failure(.oversized): counters.droppedOversized += 1
        case .failure(.truncated): counters.droppedTruncated += 1
        case .failure(.badVersion): counters.droppedBadVersion += 1
        case .failure(.authFailed): counters.droppedAuthFailed += 1
        case .failure(.replayed): counters.droppedReplayed += 1
        }
        return nil
    }

    /// Associated data binding a datagram to its cluster and format version.
    static func associatedData(clusterID: [UInt8]) -> [UInt8] { clusterID + [version] }

    /// Seals a payload into a datagram.
    public static func seal(_ payload: [UInt8], keyring: Keyring, clusterID: [UInt8]) -> [UInt8] {
        [version] + keyring.seal(payload, associatedData: associatedData(clusterID: clusterID))
    }

    /// Builds one datagram from messages, as any holder of the cluster key could (tests, adversaries).
    public static func datagram(_ messages: [WireMessage], keyring: Keyring, clusterID: [UInt8]) -> [UInt8] {
        seal(messages.flatMap { WireFormat.encode($0) }, keyring: keyring, clusterID: clusterID)
    }

    /// Opens a datagram: checks size and version, then authenticates with any installed key.
    public static func open(_ datagram: [UInt8], keyring: Keyring, clusterID: [UInt8], maxDatagram: Int) -> Result<Opened, Drop> {
        guard datagram.count <= maxDatagram else { return .failure(.oversized) }
        guard datagram.count >= overhead else { return .failure(.truncated) }
        guard datagram[0] == version else { return .failure(.badVersion) }
        guard let opened = try? keyring.openReportingKey(datagram[1...], associatedData: associatedData(clusterID: clusterID)) else {
            return .failure(.authFailed)
        }
        return .success(Opened(payload: opened.plaintext, keyIndex: opened.keyIndex))
    }

    /// Opens and decodes a datagram in one pure step (the fuzzing entry point).
    public static func decode(_ datagram: [UInt8], keyring: Keyring, clusterID: [UInt8], maxDatagram: Int = 1200)
        -> Result<WireFormat.Decoded, Drop> {
        open(datagram, keyring: keyring, clusterID: clusterID, maxDatagram: maxDatagram).map { WireFormat.decodePayload($0.payload) }
    }
}

/// Counters of the sealed datagrams a shell sent and received: bytes on the wire (without the
/// UDP/IP header) and every reason a datagram was dropped before the core saw it.
public struct SealCounters: Sendable, Equatable {
    public var datagramsSent = 0
    public var bytesSent = 0
    /// Datagrams received, including dropped ones.
    public var datagramsReceived = 0
    public var bytesReceived = 0
    /// Datagrams shorter than a version byte plus the AEAD overhead.
    public var droppedTruncated = 0
    /// Datagrams larger than `maxDatagram`.
    public var droppedOversized = 0
    /// Datagrams with a format version this node does not speak.
    public var droppedBadVersion = 0
    /// Datagrams no installed cluster key opens (wrong key, tampered, or garbage).
    public var droppedAuthFailed = 0
    /// Authentic datagrams opened before (`ReplayFilter`).
    public var droppedReplayed = 0
    /// Datagrams opened by an installed key other than the primary (a rotation in progress).
    public var openedWithOtherKey = 0

    public init() {}
}

/// A push/pull payload on a stream: version byte ‖ XChaCha20-Poly1305(payload) under the cluster key
/// like a datagram, but with its own associated data (cluster id ‖ "push-pull" ‖ version ‖ direction),
/// so a sealed request is never taken for a datagram or a reply, nor a reply for a request.
public enum PushPullSeal {
    /// The only push/pull format version this code speaks.
    public static let version: UInt8 = 1
    /// Bytes sealing adds (version byte, nonce, tag).
    public static let overhead = DatagramSeal.overhead

    static func associatedData(clusterID: [UInt8], reply: Bool) -> [UInt8] {
        clusterID + Array("wiremesh/push-pull".utf8) + [version, reply ? 1 : 0]
    }

    /// Seals a request (`reply` false) or a reply with the keyring's primary key.
    public static func seal(_ payload: [UInt8], reply: Bool, keyring: Keyring, clusterID: [UInt8]) -> [UInt8] {
        [version] + keyring.seal(payload, associatedData: associatedData(clusterID: clusterID, reply: reply))
    }

    /// Opens a sealed request or reply with any installed key; nil when it is larger than
    /// `maxPayload` plus the overhead (checked before any work), not of this version, or not authentic.
    public static func open(_ sealed: [UInt8], reply: Bool, keyring: Keyring, clusterID: [UInt8], maxPayload: Int) -> [UInt8]? {
        guard sealed.count <= maxPayload + overhead, sealed.count >= overhead, sealed[0] == version else { return nil }
        return try? keyring.open(sealed[1...], associatedData: associatedData(clusterID: clusterID, reply: reply))
    }
}

/// A stream probe (`Directive.streamProbe`) or its reply on a stream: sealed like a push/pull
/// payload but under associated data of its own, so neither is ever taken for a datagram, a
/// push/pull payload or the other direction.
public enum StreamProbeSeal {
    static func associatedData(clusterID: [UInt8], reply: Bool) -> [UInt8] {
        clusterID + Array("wiremesh/stream-probe".utf8) + [PushPullSeal.version, reply ? 1 : 0]
    }

    /// Seals a probe (`reply` false) or its reply with the keyring's primary key.
    public static func seal(_ payload: [UInt8], reply: Bool, keyring: Keyring, clusterID: [UInt8]) -> [UInt8] {
        [PushPullSeal.version] + keyring.seal(payload, associatedData: associatedData(clusterID: clusterID, reply: reply))
    }

    /// Opens a sealed probe or reply with any installed key; nil when larger than
    /// `MembershipNode.streamProbeMaxBytes` plus the overhead (checked first), or not authentic.
    public static func open(_ sealed: [UInt8], reply: Bool, keyring: Keyring, clusterID: [UInt8]) -> [UInt8]? {
        guard sealed.count <= MembershipNode.streamProbeMaxBytes + PushPullSeal.overhead, sealed.count >= PushPullSeal.overhead,
              sealed[0] == PushPullSeal.version else { return nil }
        return try? keyring.open(sealed[1...], associatedData: associatedData(clusterID: clusterID, reply: reply))
    }
}
