import ArgumentParser
import WireGuard
import WireGuardKernel

#if canImport(Glibc)
import Glibc
#endif

/// `wiremesh device …`: the operator's `wg`-compatible view of one WireGuard device, through this
/// project's own netlink/UAPI code on either backend.
struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Show or configure a WireGuard device (kernel or userspace), like 'wg show' / 'wg syncconf'.",
        subcommands: [DeviceShow.self, DeviceSet.self])
}

/// The backend serving `interface`: userspace when its UAPI socket exists, else the kernel.
func deviceBackend(for interface: String) throws -> any WireGuardBackend {
    try wireGuardBackend(for: interface, kernel: { try KernelBackend() })
}

/// Exit status for failures of the device itself (missing, refused, no permission).
private let deviceFailure: Int32 = 1

struct DeviceShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Print a device like 'wg show IFACE'; --dump prints exactly 'wg show IFACE dump'.")

    @Argument(help: "The WireGuard interface, e.g. wg0.")
    var interface: String

    @Flag(help: "Print one stable JSON object (no secrets).")
    var json = false

    @Flag(help: "Print the tab-separated format of 'wg show IFACE dump' (includes the private key).")
    var dump = false

    func validate() throws {
        if json && dump { throw ValidationError("choose one of --json and --dump") }
    }

    func run() throws {
        let device: Device
        do {
            device = try deviceBackend(for: interface).device(named: interface)
        } catch {
            printError("device show \(interface): \(error)")
            throw ExitCode(deviceFailure)
        }
        if dump {
            writeStdout(DeviceFormat.dump(device))
        } else if json {
            writeStdout(DeviceFormat.json(device) + "\n")
        } else {
            writeStdout(DeviceFormat.human(device, now: Int64(time(nil))))
        }
    }
}

struct DeviceSet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "set",
        abstract: "Make a device match a 'wg' config file, sending only the difference (like 'wg syncconf').",
        discussion: """
            FILE uses the 'wg' format: [Interface] PrivateKey/ListenPort/FwMark and [Peer] PublicKey/
            PresharedKey/Endpoint/AllowedIPs/PersistentKeepalive. Peers not in FILE are removed; what
            already matches is not touched. FILE is the whole desired state, except that a missing
            PrivateKey, a ListenPort of 0 (or none) and a peer without Endpoint keep what the device
            has; a missing PresharedKey or PersistentKeepalive turns it off.
            A bad FILE leaves the device untouched (exit 2); a missing or refusing device exits 1.
            """)

    @Argument(help: "The WireGuard interface, e.g. wg0.")
    var interface: String

    @Argument(help: "Config file in the 'wg' format.")
    var file: String

    @Flag(help: "Print 'messages=N bytes=M' (what was sent to the device) to standard error.")
    var report = false

    func run() throws {
        let text: [UInt8]
        do {
            text = try readFile(file)
        } catch {
            printError("device set \(interface): \(error)")
            throw ExitCode(ExitStatus.usage)
        }
        let desired: Device
        do {
            desired = try ConfigFile.parse(bytes: text, deviceName: interface)
        } catch let e as ConfigFileError {
            printError("\(file):\(e.line): \(e.problem)")
            throw ExitCode(ExitStatus.usage)
        }
        let sent: ApplyReport
        do {
            let backend = try deviceBackend(for: interface)
            let actual = try backend.device(named: interface)
            sent = try backend.configure(device: interface, diff(actual: actual, desired: desired))
        } catch {
            printError("device set \(interface): \(error)")
            throw ExitCode(deviceFailure)
        }
        if report {
            var line = "messages=\(sent.messages) bytes=\(sent.bytes)\n"
            line.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
        }
    }
}

/// Why a file named on the command line could not be read.
struct FileReadError: Error, CustomStringConvertible {
    let description: String
}

/// Reads a whole file (open(2)/read(2); config files are small but can hold 5000 peers).
func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        throw FileReadError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    var data: [UInt8] = []
    var st = stat()
    if fstat(fd, &st) == 0 { data.reserveCapacity(Int(st.st_size) + 1) }
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw FileReadError(description: "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if n == 0 { break }
        data.append(contentsOf: chunk[0..<n])
    }
    return data
}

/// Writes `text` to standard output in one go (dumps of thousands of peers).
func writeStdout(_ text: String) {
    var s = text
    s.withUTF8 { buf in
        var offset = 0
        while offset < buf.count {
            let n = write(1, buf.baseAddress! + offset, buf.count - offset)
            if n < 0 { if errno == EINTR { continue } else { return } }
            offset += n
        }
    }
}
