import IPNetwork
import Netlink
import NIOConcurrencyHelpers
import WireGuard

/// What the agent programs on its node: the WireGuard device, the link it sits on, and the agent's
/// own routes. `LinkManager` is the real one (kernel genetlink or wireguard-go, rtnetlink);
/// `InMemoryDataplane` holds the same state in memory, so the agent runs in unit tests without root.
public protocol Dataplane: AnyObject, Sendable {
    /// The WireGuard interface's name.
    var interface: String { get }
    /// "kernel", "userspace" or "memory": for status and logs.
    var backendKind: String { get }
    /// Creates the interface again if it disappeared; true when it had to.
    func ensureInterface() throws -> Bool
    /// Sets MTU and the overlay addresses (one per family) and brings the link up (only what differs).
    func configureLink(mtu: Int, addresses: [IPPrefix]) throws
    /// The interface index, for routes.
    func interfaceIndex() throws -> Int32
    /// The device as it is, peers included.
    func device() throws -> Device
    /// Applies a change to the device.
    @discardableResult func configure(_ change: DeviceConfig) throws -> ApplyReport
    /// The routes carrying the agent's protocol tag.
    func ownRoutes() throws -> [Route]
    /// Adds then removes routes (so the cluster range is never uncovered).
    func apply(_ changes: RouteChangesInput) throws
    /// Removes the node's part in the mesh after a leave (routes, interface).
    func tearDown(clusterRanges: [IPPrefix])
}

extension LinkManager: Dataplane {
    public var backendKind: String { backend.kind }
    public func device() throws -> Device { try serialized { try unlessHung { try backend.device(named: interface) } } }
    @discardableResult public func configure(_ change: DeviceConfig) throws -> ApplyReport {
        try serialized { try unlessHung { try backend.configure(device: interface, change) } }
    }
}

/// A dataplane in memory: a WireGuard device with kernel semantics (`Device.applying`), a link and
/// routes. Tests read and change it behind the agent's back (drift, a vanished interface) and can
/// make the next operations fail.
public final class InMemoryDataplane: Dataplane {
    public let interface: String
    public var backendKind: String { "memory" }

    /// Everything the dataplane holds, changed only under the lock.
    public struct State: Sendable {
        public var exists = true
        public var index: Int32 = 7
        public var mtu = 0
        public var addresses: [IPPrefix] = []
        public var up = false
        public var device: Device
        public var routes: [Route] = []
        /// Thrown by the next `configure` calls while set (e.g. the WireGuard port in use).
        public var configureError: WireGuardError?
        /// Every change the agent sent, in order.
        public var changes: [DeviceConfig] = []
    }

    private let state: NIOLockedValueBox<State>

    public init(interface: String, device: Device? = nil) {
        self.interface = interface
        state = NIOLockedValueBox(State(device: device ?? Device(name: interface)))
    }

    /// Reads or changes the state at once (under the lock).
    public func with<R>(_ body: (inout State) throws -> R) rethrows -> R {
        try state.withLockedValue { try body(&$0) }
    }

    public func ensureInterface() throws -> Bool {
        with { s in
            guard !s.exists else { return false }
            s = State(exists: true, index: s.index + 1, device: Device(name: interface))
            return true
        }
    }

    public func configureLink(mtu: Int, addresses: [IPPrefix]) throws {
        try with { s in
            guard s.exists else { throw WireGuardError.noSuchDevice(interface) }
            s.mtu = mtu
            for address in addresses where !s.addresses.contains(address) { s.addresses.append(address) }
            s.up = true
        }
    }

    public func interfaceIndex() throws -> Int32 {
        try with { s in
            guard s.exists else { throw WireGuardError.noSuchDevice(interface) }
            return s.index
        }
    }

    public func device() throws -> Device {
        try with { s in
            guard s.exists else { throw WireGuardError.noSuchDevice(interface) }
            return s.device
        }
    }

    @discardableResult public func configure(_ change: DeviceConfig) throws -> ApplyReport {
        try with { s in
            guard s.exists else { throw WireGuardError.noSuchDevice(interface) }
            if let error = s.configureError { throw error }
            s.device = s.device.applying(change)
            s.changes.append(change)
            return ApplyReport(messages: 1, bytes: 0)
        }
    }

    public func ownRoutes() throws -> [Route] { with { $0.routes } }

    public func apply(_ changes: RouteChangesInput) throws {
        with { s in
            for r in changes.add where !s.routes.contains(r) { s.routes.append(r) }
            for r in changes.remove { s.routes.removeAll { $0 == r } }
        }
    }

    public func tearDown(clusterRanges: [IPPrefix]) {
        with { s in
            s.routes.removeAll { r in r.interfaceIndex == s.index || clusterRanges.contains { $0.contains(r.destination) } }
            s.exists = false
        }
    }
}
