import IPNetwork
import Testing
import WireMeshCrypto
@testable import WireGuard

/// The byte-level fast paths must never accept something the String parsers reject, and must
/// read what they accept the same way.
@Suite struct TextParsingTests {
    func bytes(_ s: String) -> ArraySlice<UInt8> { Array(s.utf8)[...] }

    @Test(arguments: [
        "10.0.0.0/24", "10.0.0.1", "0.0.0.0/0", "255.255.255.255/32", "1.2.3.4/0", "10.0.0.0/024",
        "fd00::/64", "::/0", "2001:db8::1", "::ffff:1.2.3.4/128", "FD00::1/128",
        "10.0.0.0/33", "256.0.0.0/8", "01.2.3.4/32", "1.2.3/24", "1.2.3.4.5", "1.2.3.4/", "/24", "",
        "1.2.3.4/+8", "1.2.3.4/-1", "fd00::/129", "fd00::1%eth0/128", "gg::/64", "1..2.3/32", " 1.2.3.4",
    ])
    func prefixAgreesWithIPPrefix(text: String) {
        let fast = TextParsing.prefix(bytes(text))
        let slow = try? IPPrefix(text)
        if let fast { #expect(fast == slow, "fast path read '\(text)' as \(fast), slow as \(String(describing: slow))") }
        if slow == nil { #expect(fast == nil) }
    }

    @Test(arguments: [
        "192.0.2.1:51820", "0.0.0.0:0", "[2001:db8::1]:51820", "[::1]:1", "[fd00::2]:65535",
        "192.0.2.1:65536", "192.0.2.1", "192.0.2.1:", "[2001:db8::1]", "2001:db8::1:51820", "[1.2.3.4]:5",
        "host:51820", "[]:1", "192.0.2.1:+5", "192.0.2.1:051820",
    ])
    func endpointAgreesWithEndpoint(text: String) {
        let fast = TextParsing.endpoint(bytes(text))
        let slow = try? Endpoint(text)
        if let fast { #expect(fast == slow, "'\(text)'") }
        if slow == nil { #expect(fast == nil, "'\(text)'") }
    }

    @Test func keysAgreeWithTheKeyParsers() throws {
        for _ in 0..<200 {
            let k = Key.generatePreshared()
            #expect(TextParsing.base64Key(bytes(k.base64)) == k)
            #expect(TextParsing.hexKey(bytes(k.hex)) == k)
            #expect(TextParsing.hexKey(bytes(k.hex.uppercased())) == k)
        }
        let k = fixedKey(7).base64
        // Non-canonical trailing bits, wrong padding, bad characters, wrong length.
        let last = k.index(k.endIndex, offsetBy: -2)
        let nonCanonical = String(k[..<last]) + "d="
        for bad in [nonCanonical, String(k.dropLast()) + "A", "=" + k.dropFirst(), String(k.dropLast(2)) + "==", "!" + k.dropFirst(), String(k.dropLast())] {
            #expect(TextParsing.base64Key(bytes(bad)) == nil, "\(bad)")
            if TextParsing.base64Key(bytes(bad)) != nil { #expect((try? Key(base64: bad)) != nil) }
        }
        #expect(TextParsing.hexKey(bytes(String(repeating: "g", count: 64))) == nil)
        #expect(TextParsing.hexKey(bytes(String(repeating: "0", count: 62))) == nil)
    }

    @Test func caseInsensitiveKeyNames() {
        #expect(TextParsing.equalsLowercase(bytes("AllowedIPs"), "allowedips"))
        #expect(TextParsing.equalsLowercase(bytes("ALLOWEDIPS"), "allowedips"))
        #expect(!TextParsing.equalsLowercase(bytes("AllowedIP"), "allowedips"))
        #expect(!TextParsing.equalsLowercase(bytes("AllowedIPz"), "allowedips"))
    }
}
