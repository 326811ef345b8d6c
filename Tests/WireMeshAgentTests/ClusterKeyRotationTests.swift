import Foundation
import Testing
import WireMeshCrypto
@testable import WireMeshAgent

/// A key id from a small number (ids order like the numbers).
private func kid(_ n: UInt8) -> ClusterKeyID { ClusterKeyID(bytes: [0, 0, 0, 0, 0, 0, 0, n])! }
private func tag(_ n: UInt8, _ generation: UInt64) -> ClusterKeyTag { ClusterKeyTag(id: kid(n), generation: generation) }
private func steady(_ n: UInt8, _ generation: UInt64 = 1) -> ClusterKeyRotation {
    ClusterKeyRotation(entries: [.init(id: kid(n), generation: generation)])
}
private func member(_ name: String, live: Bool = true, _ tags: [ClusterKeyTag]) -> MemberKeys {
    MemberKeys(name: name, live: live, keys: tags)
}

@Suite("ClusterKeyRotation (pure, virtual time)")
struct ClusterKeyRotationTests {
    let grace = 30.0

    @Test func installedKeyWaitsUntilEveryLiveMemberListsIt() {
        var r = steady(1)
        let step1 = r.install(tag(2, 2))
        #expect(step1)
        let step2 = r.install(tag(2, 2))
        #expect(!step2, "a second install is a no-op")
        #expect(r.phase == .installing)
        #expect(r.primary.id == kid(1) && r.target.id == kid(2))
        #expect(r.tags == [tag(1, 1), tag(2, 2)], "the record lists both, primary first")

        let actions = r.evaluate(members: [member("b", [tag(1, 1), tag(2, 2)]), member("c", [tag(1, 1)])], now: 100, grace: grace)
        #expect(actions.isEmpty, "c does not hold the new key yet: \(actions)")
        #expect(r.primary.id == kid(1))
        #expect(r.entries[1].retireAt == nil, "the target is never retired")

        let promoted = r.evaluate(members: [member("b", [tag(1, 1), tag(2, 2)]), member("c", [tag(1, 1), tag(2, 2)])],
                                  now: 101, grace: grace)
        #expect(promoted == [.promote(kid(2))])
        #expect(r.primary.id == kid(2))
        #expect(r.phase == .retiring)
        #expect(r.entries[1].id == kid(1) && r.entries[1].retireAt == 101 + grace, "the old primary starts its grace period")
    }

    @Test func deadMembersDoNotBlockPromotion() {
        var r = steady(1)
        r.install(tag(2, 2))
        let actions = r.evaluate(members: [member("b", [tag(1, 1), tag(2, 2)]), member("down", live: false, [tag(1, 1)])],
                                 now: 0, grace: grace)
        #expect(actions == [.promote(kid(2))])
    }

    @Test func aSingleNodeClusterPromotesAtOnce() {
        var r = steady(1)
        r.install(tag(2, 2))
        let step3 = r.evaluate(members: [], now: 0, grace: grace)
        #expect(step3 == [.promote(kid(2))])
    }

    @Test func aKeyALiveMemberAlreadySealsWithIsPromoted() {
        // b made the new key primary: it saw every live member holding it.
        var r = steady(1)
        r.install(tag(2, 2))
        let actions = r.evaluate(members: [member("b", [tag(2, 2), tag(1, 1)]), member("c", [tag(1, 1)])], now: 0, grace: grace)
        #expect(actions == [.promote(kid(2))])
    }

    @Test func oldKeyIsRemovedOnlyAfterTheGracePeriod() {
        var r = steady(1)
        r.install(tag(2, 2))
        let both = [member("b", [tag(2, 2), tag(1, 1)])]
        let step4 = r.evaluate(members: both, now: 1000, grace: grace)
        #expect(step4 == [.promote(kid(2))])
        #expect(r.entries[1].retireAt == 1030)
        let step5 = r.evaluate(members: both, now: 1001, grace: grace)
        #expect(step5.isEmpty)
        let step6 = r.evaluate(members: both, now: 1029.9, grace: grace)
        #expect(step6.isEmpty, "still inside the grace period")
        #expect(r.holds(kid(1)))
        let step7 = r.evaluate(members: both, now: 1030, grace: grace)
        #expect(step7 == [.remove(kid(1))])
        #expect(r.entries.map(\.id) == [kid(2)])
        #expect(r.phase == .steady)
    }

