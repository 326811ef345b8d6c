/// How the simulated network delays and loses datagrams. All randomness comes from the simulation's
/// seeded generator, so a model and a seed give one trace.
public struct NetworkModel: Sendable {
    /// Fixed one-way delay of every datagram.
    public var latency: Duration
    /// Extra one-way delay drawn uniformly from [0, jitter) per datagram (so datagrams can reorder).
    public var jitter: Duration
    /// Independent loss probability per datagram.
    public var loss: Double
    /// Bursty loss on each receiver's access link, or nil for none.
    public var burst: GilbertElliott?

    /// A network with the given delay and loss.
    public init(latency: Duration = .microseconds(500), jitter: Duration = .microseconds(500), loss: Double = 0,
                burst: GilbertElliott? = nil) {
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self.burst = burst
    }

    /// A quiet data-centre LAN: 0.5–1 ms one way, no loss.
    public static var lan: NetworkModel { NetworkModel() }
}

/// The Gilbert–Elliott two-state loss channel: a good and a bad state with their own loss
/// probabilities; each datagram first moves the chain, then is lost with the state's probability.
/// Mean burst length is 1 / `badToGood` datagrams.
public struct GilbertElliott: Sendable, Equatable {
    /// Probability per datagram of entering the bad state.
    public var goodToBad: Double
    /// Probability per datagram of leaving the bad state.
    public var badToGood: Double
    /// Loss probability in the good state.
    public var lossGood: Double
    /// Loss probability in the bad state.
    public var lossBad: Double

    public init(goodToBad: Double, badToGood: Double, lossGood: Double = 0, lossBad: Double = 1) {
        self.goodToBad = goodToBad
        self.badToGood = badToGood
        self.lossGood = lossGood
        self.lossBad = lossBad
    }

    /// Long-run fraction of datagrams lost.
    public var stationaryLoss: Double {
        let pBad = goodToBad / (goodToBad + badToGood)
        return pBad * lossBad + (1 - pBad) * lossGood
    }
}
