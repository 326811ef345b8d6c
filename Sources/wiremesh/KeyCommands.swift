import ArgumentParser
import WireMeshCrypto

#if canImport(Glibc)
import Glibc
#endif

/// Exit codes shared by every command.
enum ExitStatus {
    /// An operational failure: the agent is not reachable, the system refused, an internal error.
    static let failure: Int32 = 1
    /// Bad input from the user: usage, flags, files, keys, tokens, ids, values.
    static let usage: Int32 = 2
}

/// Prints `message` to standard error as one line prefixed with the program name.
func printError(_ message: String) {
    var line = "wiremesh: \(message)\n"
    line.withUTF8 { buf in _ = write(2, buf.baseAddress, buf.count) }
}

struct GenKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genkey", abstract: "Print a new private key (base64), like 'wg genkey'.")

    func run() throws {
        // Like wg: keep the key out of group/world-readable files created by a redirect.
        umask(0o077)
        print(Key.generatePrivate().base64)
    }
}

struct GenPSK: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "genpsk", abstract: "Print a new preshared key (base64), like 'wg genpsk'.")

    func run() throws {
        umask(0o077)
        print(Key.generatePreshared().base64)
    }
}

struct PubKey: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pubkey", abstract: "Read a private key on stdin, print its public key, like 'wg pubkey'.")

    func run() throws {
        var input = ""
        while let line = readLine(strippingNewline: false) {
            input += line
            if input.utf8.count > 1024 { break }
        }
        do {
            let key = try Key(base64: input)
            print(key.publicKey().base64)
        } catch {
            printError("pubkey: \(error)")
            throw ExitCode(ExitStatus.usage)
        }
    }
}
