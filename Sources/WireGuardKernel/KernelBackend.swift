import WireGuard

/// Kernel WireGuard over generic netlink (placeholder until the genetlink client lands).
public final class KernelBackend: WireGuardBackend {
    public let kind = "kernel"

    /// Opens a generic netlink socket and resolves the `wireguard` family.
    public init() throws { throw WireGuardError.kernelModuleMissing }

    public func device(named name: String) throws -> Device { throw WireGuardError.kernelModuleMissing }

    public func configure(device name: String, _ config: DeviceConfig) throws -> ApplyReport {
        throw WireGuardError.kernelModuleMissing
    }
}
