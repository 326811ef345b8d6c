#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// How the agent writes log lines (`--log-format`).
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}

/// One JSON object per line on standard error, for log collectors: `time` (RFC 3339, UTC, ms),
/// `level`, `node` (this node's name once known), `event` (the message) and `fields` (the rest of the
/// metadata). Each line is written with one `write(2)`, so lines of concurrent tasks never interleave.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    let label: String

    public init(label: String, metadataProvider: Logger.MetadataProvider? = LoggingSystem.metadataProvider) {
        self.label = label
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let explicit { fields.merge(explicit) { _, new in new } }
        let line = Self.line(time: Date(), level: level, message: "\(message)", fields: fields)
        line.withUnsafeBytes { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// The encoded line, newline included (pure: the tests read it).
    static func line(time: Date, level: Logger.Level, message: String, fields: Logger.Metadata) -> [UInt8] {
        var fields = fields
        var object: [String: Any] = ["time": timestamp(time), "level": level.rawValue, "event": message]
        if let node = fields.removeValue(forKey: "node") { object["node"] = "\(node)" }
        object["fields"] = fields.mapValues(json)
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return Array(data) + [0x0A]
    }

    static func json(_ value: Logger.Metadata.Value) -> Any {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c): return "\(c)"
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }

    static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}
