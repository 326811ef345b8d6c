#if canImport(Glibc)
import Glibc
#endif
import CNftables
import Foundation

/// Why libnftables refused a batch: what the agent asked for and the library's own error text.
public struct NftablesError: Error, CustomStringConvertible {
    /// What was being done, e.g. "replace table ip wiremesh".
    public var operation: String
    /// libnftables' error buffer (the same text `nft` prints), trimmed.
    public var message: String

    public var description: String {
        "nftables: cannot \(operation): \(message.isEmpty ? "no reason given" : message) (the kernel needs nf_tables and nf_nat; the agent needs CAP_NET_ADMIN)"
    }
}

/// A libnftables context (`nft_ctx_new`) in the calling thread's network namespace, speaking JSON
/// both ways. One batch is one transaction: it applies whole or not at all.
///
/// Programmed through the library, not by running `nft`: no dependency on a binary in PATH, no
/// parsing of a tool's human output, and the batch is checked and committed in one call. The library
/// is loaded for the life of one context (a check every few seconds) and unloaded with it, so an
/// idle agent does not keep it mapped.
public final class Nftables {
    private var api = wm_nft_api()
    private let context: OpaquePointer

    /// Opens a context (`nft_ctx_new`) with buffered output and errors, JSON output.
    public init() throws {
        // libnftables calls exit() when it cannot open its netlink socket (a kernel without nfnetlink,
        // e.g. the modules not loaded): find that out first, so the agent reports it instead of dying.
        let probe = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), wm_netlink_netfilter())
        guard probe >= 0 else {
            throw NftablesError(operation: "open a netfilter netlink socket", message: String(cString: strerror(errno)))
        }
        close(probe)
        guard wm_nft_open(&api) == 0 else {
            let why = wm_dlerror().map { String(cString: $0) } ?? "unknown error"
            throw NftablesError(operation: "load libnftables.so.1 (install Debian's libnftables1)", message: why)
        }
        guard let ctx = api.ctx_new(wm_nft_ctx_default()) else {
            wm_nft_close(&api)
            throw NftablesError(operation: "create a libnftables context", message: "nft_ctx_new failed")
        }
        context = ctx
        _ = api.buffer_output(ctx)
        _ = api.buffer_error(ctx)
        // JSON output also makes nft_run_cmd_from_buffer accept JSON input.
        api.output_set_flags(ctx, UInt32(NFT_CTX_OUTPUT_JSON))
    }

    deinit {
        api.ctx_free(context)
        wm_nft_close(&api)
    }

    /// Runs one batch (`nft_run_cmd_from_buffer`): a JSON document `{"nftables": [...]}`. Returns
    /// what the library printed (JSON for list commands).
    @discardableResult
    public func run(_ json: String, operation: String) throws -> String {
        let rc = json.withCString { api.run_cmd_from_buffer(context, $0) }
        let output = api.get_output_buffer(context).map { String(cString: $0) } ?? ""
        if rc != 0 {
            let error = api.get_error_buffer(context).map { String(cString: $0) } ?? ""
            throw NftablesError(operation: operation, message: error.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return output
    }

    /// The JSON objects listing a table (`list table FAMILY NAME`), or nil when it does not exist.
    public func listTable(family: String, name: String) throws -> [[String: Any]]? {
        let query = try EgressRules.json([["list": ["table": ["family": family, "name": name]]]])
        let text: String
        do { text = try run(query, operation: "list table \(family) \(name)") } catch let e as NftablesError {
            if e.message.contains("No such file or directory") { return nil }
            throw e
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
              let items = object["nftables"] as? [[String: Any]] else {
            throw NftablesError(operation: "list table \(family) \(name)", message: "unexpected JSON from libnftables")
        }
        return items
    }
}
