import IPNetwork
import WireMeshCrypto

/// A WireGuard peer as read back from a device (kernel or userspace).
public struct Peer: Sendable, Equatable {
    public var publicKey: Key
    /// Nil when the device has no preshared key for this peer (the kernel reports all zeros).
    public var presharedKey: Key?
    public var endpoint: Endpoint?
    /// Seconds; 0 means off.
    public var persistentKeepaliveInterval: UInt16
    /// In the order the device reports them.
    public var allowedIPs: [IPPrefix]
    /// Seconds and nanoseconds since the epoch; nil when no handshake has completed yet.
    public var lastHandshake: (seconds: Int64, nanoseconds: Int64)?
    public var receiveBytes: UInt64
    public var transmitBytes: UInt64
    public var protocolVersion: UInt32

    public init(publicKey: Key, presharedKey: Key? = nil, endpoint: Endpoint? = nil,
                persistentKeepaliveInterval: UInt16 = 0, allowedIPs: [IPPrefix] = [],
                lastHandshake: (seconds: Int64, nanoseconds: Int64)? = nil,
                receiveBytes: UInt64 = 0, transmitBytes: UInt64 = 0, protocolVersion: UInt32 = 0) {
        self.publicKey = publicKey
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.allowedIPs = allowedIPs
        self.lastHandshake = lastHandshake
        self.receiveBytes = receiveBytes
        self.transmitBytes = transmitBytes
        self.protocolVersion = protocolVersion
    }

    public static func == (a: Peer, b: Peer) -> Bool {
        a.publicKey == b.publicKey && a.presharedKey == b.presharedKey && a.endpoint == b.endpoint
            && a.persistentKeepaliveInterval == b.persistentKeepaliveInterval && a.allowedIPs == b.allowedIPs
            && a.lastHandshake?.seconds == b.lastHandshake?.seconds
            && a.lastHandshake?.nanoseconds == b.lastHandshake?.nanoseconds
            && a.receiveBytes == b.receiveBytes && a.transmitBytes == b.transmitBytes
            && a.protocolVersion == b.protocolVersion
    }
}

/// A WireGuard device as read back from the kernel or a userspace implementation.
public struct Device: Sendable, Equatable {
    public var name: String
    /// Nil when the device has no private key yet.
    public var privateKey: Key?
    public var publicKey: Key?
    public var listenPort: UInt16
    /// 0 means off.
    public var fwmark: UInt32
    public var peers: [Peer]

    public init(name: String, privateKey: Key? = nil, publicKey: Key? = nil, listenPort: UInt16 = 0,
                fwmark: UInt32 = 0, peers: [Peer] = []) {
        self.name = name
        self.privateKey = privateKey
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.peers = peers
    }
}

/// A change to one peer: the operation set that maps 1:1 onto WireGuard's SET (genetlink or UAPI).
///
/// Optional fields left nil are not touched on the device.
public struct PeerConfig: Sendable, Equatable {
    public var publicKey: Key
    /// Remove this peer (all other fields are ignored).
    public var remove: Bool
    /// Only change the peer if it already exists (WGPEER_F_UPDATE_ONLY).
    public var updateOnly: Bool
    /// Set the preshared key; `Key.zero` clears it.
    public var presharedKey: Key?
    public var endpoint: Endpoint?
    /// Seconds; 0 turns keepalive off.
    public var persistentKeepaliveInterval: UInt16?
    /// Drop the peer's current allowed IPs before adding `allowedIPs`.
    public var replaceAllowedIPs: Bool
    /// Allowed IPs to add (after the replace, if any). Removing one allowed IP is a replace with the
    /// remaining set: Debian 12's kernel (6.1) has no per-allowed-IP remove flag.
    public var allowedIPs: [IPPrefix]

    public init(publicKey: Key, remove: Bool = false, updateOnly: Bool = false, presharedKey: Key? = nil,
                endpoint: Endpoint? = nil, persistentKeepaliveInterval: UInt16? = nil,
                replaceAllowedIPs: Bool = false, allowedIPs: [IPPrefix] = []) {
        self.publicKey = publicKey
        self.remove = remove
        self.updateOnly = updateOnly
        self.presharedKey = presharedKey
        self.endpoint = endpoint
        self.persistentKeepaliveInterval = persistentKeepaliveInterval
        self.replaceAllowedIPs = replaceAllowedIPs
        self.allowedIPs = allowedIPs
    }
}

