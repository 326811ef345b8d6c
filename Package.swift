// swift-tools-version:6.0
import PackageDescription

// The agent stays resident on every node, so its binary should map little. lld (shipped with the
// toolchain) packs relative relocations (`.relr.dyn`: ~20 KB instead of 2 MB of `.rela.dyn` read at every
// start), and the executable exports no symbols (gold's -export-dynamic default put 1 MB of dynamic symbol
// tables in it; nothing dlopens wiremesh). Still a PIE. Measured in BENCHMARKS.md (bench join).
let leanBinary: [LinkerSetting] = [
    .unsafeFlags(["-use-ld=lld", "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs", "-Xlinker", "--no-export-dynamic"],
                 .when(platforms: [.linux])),
]

let package = Package(
    name: "wiremesh",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "wiremesh", targets: ["wiremesh"]),
        .executable(name: "wiremesh-membership-bench", targets: ["MembershipBench"]),
        .executable(name: "wiremesh-swarm", targets: ["MeshSwarm"]),
        .executable(name: "wiremesh-hostile", targets: ["HostileMember"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // C libraries (system packages from Debian: libsodium-dev, libmnl-dev).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CMnl", pkgConfig: "libmnl", providers: [.apt(["libmnl-dev"])]),
        // nftables' own library (header from libnftables-dev, loaded at run time from libnftables1 with
        // dlopen, not linked: see its shim): the agent's egress table, without running `nft`.
        .systemLibrary(name: "CNftables"),
        // glibc extras: <malloc.h> (mallopt, malloc_trim), <link.h> (dl_iterate_phdr).
        .systemLibrary(name: "CGlibcExtras"),

        // IP addresses, prefixes and endpoints: pure value types shared by every layer.
        .target(name: "IPNetwork"),

        // The one big-endian byte codec and hex codec (gossip, records, tokens, member list, keys).
        .target(name: "ByteCodec", dependencies: ["IPNetwork"]),

        // Keys, signatures, sealing. Pure computation over libsodium.
        .target(name: "WireMeshCrypto", dependencies: ["CSodium", "ByteCodec"]),

        // libmnl-based netlink: message codec (pure) and a thin socket owner; rtnetlink.
        .target(name: "Netlink", dependencies: [
            "CMnl", "IPNetwork",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // WireGuard device model, pure diff, `wg` config format, UAPI backend.
        .target(name: "WireGuard", dependencies: [
            "WireMeshCrypto", "IPNetwork", "ByteCodec",
            .product(name: "SystemPackage", package: "swift-system"),
        ]),

        // Kernel WireGuard over generic netlink.
        .target(name: "WireGuardKernel", dependencies: ["WireGuard", "Netlink", "CMnl"]),

        // Pure SWIM + Lifeguard membership core with signed node records and its wire codec.
        .target(name: "Membership", dependencies: [
            "WireMeshCrypto", "IPNetwork", "ByteCodec",
            // A lock for the swarm's shared verifications; TSan sees its pthread mutex.
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),

        // Joining, pure: token text format and records, the join exchange and its messages, IPAM, the
        // admission decision, the member list a grant carries. No I/O.
        .target(name: "WireMeshJoin", dependencies: ["Membership", "WireMeshCrypto", "IPNetwork", "ByteCodec"]),

        // The TCP line port: one typed envelope for join / rotation / keyring, its refusals, and the
        // NIO server and client.
        .target(name: "LinePort", dependencies: [
            "WireMeshJoin", "Membership", "WireMeshCrypto", "IPNetwork",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // Pure planning: member view + local node → desired WireGuard peers and routes.
        .target(name: "MeshPlan", dependencies: ["Membership", "WireGuard", "Netlink", "IPNetwork", "WireMeshCrypto"]),

        // Deterministic virtual-time network for the membership core.
        .target(name: "MembershipSimulator", dependencies: ["Membership"]),

        // The agent: transport shells, reconciler, state, control API.
        .target(name: "WireMeshAgent", dependencies: [
            "WireMeshCrypto", "WireGuard", "WireGuardKernel", "Netlink", "Membership", "IPNetwork", "MeshPlan", "CNftables",
            "WireMeshJoin", "LinePort", "ByteCodec",
            .target(name: "CGlibcExtras", condition: .when(platforms: [.linux])),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "SystemPackage", package: "swift-system"),
            .product(name: "Yams", package: "Yams"),
        ]),

        // The executable: argument-parser commands only.
        .executableTarget(name: "wiremesh", dependencies: [
            "WireMeshAgent", "WireMeshJoin", "WireMeshCrypto", "WireGuard", "WireGuardKernel", "Netlink", "IPNetwork",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ], linkerSettings: leanBinary),

        // Membership benchmark in the simulator (./scripts/bench membership).
        .executableTarget(name: "MembershipBench", dependencies: ["MembershipSimulator", "Membership"]),
        .executableTarget(name: "MeshSwarm", dependencies: [
            "WireMeshAgent", "LinePort", "WireMeshJoin", "Membership", "WireMeshCrypto", "IPNetwork",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        ]),
        // A test tool holding one member's secrets that attacks real agents (scripts/e2e/hostile.sh).
        .executableTarget(name: "HostileMember", dependencies: [
            "WireMeshAgent", "LinePort", "WireMeshJoin", "Membership", "WireMeshCrypto", "IPNetwork",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),

        // libFuzzer targets for the decoders of outside bytes (scripts/fuzz, FUZZING.md). scripts/fuzz
        // links it with libFuzzer in the ASan + coverage build the sanitizer suite uses (one build for
        // both); a plain build is a tool that writes the seed corpus and replays inputs.
        .systemLibrary(name: "CLibFuzzer", path: "Fuzz/CLibFuzzer"),
        .executableTarget(name: "WireMeshFuzz", dependencies: [
            "CLibFuzzer", "WireMeshAgent", "WireGuard", "WireGuardKernel", "Netlink", "CMnl", "IPNetwork", "WireMeshCrypto",
            "Membership", "WireMeshJoin", "LinePort", "ByteCodec",
        ], path: "Fuzz/WireMeshFuzz"),

        .testTarget(name: "MembershipSimulatorTests", dependencies: ["MembershipSimulator", "Membership", "WireMeshCrypto", "IPNetwork", "TestSupport"]),
        .testTarget(name: "GossipTransportTests", dependencies: [
            "WireMeshAgent", "LinePort", "Membership", "WireMeshCrypto", "IPNetwork",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "MeshPlanTests", dependencies: ["MeshPlan", "Membership", "WireGuard", "Netlink", "IPNetwork", "WireMeshCrypto"]),
        .testTarget(name: "IPNetworkTests", dependencies: ["IPNetwork"]),
        .testTarget(name: "WireMeshCryptoTests", dependencies: ["WireMeshCrypto"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "WireGuardKernel", "WireGuard", "CMnl", "ByteCodec"]),
        .testTarget(name: "WireGuardTests", dependencies: ["WireGuard", "WireMeshCrypto"]),
        // Host e2e: netns + wireguard-go driven by the built `wiremesh` binary, checked with `wg`.
        .testTarget(name: "E2ETests", dependencies: ["WireGuard", "WireMeshCrypto", "IPNetwork"]),
        // Real-kernel WireGuard e2e: boots the Debian kernel under qemu (vm/) once and runs the wiremesh binary in it.
        // Test helpers shared by the test targets (blocking work off the cooperative pool).
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "KernelE2ETests", dependencies: ["TestSupport"]),
        // Hitless key rotation under a ping flood and a TCP stream: runs scripts/e2e/rotation.sh.
        .testTarget(name: "RotationE2ETests", dependencies: ["TestSupport"]),
        // Cluster (gossip) key rotation with one node down, then its return: runs scripts/e2e/cluster-key.sh.
        .testTarget(name: "ClusterKeyE2ETests", dependencies: ["TestSupport"]),
        // An operator's day (issue 14): scripts/e2e/operator.sh, one run shared by its cases.
        .testTarget(name: "OperatorE2ETests", dependencies: ["TestSupport"]),
        // An agent down for 30 s costs no traffic, a dead host is still removed: runs scripts/e2e/restart.sh.
        .testTarget(name: "RestartE2ETests", dependencies: ["TestSupport"]),
        // Containers on the mesh (issue 13): podman on 3 nodes, scripts/e2e/containers.sh.
        .testTarget(name: "ContainersE2ETests", dependencies: ["TestSupport"]),
        // Metrics (issue 11): a real Prometheus scrapes three agents, scripts/e2e/metrics.sh.
        .testTarget(name: "MetricsE2ETests", dependencies: ["TestSupport"]),
        // Doctor and graph on a live mesh (issue 11): each fault made on purpose, scripts/e2e/doctor.sh.
        .testTarget(name: "DoctorE2ETests", dependencies: ["TestSupport"]),
        // The join port under 2000 idle connections and a bad-MAC flood (issue 10), scripts/e2e/join-port.sh.
        .testTarget(name: "JoinPortE2ETests", dependencies: ["TestSupport"]),
        // Eviction (issue 10): scripts/e2e/evict.sh, 4 nodes, `wiremesh evict`, tokens, a second authority.
        .testTarget(name: "EvictE2ETests", dependencies: ["TestSupport"]),
        // A member's stolen secrets against real agents (issue 10): scripts/e2e/hostile.sh with wiremesh-hostile.
        .testTarget(name: "HostileE2ETests", dependencies: ["TestSupport"]),
        // Faults under traffic (issue 12): partition, loss, kill -9, hung UAPI, descriptor limit, clock jump,
        // full and read-only disk on a 6-node mesh, scripts/e2e/faults.sh (FAULTS_FULL=1: the lengths).
        .testTarget(name: "FaultsE2ETests", dependencies: ["TestSupport"]),
        // Agent host e2e: Tests/AgentE2ETests/agent-e2e.sh (4 nodes, netns + wireguard-go), one run per test process.
        .testTarget(name: "AgentE2ETests", dependencies: ["TestSupport"], exclude: ["agent-e2e.sh"]),
        // The built `wiremesh` binary as a subprocess: help and README agree, exit codes, environment, and the
        // token commands against a one-node agent in a network namespace.
        .testTarget(name: "CLITests", dependencies: ["WireMeshAgent", "WireMeshJoin", "TestSupport"]),
        .testTarget(name: "MembershipTests", dependencies: ["Membership", "MembershipSimulator", "WireMeshCrypto", "ByteCodec"]),
        .testTarget(name: "WireMeshJoinTests", dependencies: ["WireMeshJoin", "Membership", "WireMeshCrypto", "IPNetwork", "ByteCodec"]),
        .testTarget(name: "LinePortTests", dependencies: [
            "LinePort", "WireMeshJoin", "WireMeshCrypto", "IPNetwork", "TestSupport",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        .testTarget(name: "WireMeshAgentTests", dependencies: [
            "WireMeshAgent", "WireMeshJoin", "LinePort", "ByteCodec", "WireGuard", "WireMeshCrypto", "IPNetwork", "Membership", "TestSupport", "Netlink",
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)
