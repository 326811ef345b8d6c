import Foundation
import IPNetwork

/// The node's own settings, kept in the state directory (`settings.json`).
///
/// What `init`/`join` were told (interface, ports, advertise address, ...) belongs to the node: the
/// systemd unit runs a plain `wiremesh agent`, which must come up the way the node was set up, not on
/// the defaults. Precedence: defaults < saved < config file < environment < flags; whatever a run is
/// told explicitly is saved again, so the last explicit value sticks.
extension ConfigKey {
    /// Keys saved with the node. Not the state directory (it is where they are saved) and not the
    /// log level (a property of one run).
    public static let saved: [ConfigKey] = allCases.filter { $0 != .stateDir && $0 != .logLevel && $0 != .logFormat }
}

extension ConfigLayer {
    /// This layer with every value set in `other` replaced by `other`'s.
    public func applying(_ other: ConfigLayer) -> ConfigLayer {
        var l = self
        if let v = other.stateDirectory { l.stateDirectory = v }
        if let v = other.controlSocket { l.controlSocket = v }
        if let v = other.interface { l.interface = v }
        if let v = other.advertiseAddress { l.advertiseAddress = v }
        if let v = other.gossipPort { l.gossipPort = v }
        if let v = other.wireGuardPort { l.wireGuardPort = v }
        if let v = other.mtu { l.mtu = v }
        if let v = other.persistentKeepalive { l.persistentKeepalive = v }
        if let v = other.keyRotationInterval { l.keyRotationInterval = v }
        if let v = other.clusterKeyGrace { l.clusterKeyGrace = v }
        if let v = other.pushPull { l.pushPull = v }
        if let v = other.logLevel { l.logLevel = v }
        if let v = other.logFormat { l.logFormat = v }
        if let v = other.metricsAddress { l.metricsAddress = v }
        if let v = other.cniConfigDirectory { l.cniConfigDirectory = v }
        return l
    }

    /// The set values of the saved keys as the text a flag takes (`settings.json`).
    public var savedValues: [String: String] {
        func text(_ d: Duration) -> String {
            let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
            return ms % 1000 == 0 ? "\(ms / 1000)s" : "\(ms)ms"
        }
        var out: [String: String] = [:]
        for key in ConfigKey.saved {
            let value: String?
            switch key {
            case .stateDir, .logLevel, .logFormat: value = nil
            case .controlSocket: value = controlSocket
            case .interface: value = interface
            case .advertiseAddress: value = advertiseAddress?.description
            case .gossipPort: value = gossipPort.map { "\($0)" }
            case .wireGuardPort: value = wireGuardPort.map { "\($0)" }
            case .mtu: value = mtu.map { "\($0)" }
            case .persistentKeepalive: value = persistentKeepalive.map(text)
            case .keyRotationInterval: value = keyRotationInterval.map(text)
            case .clusterKeyGrace: value = clusterKeyGrace.map(text)
            case .pushPull: value = pushPull.map { $0 ? "on" : "off" }
            case .metricsAddress: value = metricsAddress?.description
            case .cniConfigDir: value = cniConfigDirectory
            }
            if let value { out[key.rawValue] = value }
        }
        return out
    }

    /// Parses saved values; an unknown key or a bad value is an error naming the file.
    public init(saved values: [String: String], file: String) throws {
        self.init()
        for (name, text) in values.sorted(by: { $0.key < $1.key }) {
            guard let key = ConfigKey(rawValue: name), ConfigKey.saved.contains(key) else {
                throw ConfigError(key: name, source: "state file \(file)", message: "unknown setting: remove the line, or restore the file from a backup")
            }
            try set(key, text, quoted: false, source: "state file \(file)")
        }
    }
}

extension AgentConfig {
    /// Reads every source, the node's saved settings included (from the state directory the other
    /// sources name). A saved file that cannot be read for lack of permission counts as empty (a
    /// non-root `status`); one that is damaged is an error naming it.
    public static func load(configFile: String?, environment: [String: String], flags: ConfigLayer,
                            withSavedSettings: Bool, warn: (String) -> Void = { _ in }) throws -> AgentConfig {
        let given = try explicitLayer(configFile: configFile, environment: environment, flags: flags, warn: warn)
        var config = AgentConfig()
        if withSavedSettings {
            config = config.applying(try savedLayer(StateStore(directory: given.stateDirectory ?? StateStore.defaultDirectory)))
        }
        config = config.applying(given)
        config.explicit = given
        return config
    }

    /// The node's saved settings as a layer (empty when there are none or they are not readable).
    static func savedLayer(_ store: StateStore) throws -> ConfigLayer {
        let values: [String: String]
        do { values = try store.loadNodeSettings() } catch StateError.io { return ConfigLayer() }
        return try ConfigLayer(saved: values, file: store.settingsPath)
    }

    /// Saves what this run was told over what was saved before.
    func saveSettings(to store: StateStore) throws {
        let saved = (try? AgentConfig.savedLayer(store)) ?? ConfigLayer()
        let values = saved.applying(explicit).savedValues
        if values != (try? store.loadNodeSettings()) { try store.saveNodeSettings(values) }
    }
}
