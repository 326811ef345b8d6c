import WireMeshAgent

/// The agent's YAML config file (`/etc/wiremesh/config.yaml`).
enum YAMLConfigTarget {
    static let target = FuzzTarget(
        name: "yaml-config",
        summary: "the YAML config: ConfigLayer(yaml:file:), then its saved form (settings.json values) read back",
        run: run, seeds: seeds)

    static func run(_ data: [UInt8]) {
        // As AgentConfig reads the file: bytes decoded as UTF-8.
        let layer: ConfigLayer
        do { layer = try ConfigLayer(yaml: String(decoding: data, as: UTF8.self), file: "/etc/wiremesh/config.yaml") } catch let e as ConfigError {
            _ = e.description
            return
        } catch {
            fatalError("ConfigLayer(yaml:) threw \(type(of: error)), not ConfigError")
        }
        _ = AgentConfig().applying(layer).effectiveMTU(underlayMTU: 1500)
        // What init/join save of it (settings.json) reads back as the same settings.
        let values = layer.savedValues
        var expected = layer
        expected.stateDirectory = nil
        expected.logLevel = nil
        let again: ConfigLayer
        do { again = try ConfigLayer(saved: values, file: "settings.json") } catch {
            fatalError("saved values \(values) do not read back: \(error)")
        }
        require(again == expected, "saved values \(values) read back as a different layer")
    }

    static func seeds() throws -> [[UInt8]] {
        [
            """
            # every key
            state-dir: /var/lib/wiremesh
            control-socket: /run/wiremesh/wiremesh.sock
            interface: wm0
            advertise-address: 192.0.2.10
            gossip-port: 7946
            wireguard-port: 51820
            mtu: 1420
            persistent-keepalive: 25s
            key-rotation-interval: 24h
            cluster-key-grace: 1m30s
            log-level: debug
            metrics-address: 127.0.0.1:9586
            """,
            "interface: \"wm1\"\nadvertise-address: 'fd00::10'\nkey-rotation-interval: 0\npersistent-keepalive: 0\n",
            "mtu: 9000\ncluster-key-grace: 90\nkey-rotation-interval: 15500ms\n",
            "",
            "{interface: wm2, gossip-port: 8000}\n",
        ].map { Array($0.utf8) }
    }
}
