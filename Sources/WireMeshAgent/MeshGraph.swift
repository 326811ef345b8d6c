import WireGuard

/// `wiremesh graph`: the mesh as seen from this node, as Graphviz DOT text. Pure, so the text is
/// tested as it is; `dot -Tsvg` turns it into a picture.
public enum MeshGraph {
    /// The DOT text: this node and every member with their pod blocks, an edge from this node to each
    /// peer with its handshake age and traffic; stale edges (alive, no handshake in 180 s) red,
    /// missing ones (alive member, no peer on the device) red and dashed.
    public static func dot(status: StatusInfo, peers: [PeerInfo]) -> String {
        var lines = [
            "digraph wiremesh {",
            "  label=\(quote("cluster \(status.clusterID), seen from \(status.nodeName)"));",
            "  labelloc=t;",
            "  node [shape=box, style=rounded, fontname=\"Helvetica\"];",
            "  edge [fontname=\"Helvetica\", fontsize=10];",
            "  \(quote(status.nodeName)) [label=\(label([status.nodeName] + status.podCIDRs + ["this node"])), penwidth=2];",
        ]
        for p in peers {
            var attributes = ["label=\(label([p.name] + p.podCIDRs + [p.state]))"]
            switch p.state {
            case "alive": break
            case "suspect": attributes.append("color=orange")
            default: attributes += ["color=gray", "fontcolor=gray"]
            }
            lines.append("  \(quote(p.name)) [\(attributes.joined(separator: ", "))];")
        }
        for p in peers {
            guard let edge = edgeAttributes(p) else { continue }
            lines.append("  \(quote(status.nodeName)) -> \(quote(p.name)) [\(edge.joined(separator: ", "))];")
        }
        return (lines + ["}"]).joined(separator: "\n") + "\n"
    }

    /// Attributes of the edge to `p`; nil when there is none to draw (a departed member without a peer).
    static func edgeAttributes(_ p: PeerInfo) -> [String]? {
        let active = p.state == "alive" || p.state == "suspect"
        if p.onDevice == false {
            return active ? ["label=\(label(["missing: no peer on the device"]))", "color=red", "fontcolor=red", "style=dashed"] : nil
        }
        let handshake = p.secondsSinceHandshake.map { "handshake \($0) s ago" } ?? "no handshake"
        var text = [handshake]
        if let rx = p.receiveBytes, let tx = p.transmitBytes {
            text.append("rx \(DeviceFormat.bytes(rx)), tx \(DeviceFormat.bytes(tx))")
        }
        let stale = (p.secondsSinceHandshake ?? Int.max) > Doctor.handshakeStaleSeconds
        if p.state == "alive" && stale { return ["label=\(label(text + ["stale"]))", "color=red", "fontcolor=red", "penwidth=2"] }
        return ["label=\(label(text))"] + (active ? [] : ["color=gray", "fontcolor=gray"])
    }

    /// A DOT label of several lines.
    static func label(_ lines: [String]) -> String {
        "\"" + lines.map(escape).joined(separator: "\\n") + "\""
    }

    /// A DOT double-quoted string: backslashes and quotes escaped, line breaks dropped.
    static func quote(_ s: String) -> String { "\"" + escape(s) + "\"" }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: " ").replacingOccurrences(of: "\r", with: " ")
    }
}
