/// The project's one hex codec: token ids, cluster key ids, WireGuard keys in the UAPI protocol.
public enum Hex {
    /// Lowercase hex digits of `bytes`.
    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of hex digits in either case; nil for an odd count or any other character.
    /// The result is allocated once at its final size, so a caller decoding a secret can zero it.
    /// Inlinable so callers in other modules get it specialised (unspecialised, it dominated reading a
    /// 1000-peer UAPI reply).
    @inlinable
    public static func decode<C: Collection>(utf8 digits: C) -> [UInt8]? where C.Element == UInt8 {
        guard digits.count % 2 == 0 else { return nil }
        var out = [UInt8](repeating: 0, count: digits.count / 2)
        var i = digits.startIndex
        for j in out.indices {
            let hi = digits[i]
            i = digits.index(after: i)
            let lo = digits[i]
            i = digits.index(after: i)
            guard let h = value(of: hi), let l = value(of: lo) else {
                for k in out.indices { out[k] = 0 }
                return nil
            }
            out[j] = h << 4 | l
        }
        return out
    }

    /// `decode(utf8:)` of a string.
    @inlinable
    public static func decode(_ text: String) -> [UInt8]? { decode(utf8: Array(text.utf8)) }

    /// The value of one hex digit (either case).
    @inlinable
    static func value(of digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return digit - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
