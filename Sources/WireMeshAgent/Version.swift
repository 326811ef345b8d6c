/// The wiremesh release, in one place: `wiremesh --version` prints it.
public enum WireMeshVersion {
    /// Semantic version of this build (0.x: the control protocol and state formats may still change).
    public static let current = "0.1.0"
}
