import Foundation
import Testing
@testable import WireMeshAgent
#if canImport(Glibc)
import Glibc
#endif

@Suite("AtomicFile")
struct AtomicFileTests {
    @Test func writesContentWithExactModeWhateverTheUmask() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let secret = dir + "/secret.key"
            let old = umask(0)  // a permissive umask must not widen a secret's mode
            defer { umask(old) }
            try AtomicFile.write("s3cret\n", to: secret, mode: 0o600)
            #expect(AtomicFile.mode(of: secret) == 0o600)
            #expect(try AtomicFile.read(secret) == Array("s3cret\n".utf8))

            let public_ = dir + "/cluster.json"
            try AtomicFile.write([1, 2, 3], to: public_, mode: 0o644)
            #expect(AtomicFile.mode(of: public_) == 0o644)
            #expect(directoryEntries(dir) == ["cluster.json", "secret.key"])
        }
    }

    @Test func replacesAnExistingFileAndItsMode() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/f"
            try AtomicFile.write("old", to: path, mode: 0o644)
            try AtomicFile.write("new contents", to: path, mode: 0o600)
            #expect(fileText(path) == "new contents")
            #expect(AtomicFile.mode(of: path) == 0o600)
            #expect(directoryEntries(dir) == ["f"])
        }
    }

    @Test(arguments: [AtomicFile.Step.afterPartialWrite, .beforeRename])
    func failureMidwayLeavesTheOldFileAndNoTemporary(step: AtomicFile.Step) throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/wireguard.key"
            try AtomicFile.write("old key\n", to: path, mode: 0o600)
            #expect(throws: FileError.self) {
                try AtomicFile.write(Array(repeating: 0x41, count: 10_000), to: path, mode: 0o600, failAt: step)
            }
            #expect(fileText(path) == "old key\n")
            #expect(directoryEntries(dir) == ["wireguard.key"])
        }
    }

    @Test func missingDirectoryIsAnErrorNamingThePath() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let path = dir + "/missing/f"
            do {
                try AtomicFile.write("x", to: path, mode: 0o600)
                Issue.record("write into a missing directory succeeded")
            } catch let e as FileError {
                #expect(e.path == path)
                #expect(e.errno == ENOENT)
                #expect(e.description.contains(path))
            }
        }
    }

    /// Real I/O failures (not injected): a full filesystem and a read-only one. Root ignores
    /// directory permissions, so the test mounts a tiny tmpfs instead of chmod-ing a directory.
    @Test func fullAndReadOnlyFilesystemKeepTheOldFile() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let mnt = dir + "/mnt"
            #expect(mkdir(mnt, 0o700) == 0)
            guard mount("tmpfs", mnt, "tmpfs", 0, "size=64k,mode=0700") == 0 else {
                print("AtomicFileTests: skipping the tmpfs part: mount failed (\(String(cString: strerror(errno)))); needs root")
                return
            }
            defer { umount2(mnt, Int32(MNT_DETACH)) }
            let path = mnt + "/state"
            try AtomicFile.write("old", to: path, mode: 0o600)

            do {
                try AtomicFile.write(Array(repeating: 0x42, count: 1 << 20), to: path, mode: 0o600)
                Issue.record("writing 1 MiB into a 64 KiB tmpfs succeeded")
            } catch let e as FileError {
                #expect(e.errno == ENOSPC)
                // The file being replaced, not the temporary copy (already removed) the write went to.
                #expect(e.path == path)
                #expect(e.description == "cannot write a new version of \(path): No space left on device")
            }
            #expect(fileText(path) == "old")
            #expect(directoryEntries(mnt) == ["state"])

            #expect(mount("tmpfs", mnt, "tmpfs", UInt(MS_REMOUNT | MS_RDONLY), "size=64k") == 0)
            do {
                try AtomicFile.write("new", to: path, mode: 0o600)
                Issue.record("writing into a read-only filesystem succeeded")
            } catch let e as FileError {
                #expect(e.errno == EROFS)
                #expect(e.description.contains(path))
            }
            #expect(fileText(path) == "old")
        }
    }

    @Test func readIfExistsDistinguishesMissing() throws {
        try withTemporaryDirectory { (dir: String) throws in
            #expect(try AtomicFile.readIfExists(dir + "/nope") == nil)
            #expect(throws: FileError.self) { try AtomicFile.read(dir + "/nope") }
        }
    }

    @Test func makeDirectoryCreatesParentsAndTightensMode() throws {
        try withTemporaryDirectory { (dir: String) throws in
            let state = dir + "/a/b/state"
            try AtomicFile.makeDirectory(state, mode: 0o700)
            #expect(AtomicFile.mode(of: state) == 0o700)
            #expect(chmod(state, 0o755) == 0)
            try AtomicFile.makeDirectory(state, mode: 0o700)
            #expect(AtomicFile.mode(of: state) == 0o700)
            try AtomicFile.write("x", to: dir + "/file", mode: 0o600)
            #expect(throws: FileError.self) { try AtomicFile.makeDirectory(dir + "/file", mode: 0o700) }
        }
    }
}
