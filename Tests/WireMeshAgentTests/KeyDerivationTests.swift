import Testing
import WireMeshCrypto

/// Golden values computed independently with Python's hashlib/hmac (see the commit message).
@Suite("KeyDerivation")
struct KeyDerivationTests {
    let key = try! Key(bytes: Array(0..<32).map(UInt8.init))
    let message = Array("wiremesh join".utf8)

    @Test func macIsHMACSHA512Truncated() {
        let tag = KeyDerivation.authenticate(message, key: key)
        #expect(tag == hexBytes("bff6aa9f2c65b0e965bae7257774b7c0fa7e679df77a16ae7d93e38a711aa534"))
        #expect(KeyDerivation.verify(tag: tag, for: message, key: key))
        var bad = tag
        bad[0] ^= 1
        #expect(!KeyDerivation.verify(tag: bad, for: message, key: key))
        #expect(!KeyDerivation.verify(tag: tag, for: message + [0], key: key))
        #expect(!KeyDerivation.verify(tag: Array(tag.prefix(16)), for: message, key: key))
    }

    @Test func genericHashIsBLAKE2b() {
        #expect(KeyDerivation.genericHash(message) == hexBytes("34fd08cd9667c2b433166c337a8b4da31975058379acb343c214c5450e20de6c"))
        #expect(KeyDerivation.genericHash(message, key: key.bytes)
                == hexBytes("16e893d7e2f80114070e8ce00f9b0ac5ad90904b4bd98daa0869bb500bc46718"))
        #expect(KeyDerivation.genericHash(message, outputLength: 16).count == 16)
    }

    @Test func subkeyMatchesLibsodiumKDFConstruction() {
        let sub = KeyDerivation.deriveSubkey(from: key, id: 1, context: "wmjoin01")
        #expect(sub.bytes == hexBytes("dd5d7314efe17c80b7394b62e5d8f0524c3a4d8052efb89b6f80df4280bc7438"))
        #expect(KeyDerivation.deriveSubkey(from: key, id: 2, context: "wmjoin01") != sub)
        #expect(KeyDerivation.deriveSubkey(from: key, id: 1, context: "wmjoin02") != sub)
    }

    @Test func constantTimeEqual() {
        #expect(KeyDerivation.constantTimeEqual([1, 2, 3], [1, 2, 3]))
        #expect(!KeyDerivation.constantTimeEqual([1, 2, 3], [1, 2, 4]))
        #expect(!KeyDerivation.constantTimeEqual([1, 2, 3], [1, 2]))
        #expect(KeyDerivation.constantTimeEqual([], []))
    }
}
