import ByteCodec
import Membership

/// The member list a join grant carries and `members.bin` keeps: signed records, each after its
/// u32 big-endian length, so every record can be verified again on load.
public enum MemberBlob {
    public static func encode(_ records: [SignedNodeRecord]) -> [UInt8] {
        var w = ByteWriter()
        for r in records {
            let bytes = r.encode()
            w.u32(UInt32(bytes.count))
            w.raw(bytes)
        }
        return w.bytes
    }

    /// Records that decode and verify; anything damaged is skipped (the cluster re-sends it), and a
    /// length past the end ends the list.
    public static func decode(_ blob: [UInt8]) -> [SignedNodeRecord] {
        var out: [SignedNodeRecord] = []
        var r = ByteReader(blob)
        while let n = try? r.u32(), let bytes = try? r.raw(Int(n)) {
            if let record = try? SignedNodeRecord.decode(Array(bytes)), record.verify() { out.append(record) }
        }
        return out
    }
}