    @Test func oldKeyIsKeptWhileALiveMemberStillSealsWithIt() {
        var r = ClusterKeyRotation(entries: [.init(id: kid(2), generation: 2), .init(id: kid(1), generation: 1, retireAt: 10)])
        let laggard = [member("b", [tag(1, 1), tag(2, 2)])]
        let step8 = r.evaluate(members: laggard, now: 50, grace: grace)
        #expect(step8.isEmpty, "b still seals with the old key")
        #expect(r.holds(kid(1)))
        let step9 = r.evaluate(members: [member("b", [tag(2, 2)])], now: 51, grace: grace)
        #expect(step9 == [.remove(kid(1))])
    }

    @Test func aNewerKeyAdvertisedByAMemberIsFetchedAnOlderOneIsNot() {
        var r = steady(1)
        let actions = r.evaluate(members: [member("b", [tag(1, 1), tag(2, 2)])], now: 0, grace: grace)
        #expect(actions == [.fetch(tag(2, 2), from: "b")])
        var s = steady(5, 3)
        let step10 = s.evaluate(members: [member("b", [tag(5, 3), tag(4, 2)])], now: 0, grace: grace)
        #expect(step10.isEmpty,
                "a key below the target is never asked for (it is being retired)")
        let step11 = s.evaluate(members: [member("d", live: false, [tag(9, 9)])], now: 0, grace: grace)
        #expect(step11.isEmpty,
                "dead members are not asked")
    }

    @Test func generationsUnknownAfterAJoinAreLearnedFromRecords() {
        // A join grant hands over keys without generations; the joiner must not retire the new key.
        var r = ClusterKeyRotation(entries: [.init(id: kid(9), generation: nil), .init(id: kid(2), generation: nil)])
        let actions = r.evaluate(members: [member("a", [tag(9, 1), tag(2, 2)]), member("b", [tag(9, 1), tag(2, 2)])],
                                 now: 0, grace: grace)
        #expect(r.entries.first { $0.id == kid(9) }?.generation == 1)
        #expect(actions == [.promote(kid(2))], "key 2 has the higher generation although its id is lower")
    }

    @Test func aMergedKeyringWithANewerPrimaryIsUsedAtOnce() {
        // A node that was down during a rotation: its old key is gone everywhere, gossip is unreadable.
        var r = steady(1)
        let actions = r.merge([tag(2, 2)])
        #expect(actions == [.promote(kid(2))])
        #expect(r.primary.id == kid(2))
        let step12 = r.evaluate(members: [], now: 0, grace: grace)
        #expect(step12.isEmpty)
        #expect(r.entries[1].retireAt == grace)
        let step13 = r.evaluate(members: [], now: grace, grace: grace)
        #expect(step13 == [.remove(kid(1))])

        var current = steady(2, 2)
        let step14 = current.merge([tag(1, 1)])
        #expect(step14.isEmpty, "an older keyring never replaces the primary")
        #expect(current.primary.id == kid(2))
    }

    @Test func nextGenerationIsAboveEveryKnownKey() {
        let r = steady(1, 4)
        #expect(r.nextGeneration(members: [member("b", [tag(3, 7)])]) == 8)
        #expect(ClusterKeyRotation(entries: [.init(id: kid(1), generation: nil)]).nextGeneration(members: []) == 1)
        // A record advertising the largest generation must not make `cluster-key rotate` trap on + 1,
        // nor leave no room for the next rotation: it is not counted.
        #expect(r.nextGeneration(members: [member("b", [tag(3, .max)])]) == 5)
        #expect(r.nextGeneration(members: [member("b", [tag(3, 4 + ClusterKeyRotation.maxGenerationStep)])]) == 5 + ClusterKeyRotation.maxGenerationStep)
        #expect(steady(1, .max).nextGeneration(members: []) == nil, "a damaged keyring at the largest generation")
    }

    /// A member advertises (and would hand over) a key at generation 2^64 - 1: no node fetches it,
    /// learns that generation or installs it, so the rotation an eviction needs still has a number.
    @Test func aKeyFarAboveTheNewestIsIgnored() {
        var r = steady(1, 3)
        let hostile = member("evil", [tag(1, 3), tag(9, .max)])
        let actions = r.evaluate(members: [member("b", [tag(1, 3)]), hostile], now: 10, grace: grace)
        #expect(actions == [.ignore(tag(9, .max), from: "evil")], "\(actions)")
        // Handed over anyway (a keyring answer from that member): refused, the primary stays.
        let merged = r.merge([tag(9, .max), tag(1, 3)])
        #expect(merged.isEmpty && r.entries.map(\.id) == [kid(1)])
        // A key learnt without a generation (a join grant) does not take the hostile one either.
        var joined = ClusterKeyRotation(entries: [.init(id: kid(1), generation: nil)])
        _ = joined.evaluate(members: [member("evil", [ClusterKeyTag(id: kid(1), generation: .max)])], now: 10, grace: grace)
        #expect(joined.entries[0].generation == nil)
        #expect(r.nextGeneration(members: [hostile]) == 4)
        // A real rotation a few generations ahead is still fetched, next to the ignored one.
        let next = r.evaluate(members: [member("b", [tag(1, 3), tag(2, 5)]), hostile], now: 11, grace: grace)
        #expect(next == [.fetch(tag(2, 5), from: "b"), .ignore(tag(9, .max), from: "evil")] || next == [.ignore(tag(9, .max), from: "evil"), .fetch(tag(2, 5), from: "b")], "\(next)")
    }

    /// Three nodes; node a rotates to key 3 and node b to key 2 at the same time (both generation 2).
    /// Records travel instantly, keys are fetched when advertised: every node ends with key 3 only.
    @Test func twoConcurrentRotationsResolveToTheSameKeyEverywhere() {
        var nodes: [String: ClusterKeyRotation] = ["a": steady(1), "b": steady(1), "c": steady(1)]
        nodes["a"]!.install(tag(3, 2))
        nodes["b"]!.install(tag(2, 2))
        var now = 0.0
        for _ in 0..<20 {
            for name in nodes.keys.sorted() {
                let others = nodes.filter { $0.key != name }.map { member($0.key, $0.value.tags) }
                for action in nodes[name]!.evaluate(members: others, now: now, grace: grace) {
                    if case .fetch(_, let from) = action {
                        _ = nodes[name]!.merge(nodes[from]!.tags)
                    }
                }
            }
            now += 10
        }
        for (name, r) in nodes {
            #expect(r.entries.map(\.id) == [kid(3)], "\(name) holds \(r.entries.map(\.id))")
            #expect(r.phase == .steady)
        }
    }

    /// A restart at any phase reloads the same state from the keyring file and carries on.
    @Test(arguments: ["installing", "retiring", "steady"])
    func restartInEachPhaseContinuesFromTheSavedState(phase: String) throws {
        try withTemporaryDirectory { dir in
            let store = StateStore(directory: dir)
            let k1 = ClusterKey.generate(), k2 = ClusterKey.generate()
            var keyring = Keyring(primary: k1, others: [k2])
            var r = ClusterKeyRotation(entries: [.init(id: k1.id, generation: 1), .init(id: k2.id, generation: 2)])
            let all = [member("b", [ClusterKeyTag(id: k1.id, generation: 1), ClusterKeyTag(id: k2.id, generation: 2)])]
            if phase != "installing" {
                let step15 = r.evaluate(members: all, now: 100, grace: grace)
                #expect(step15 == [.promote(k2.id)])
                keyring.use(k2)
                _ = r.evaluate(members: all, now: 101, grace: grace)
            }
            if phase == "steady" {
                let step16 = r.evaluate(members: [], now: 200, grace: grace)
                #expect(step16 == [.remove(k1.id)])
                keyring.remove(k1)
            }
            #expect(r.phase.rawValue == phase)
            try store.saveKeyring(keyring, rotation: r)

            let (loadedRing, loaded) = try store.loadClusterKeys()
            #expect(loadedRing == keyring)
            #expect(loaded == r, "the restart sees exactly the saved state")
            var continued = loaded
            let done = continued.evaluate(members: [member("b", [ClusterKeyTag(id: k2.id, generation: 2)])], now: 1000, grace: grace)
            switch phase {
            case "installing": #expect(done == [.promote(k2.id)])
            case "retiring": #expect(done == [.remove(k1.id)])
            default: #expect(done.isEmpty)
            }
        }
    }

    @Test func theKeyringFileKeepsKeysAndTheirStateTogetherAndNamesWhatIsWrong() throws {
        try withTemporaryDirectory { dir in
            let store = StateStore(directory: dir)
            let k1 = ClusterKey.generate(), k2 = ClusterKey.generate()
            try store.saveKeyring(Keyring(primary: k1, others: [k2]))
            let (_, old) = try store.loadClusterKeys()
            #expect(old.entries.map(\.generation) == [nil, nil], "a file without generations: unknown, learned later")
            #expect(AtomicFile.mode(of: dir + "/keyring.json") == 0o600)

            try AtomicFile.write(#"{"keys":["\#(k1.key.base64)","\#(k2.key.base64)"],"generations":[1]}"#,
                                 to: dir + "/keyring.json", mode: 0o600)
            #expect {
                try store.loadClusterKeys()
            } throws: { error in
                guard case StateError.corrupted(let file, let reason) = error else { return false }
                return file.hasSuffix("keyring.json") && reason.contains("generations has 1 entries for 2 keys")
            }
            try AtomicFile.write(#"{"keys":["\#(k1.key.base64)","\#(k1.key.base64)"]}"#, to: dir + "/keyring.json", mode: 0o600)
            #expect(throws: StateError.self) { try store.loadClusterKeys() }
        }
    }
}

