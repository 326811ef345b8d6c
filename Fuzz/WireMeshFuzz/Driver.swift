// The fuzz targets of wiremesh: one executable, the target picked by name.
//
// Linked with libFuzzer (scripts/fuzz: the ASan + coverage build, libclang_rt.fuzzer_no_main) it runs
// libFuzzer on the target named by WIREMESH_FUZZ_TARGET, with libFuzzer's own arguments. Built plainly
// it is a small tool: `seeds DIR` writes the seed corpus from the project's own encoders, `run TARGET
// FILE...` replays inputs (a crash file, the corpus) without libFuzzer, `list` names the targets.
import CLibFuzzer
import Foundation

/// One fuzz target: what it feeds outside bytes to, and the valid inputs it starts from.
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    /// Runs one input; traps (fatalError) when an invariant does not hold.
    let run: @Sendable ([UInt8]) -> Void
    /// Valid inputs made by the project's encoders (the seed corpus).
    let seeds: @Sendable () throws -> [[UInt8]]
}

enum FuzzTargets {
    static let all: [FuzzTarget] = [
        NetlinkRouteTarget.target, NetlinkWireGuardTarget.target, UAPITarget.target,
        WGConfigTarget.target, YAMLConfigTarget.target, StateFilesTarget.target, LineRequestTarget.target,
        GossipTarget.target, NodeRecordTarget.target, JoinTokenTarget.target, KeyringMessageTarget.target,
    ]

    static func named(_ name: String) -> FuzzTarget? { all.first { $0.name == name } }
}

/// Fails the run (libFuzzer records the input) when an invariant is broken.
func require(_ condition: Bool, _ what: @autoclosure () -> String) {
    if !condition { fatalError("invariant broken: \(what())") }
}

nonisolated(unsafe) private var selected: FuzzTarget?

/// libFuzzer's callback: one input through the selected target.
private func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selected!.run(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}

@main
enum FuzzTool {
    static func main() throws {
        if wm_libfuzzer_linked() != 0 { runLibFuzzer() }
        let args = Array(CommandLine.arguments.dropFirst())
        switch args.first {
        case "list":
            for t in FuzzTargets.all { print("\(t.name)\t\(t.summary)") }
        case "seeds" where args.count == 2:
            try writeSeeds(to: args[1])
        case "run" where args.count >= 3:
            guard let target = FuzzTargets.named(args[1]) else { usage() }
            var count = 0
            for path in args.dropFirst(2) {
                for file in files(at: path) {
                    target.run(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
                    count += 1
                }
            }
            print("\(target.name): \(count) inputs, no invariant broken")
        default:
            usage()
        }
    }

    static func runLibFuzzer() -> Never {
        let name = ProcessInfo.processInfo.environment["WIREMESH_FUZZ_TARGET"] ?? ""
        guard let target = FuzzTargets.named(name) else {
            FileHandle.standardError.write(Data(
                "set WIREMESH_FUZZ_TARGET to one of: \(FuzzTargets.all.map(\.name).joined(separator: ", "))\n".utf8))
            exit(2)
        }
        selected = target
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOne))
    }

    static func usage() -> Never {
        FileHandle.standardError.write(Data("""
            usage: wiremesh-fuzz list | seeds DIR | run TARGET FILE|DIR...
            (scripts/fuzz builds it linked with libFuzzer, which fuzzes WIREMESH_FUZZ_TARGET)

            """.utf8))
        exit(2)
    }

    static func files(at path: String) -> [String] {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else { return [path] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.sorted().map { "\(path)/\($0)" }
    }

    /// Writes DIR/TARGET/seed-N for every target, replacing what was there.
    static func writeSeeds(to dir: String) throws {
        for t in FuzzTargets.all {
            let sub = "\(dir)/\(t.name)"
            try? FileManager.default.removeItem(atPath: sub)
            try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: true)
            let seeds = try t.seeds()
            for (i, s) in seeds.enumerated() {
                t.run(s)  // a seed must pass its own target
                try Data(s).write(to: URL(fileURLWithPath: "\(sub)/seed-\(i)"))
            }
            print("\(t.name): \(seeds.count) seeds")
        }
    }
}
