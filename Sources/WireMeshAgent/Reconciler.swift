import IPNetwork
import MeshPlan
import Netlink
import WireGuard

/// The only writer of the dataplane (the WireGuard device, its link and the agent's routes).
///
/// The agent holds its dataplane only through this type, and the dataplane's write methods are
/// reachable only from `pass`, whose every write is derived from a plan by the pure functions of
/// `MeshPlanner` (`desiredDevice`, `deviceWrites`, `routeChanges`). A rotation, an admission or a
/// restart changes what the plan is computed from, then asks for a pass; none of them names a
/// device change of its own.
final class Reconciler: Sendable {
    private let dataplane: any Dataplane

    init(_ dataplane: any Dataplane) { self.dataplane = dataplane }

    var interface: String { dataplane.interface }
    var backendKind: String { dataplane.backendKind }
    /// The device as it is (read only).
    func device() throws -> Device { try dataplane.device() }

    /// What one pass found and did.
    struct Report: Sendable {
        /// The interface had vanished and was created again.
        var recreated = false
        var interfaceIndex: Int32 = 0
        /// The device operations applied, in order.
        var writes: [DeviceConfig] = []
        var bytes = 0
        var routesAdded = 0
        var routesRemoved = 0
    }

    /// What a pass needs from the agent once the device has been read: the plan (which may depend on
    /// the device, e.g. dead members kept for their live data plane) and the overrides.
    struct Plan {
        var mesh: DesiredMesh
        var overrides: DeviceOverrides
        /// Keepalive seconds for the handshake kick of a key switch (`keySwitchConfig`).
        var kick: UInt16
    }

    /// One pass: the link exists with its MTU and addresses (one per family), then the device and the routes are made
    /// what the plan says. Idempotent: a second pass with nothing changed writes nothing.
    func pass(mtu: Int, overlays: [IPPrefix], plan: (_ actual: Device, _ interfaceIndex: Int32) throws -> Plan) throws -> Report {
        var report = Report()
        if try dataplane.ensureInterface() {
            try dataplane.configureLink(mtu: mtu, addresses: overlays)
            report.recreated = true
        }
        report.interfaceIndex = try dataplane.interfaceIndex()
        let actual = try dataplane.device()
        let wanted = try plan(actual, report.interfaceIndex)
        let desired = MeshPlanner.desiredDevice(plan: wanted.mesh.device, actual: actual, overrides: wanted.overrides)
        for write in MeshPlanner.deviceWrites(actual: actual, desired: desired, kick: wanted.kick) {
            report.bytes += try dataplane.configure(write).bytes
            report.writes.append(write)
        }
        let routes = MeshPlanner.routeChanges(actual: try dataplane.ownRoutes(), desired: wanted.mesh.routes)
        if !routes.isEmpty {
            try dataplane.apply((routes.add, routes.remove))
            report.routesAdded = routes.add.count
            report.routesRemoved = routes.remove.count
        }
        return report
    }
}
