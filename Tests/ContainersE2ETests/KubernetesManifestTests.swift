import Foundation
import TestSupport
import Testing

/// Runs a program, returning its exit status and what it printed (stdout and stderr together).
private func run(_ program: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await onThread {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = [program] + arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

/// examples/kubernetes: validated offline only (no cluster runs here; the example says so). The
/// schema check is PyPI's kubernetes-validate (scripts/setup installs it); the properties issue 13 asks
/// of the DaemonSet are read from the YAML.
@Suite("Kubernetes manifests") struct KubernetesManifestTests {
    static let manifest = packageRoot + "/examples/kubernetes/wiremesh.yaml"

    @Test func theManifestsPassStrictSchemaValidation() async throws {
        let (status, output) = try await run("kubernetes-validate", ["--strict", Self.manifest])
        #expect(status == 0, "kubernetes-validate --strict failed (missing? run scripts/setup): \(output)")
        #expect(output.contains("passed for resource daemonset/wiremesh"), "\(output)")
    }

    /// Host network, NET_ADMIN, state on a hostPath, the host's CNI directory mounted, the join token
    /// from a Secret volume read on stdin: never an environment variable, never an argument.
    @Test func theDaemonSetHasHostNetworkCapabilitiesHostPathsAndTheTokenOnlyAsAFile() async throws {
        let check = #"""
            import re, sys, yaml
            docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
            ds = next(d for d in docs if d["kind"] == "DaemonSet")
            spec = ds["spec"]["template"]["spec"]
            c = spec["containers"][0]
            problems = []
            if spec.get("hostNetwork") is not True: problems.append("hostNetwork is not true")
            if "NET_ADMIN" not in c["securityContext"]["capabilities"]["add"]: problems.append("no NET_ADMIN")
            host = {v["hostPath"]["path"]: v["name"] for v in spec["volumes"] if "hostPath" in v}
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            for path in ["/var/lib/wiremesh", "/etc/cni/net.d"]:
                if mounts.get(host.get(path)) != path: problems.append(path + " is not a hostPath mounted at itself")
            secret = [v["name"] for v in spec["volumes"] if "secret" in v]
            if not secret or secret[0] not in mounts: problems.append("no Secret volume mounted")
            for e in c.get("env", []):
                if "valueFrom" in e or "TOKEN" in e["name"]: problems.append("env var " + e["name"] + " carries a secret")
            text = " ".join(c.get("command", []) + c.get("args", []))
            m = re.search(r"join --token-file (\S+)", text)
            if not m or not secret or not m.group(1).startswith(mounts.get(secret[0], "?") + "/"):
                problems.append("the token is not read from the Secret's file with --token-file")
            if "wmj" in text: problems.append("a token in the arguments")
            print("; ".join(problems) or "ok")
            sys.exit(1 if problems else 0)
            """#
        let (status, output) = try await run("python3", ["-c", check, Self.manifest])
        #expect(status == 0, "\(output)")
    }
}
