// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "wiremesh",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "wiremesh", targets: ["wiremesh"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        // C libraries (system packages from Debian: libsodium-dev, libmnl-dev).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),

        // IP addresses, prefixes and endpoints: pure value types shared by every layer.
        .target(name: "IPNetwork"),

        // Keys, signatures, sealing. Pure computation over libsodium.
        .target(name: "WireMeshCrypto", dependencies: ["CSodium"]),

        // libmnl-based netlink: message codec (pure) and a thin socket owner; rtnetlink.
        .target(name: "Netlink", dependencies: [
            "CMnl", "IPNetwork",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // WireGuard device model, pure diff, `wg` config format, UAPI backend.
        .target(name: "WireGuard", dependencies: [
            "WireMeshCrypto", "IPNetwork",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // Kernel WireGuard over generic netlink.
        .target(name: "WireGuardKernel", dependencies: ["WireGuard", "Netlink", "CMnl"]),

        // Pure SWIM + Lifeguard membership core with signed node records and its wire codec.
        .target(name: "Membership", dependencies: ["WireMeshCrypto", "IPNetwork"]),

        // Deterministic virtual-time network for the membership core.
        .target(name: "MembershipSimulator", dependencies: ["Membership"]),

        // The agent: transport shells, reconciler, state, control API.
        .target(name: "WireMeshAgent", dependencies: [
            "WireMeshCrypto", "WireGuard", "WireGuardKernel", "Netlink", "Membership", "IPNetwork",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // The executable: argument-parser commands only.
        .executableTarget(name: "wiremesh", dependencies: [
            "WireMeshAgent", "WireMeshCrypto", "WireGuard", "WireGuardKernel", "Netlink",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        .testTarget(name: "IPNetworkTests", dependencies: ["IPNetwork"]),
        .testTarget(name: "WireMeshCryptoTests", dependencies: ["WireMeshCrypto"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "WireGuardKernel", "WireGuard", "CMnl"]),
        .testTarget(name: "WireGuardTests", dependencies: ["WireGuard", "WireMeshCrypto"]),
        // Real-kernel WireGuard e2e: boots the Debian kernel under qemu (vm/) once and runs the wiremesh binary in it.
        .testTarget(name: "KernelE2ETests"),
        // Host e2e: netns + wireguard-go driven by the built `wiremesh` binary, checked with `wg`.
        .testTarget(name: "E2ETests", dependencies: ["WireGuard", "WireMeshCrypto", "IPNetwork"]),
        .testTarget(name: "MembershipTests", dependencies: ["Membership", "MembershipSimulator", "WireMeshCrypto"]),
    ]
)