/// A change to a device: device attributes plus peer changes (like wgctrl's `wgtypes.Config`).
public struct DeviceConfig: Sendable, Equatable {
    /// Set the private key; `Key.zero` removes it.
    public var privateKey: Key?
    public var listenPort: UInt16?
    public var fwmark: UInt32?
    /// Remove every peer not listed in `peers` (WGDEVICE_F_REPLACE_PEERS). Never in steady state.
    public var replacePeers: Bool
    public var peers: [PeerConfig]

    public init(privateKey: Key? = nil, listenPort: UInt16? = nil, fwmark: UInt32? = nil,
                replacePeers: Bool = false, peers: [PeerConfig] = []) {
        self.privateKey = privateKey
        self.listenPort = listenPort
        self.fwmark = fwmark
        self.replacePeers = replacePeers
        self.peers = peers
    }

    /// True when applying this config would not change anything.
    public var isEmpty: Bool {
        privateKey == nil && listenPort == nil && fwmark == nil && !replacePeers && peers.isEmpty
    }
}

/// What a backend did to apply a config, for metrics and benchmarks.
public struct ApplyReport: Sendable, Equatable {
    /// Messages (netlink) or requests (UAPI) sent.
    public var messages: Int
    /// Bytes written to the kernel or the UAPI socket.
    public var bytes: Int

    public init(messages: Int = 0, bytes: Int = 0) {
        self.messages = messages
        self.bytes = bytes
    }
}

/// Errors that any backend reports, phrased for an operator.
public enum WireGuardError: Error, CustomStringConvertible {
    /// The device does not exist (or is not a WireGuard device).
    case noSuchDevice(String)
    /// The kernel has no WireGuard generic netlink family (module missing).
    case kernelModuleMissing
    /// The caller lacks CAP_NET_ADMIN.
    case permissionDenied(String)
    /// The kernel or userspace implementation refused the request.
    case rejected(device: String, errno: Int32, message: String)
    /// The UAPI socket or netlink answered something we could not parse.
    case protocolError(String)
    /// A userspace device's UAPI socket accepted the request but gave no answer in time: the process
    /// serving it is hung (or a stray listener holds its socket path).
    case timedOut(device: String, socket: String, seconds: Int)

    public var description: String {
        switch self {
        case .noSuchDevice(let n):
            return "no WireGuard device '\(n)': create it first (wiremesh agent does), or check the name"
        case .kernelModuleMissing:
            return "the kernel has no WireGuard support (generic netlink family 'wireguard' not found): load the module with 'modprobe wireguard' or use the userspace backend (wireguard-go)"
        case .permissionDenied(let what):
            return "permission denied for \(what): run as root or with CAP_NET_ADMIN"
        case .rejected(let dev, let errno, let message):
            return "WireGuard device '\(dev)' rejected the change (errno \(errno))\(message.isEmpty ? "" : ": \(message)")"
        case .protocolError(let m):
            return "WireGuard protocol error: \(m)"
        case .timedOut(let dev, let socket, let seconds):
            return "WireGuard device '\(dev)' did not answer on its UAPI socket \(socket) within \(seconds) s: the userspace WireGuard serving it (wireguard-go) is hung, or another process listens there ('ss -xlp' names it); stop that process: the agent starts a new wireguard-go and programs it"
        }
    }
}

/// One interface to a WireGuard implementation; callers never know whether the kernel
/// (generic netlink) or a userspace implementation (UAPI socket) sits behind it.
public protocol WireGuardBackend: Sendable {
    /// A short name for logs and metrics: "kernel" or "userspace".
    var kind: String { get }
    /// Reads the whole device, peers included.
    func device(named name: String) throws -> Device
    /// Applies `config` and reports what was sent.
    @discardableResult
    func configure(device name: String, _ config: DeviceConfig) throws -> ApplyReport
}