@Suite("ClusterKeyAudience: who `cluster-key rotate` says it waits for")
struct ClusterKeyAudienceTests {
    @Test func fourLiveNodesAreFourLiveMembersThisOneIncluded() {
        // What `memberKeys` hands over on a node of a 4-node cluster: the 3 others, all live.
        let others = ["b", "c", "d"].map { member($0, [tag(1, 1)]) }
        let audience = ClusterKeyAudience(members: others)
        #expect(audience.live == 4 && audience.liveOthers == 3 && audience.notLive == 0)
        let message = audience.startedMessage(tag(2, 2), graceSeconds: 30)
        #expect(message.contains("all 4 live members hold it (this node and 3 others)"), "\(message)")
        #expect(!message.contains("dead"))
    }

    @Test func deadAndLeftMembersAreCountedApartAndDoNotBlock() {
        let others = [member("b", [tag(1, 1)]), member("c", live: false, [tag(1, 1)]), member("d", live: false, [])]
        let audience = ClusterKeyAudience(members: others)
        #expect(audience.live == 2 && audience.notLive == 2)
        let message = audience.startedMessage(tag(2, 2), graceSeconds: 30)
        #expect(message.contains("all 2 live members hold it (this node and 1 other)"), "\(message)")
        #expect(message.contains("2 dead or departed members do not hold it up"), "\(message)")
    }

    @Test func theCountMatchesWhatPromotionWaitsFor() {
        // The live members the message counts are the ones whose records evaluate() waits for.
        let others = [member("b", [tag(1, 1)]), member("c", [tag(1, 1)]), member("down", live: false, [tag(1, 1)])]
        var r = steady(1)
        r.install(tag(2, 2))
        let audience = ClusterKeyAudience(members: others)
        var holding: [MemberKeys] = others
        var promotedAfter: Int?
        var listed = 0
        for i in holding.indices where holding[i].live {
            #expect(r.evaluate(members: holding, now: 0, grace: 30).isEmpty)
            holding[i].keys.append(tag(2, 2))
            listed += 1
            if !r.evaluate(members: holding, now: 0, grace: 30).isEmpty { promotedAfter = listed }
        }
        #expect(promotedAfter == audience.liveOthers)
        #expect(r.primary.id == kid(2))
    }

    @Test func aLoneNodeSaysItPromotesAtOnce() {
        let message = ClusterKeyAudience(members: []).startedMessage(tag(2, 2), graceSeconds: 30)
        #expect(message.contains("primary at once"), "\(message)")
    }
}
