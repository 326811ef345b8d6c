import Testing
@testable import WireMeshCrypto

@Suite struct KeyTests {
    /// RFC 7748 §5.2, first X25519 test vector: scalar, u-coordinate, output.
    @Test func rfc7748X25519Vector() throws {
        let scalar = try Key(hex: "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4")
        let u = try Key(hex: "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c")
        let out = try #require(scalar.sharedSecret(with: u))
        #expect(out.hex == "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")
    }

    /// RFC 7748 §6.1: Alice's public key from her private key.
    @Test func rfc7748AlicePublicKey() throws {
        let alice = try Key(hex: "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
        #expect(alice.publicKey().hex == "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    }

    @Test func generatedPrivateKeyIsClamped() {
        for _ in 0..<50 {
            let b = Key.generatePrivate().bytes
            #expect(b[0] & 7 == 0)
            #expect(b[31] & 128 == 0)
            #expect(b[31] & 64 == 64)
        }
    }

    @Test func base64RoundTripsAndRejectsMalformed() throws {
        let k = Key.generatePrivate()
        #expect(try Key(base64: k.base64) == k)
        #expect(try Key(base64: " \(k.base64)\n") == k)
        #expect(k.base64.count == 44)
        for bad in ["", "abc", String(k.base64.dropLast()), k.base64 + "A", "!" + k.base64.dropFirst()] {
            #expect(throws: KeyError.self) { try Key(base64: bad) }
        }
        #expect(throws: KeyError.self) { try Key(bytes: [UInt8](repeating: 1, count: 31)) }
    }

    /// Found by fuzzing (keyring-message, a rotation message): libsodium 1.0.18 decoded the non-ASCII
    /// "ն" (bytes D5 B6) as "+/", so a key text with it was accepted as another text's key.
    @Test func base64WithNonASCIIBytesIsRefusedNotReadAsAnotherKey() throws {
        let key = try Key(base64: "GdgCBL+F8+/RjhsjQQyI8NDuztUVb0xb3zR7FO1+xj8=")
        #expect(key.base64 == "GdgCBL+F8+/RjhsjQQyI8NDuztUVb0xb3zR7FO1+xj8=")
        #expect(throws: KeyError.self) { try Key(base64: "GdgCBL+F8\u{576}RjhsjQQyI8NDuztUVb0xb3zR7FO1+xj8=") }
        // Every byte ≥ 0x80 in place of one character (two-byte UTF-8 where the text is 44 bytes long).
        for scalar in (0x80...0x7FF).compactMap(Unicode.Scalar.init) {
            let text = "GdgCBL+F8" + String(Character(scalar)) + "RjhsjQQyI8NDuztUVb0xb3zR7FO1+xj8="
            #expect(throws: KeyError.self, "\(scalar.value)") { try Key(base64: text) }
        }
        // Nor is a text whose last character carries bits past the key (one key, one text).
        #expect(throws: KeyError.self) { try Key(base64: "GdgCBL+F8+/RjhsjQQyI8NDuztUVb0xb3zR7FO1+xj9=") }
    }

    @Test func hexRoundTrips() throws {
        let k = Key.generatePreshared()
        #expect(try Key(hex: k.hex) == k)
        #expect(try Key(hex: k.hex.uppercased()) == k)
        #expect(throws: KeyError.self) { try Key(hex: "zz" + k.hex.dropFirst(2)) }
    }

    @Test func zeroKey() {
        #expect(Key.zero.isZero)
        #expect(!Key.generatePreshared().isZero)
    }
}

@Suite struct SigningTests {
    @Test func signAndVerify() throws {
        let id = SigningIdentity.generate()
        let msg = Array("node record".utf8)
        let sig = id.sign(msg)
        #expect(id.publicKey.verify(sig, over: msg))
        #expect(!id.publicKey.verify(sig, over: msg + [0]))
        let other = SigningIdentity.generate()
        #expect(!other.publicKey.verify(sig, over: msg))
    }

    @Test func seedDeterminesIdentity() {
        let seed = Key.generatePreshared()
        #expect(SigningIdentity(seed: seed).publicKey == SigningIdentity(seed: seed).publicKey)
    }
}

@Suite struct SealingTests {
    @Test func sealOpenRoundTripWithAssociatedData() throws {
        let key = ClusterKey.generate()
        let ad = Array("cluster-a".utf8)
        let sealed = key.seal(Array("hello".utf8), associatedData: ad)
        #expect(sealed.count == 5 + ClusterKey.overhead)
        #expect(try key.open(sealed, associatedData: ad) == Array("hello".utf8))
        #expect(throws: SealError.authenticationFailed) { try key.open(sealed, associatedData: Array("cluster-b".utf8)) }
        var tampered = sealed
        tampered[30] ^= 1
        #expect(throws: SealError.authenticationFailed) { try key.open(tampered, associatedData: ad) }
        #expect(throws: SealError.tooShort(3)) { try key.open([1, 2, 3], associatedData: ad) }
    }

    @Test func keyringOpensWithAnyInstalledKeySealsWithPrimary() throws {
        let old = ClusterKey.generate(), new = ClusterKey.generate()
        var ring = Keyring(primary: old)
        let fromOld = ring.seal([1, 2, 3], associatedData: [])
        ring.install(new)
        #expect(try ring.open(fromOld, associatedData: []) == [1, 2, 3])
        ring.use(new)
        let fromNew = ring.seal([4], associatedData: [])
        #expect(try new.open(fromNew, associatedData: []) == [4])
        let removedOld = ring.remove(old)
        let removedPrimary = ring.remove(new)
        #expect(removedOld)
        #expect(!removedPrimary)
        #expect(throws: SealError.self) { try ring.open(fromOld, associatedData: []) }
    }
}

/// An almost-right private key (one character off) must not appear, even in part, in the error.
@Suite struct KeyErrorSecrecyTests {
    @Test func theRejectedTextIsNeverEchoed() {
        let key = Key.generatePrivate().base64
        let damaged = String(key.dropLast(2)) + "!="
        do {
            _ = try Key(base64: damaged)
            Issue.record("a damaged key was accepted")
        } catch {
            let text = "\(error)"
            #expect(!text.contains(String(key.prefix(6))), "the error shows part of the key: \(text)")
            #expect(text.contains("44 characters of base64"))
        }
    }

    /// A key interpolated into a log line or an error shows a fingerprint, never its bytes.
    @Test func aKeysDescriptionShowsNoPartOfIt() {
        for _ in 0..<50 {
            let key = Key.generatePrivate()
            let text = "\(key)"
            // Windows long enough that a chance match with the 8 hex digits shown is ~1e-8.
            for n in 0..<(44 - 6) {
                #expect(!text.contains(String(Array(key.base64)[n..<n + 6])), "\(text) shows part of the key")
            }
            for n in 0..<(64 - 8) {
                #expect(!text.contains(String(Array(key.hex)[n..<n + 8])), "\(text) shows part of the key in hex")
            }
            #expect(text == "\(try! Key(bytes: Array(key.bytes)))", "the fingerprint is stable")
        }
    }
}
