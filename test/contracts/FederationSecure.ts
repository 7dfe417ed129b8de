/**
 * Federation.sol's secure mode: a task created with a threshold, and each round's four phases (keys, shares,
 * masked updates, reveals) — who may do what when, what the aggregator may advance, and what finalize demands.
 */
import { expect } from "chai";
import { network } from "hardhat";

const { ethers, networkHelpers } = await network.create();

const SHA = (s: string) => ethers.sha256(ethers.toUtf8Bytes(s));
const KEY = (s: string) => ethers.id(`key ${s}`);
const E18 = 10n ** 18n;
const Phase = { Keys: 0n, Shares: 1n, Masked: 2n, Reveal: 3n };

function config(aggregator: string, minUpdates = 2) {
  return {
    baseModelCid: "bafkreibase",
    baseModelSha256: SHA("base"),
    loraConfigHash: ethers.id("lora"),
    aggregator,
    strategyId: ethers.encodeBytes32String("fedavg"),
    minUpdates,
    roundDuration: 3600n,
    maxRounds: 2n,
    maxExamples: 10_000n,
    maxUpdateNorm: 5_000_000n,
  };
}

async function deploy() {
  const [admin, aggregator, alice, bob, carol, outsider] = await ethers.getSigners();
  const identity = await ethers.deployContract("LLMIdentity", [admin.address]);
  const federation = await ethers.deployContract("Federation", [await identity.getAddress(), admin.address]);
  for (const [i, s] of [alice, bob, carol].entries())
    await identity.register(s.address, ethers.id(`hospital ${i}`), ethers.id("fp"), `bafkreimeta${i}`);
  await federation.createSecureTask(config(aggregator.address), 2);
  await federation.createTask(config(aggregator.address)); // task 2: open
  await federation.connect(aggregator).openFirstRound(1n, "bafkreiinit", SHA("init"));
  return { identity, federation, admin, aggregator, alice, bob, carol, outsider };
}

type F = Awaited<ReturnType<typeof deploy>>;

/** All three advertise, deal and submit; the aggregator advances to Reveal. */
async function toReveal(f: F, maskers = [f.alice, f.bob, f.carol]) {
  const { federation, aggregator } = f;
  for (const s of [f.alice, f.bob, f.carol]) await federation.connect(s).advertiseKeys(1n, 1n, KEY("e"), KEY("m"));
  await federation.connect(aggregator).advancePhase(1n, 1n);
  for (const s of [f.alice, f.bob, f.carol]) await federation.connect(s).dealShares(1n, 1n, "bafkreishares", SHA("s"));
  await federation.connect(aggregator).advancePhase(1n, 1n);
  for (const s of maskers) await federation.connect(s).submitUpdate(1n, 1n, "bafkreimasked", SHA("m"), 100n, SHA("x"));
  await federation.connect(aggregator).advancePhase(1n, 1n);
}

describe("Federation secure mode", function () {
  it("creates a secure task with its threshold and emits TaskPrivacy; refuses bad thresholds", async function () {
    const { federation, aggregator } = await networkHelpers.loadFixture(deploy);
    expect(await federation.privacy(1n)).to.deep.equal([1n, 2n]);
    expect(await federation.privacy(2n)).to.deep.equal([0n, 0n]);
    await expect(federation.createSecureTask(config(aggregator.address, 3), 3))
      .to.emit(federation, "TaskPrivacy")
      .withArgs(3n, 1n, 3n);
    for (const [min, t] of [
      [3, 1],
      [2, 3],
      [256, 2],
    ]) {
      await expect(federation.createSecureTask(config(aggregator.address, min!), t!))
        .to.be.revertedWithCustomError(federation, "FederationInvalidThreshold")
        .withArgs(t, min);
    }
  });

  it("runs the phases in order: keys, shares, masked, reveal, with their events", async function () {
    const f = await networkHelpers.loadFixture(deploy);
    const { federation, aggregator, alice, bob } = f;
    await expect(federation.connect(alice).advertiseKeys(1n, 1n, KEY("ae"), KEY("am")))
      .to.emit(federation, "KeysAdvertised")
      .withArgs(1n, 1n, 1n, KEY("ae"), KEY("am"));
    // one key is below the threshold of 2
    await expect(federation.connect(aggregator).advancePhase(1n, 1n))
      .to.be.revertedWithCustomError(federation, "FederationPhaseShort")
      .withArgs(1n, 1n, Phase.Keys, 1n, 2n);
    await federation.connect(bob).advertiseKeys(1n, 1n, KEY("be"), KEY("bm"));
    await expect(federation.connect(alice).dealShares(1n, 1n, "bafkreis", SHA("s")))
      .to.be.revertedWithCustomError(federation, "FederationWrongPhase")
      .withArgs(1n, 1n, Phase.Shares, Phase.Keys);
    await expect(federation.connect(aggregator).advancePhase(1n, 1n))
      .to.emit(federation, "SecurePhaseAdvanced")
      .withArgs(1n, 1n, Phase.Shares, 2n);
    await expect(federation.connect(alice).dealShares(1n, 1n, "bafkreis", SHA("s")))
      .to.emit(federation, "SharesDealt")
      .withArgs(1n, 1n, 1n, "bafkreis", SHA("s"));
    await federation.connect(bob).dealShares(1n, 1n, "bafkreis2", SHA("s2"));
    await federation.connect(aggregator).advancePhase(1n, 1n);
    await federation.connect(alice).submitUpdate(1n, 1n, "bafkreim", SHA("m"), 100n, SHA("x"));
    await federation.connect(bob).submitUpdate(1n, 1n, "bafkreim2", SHA("m2"), 50n, SHA("x"));
    await expect(federation.connect(aggregator).advancePhase(1n, 1n))
      .to.emit(federation, "SecurePhaseAdvanced")
      .withArgs(1n, 1n, Phase.Reveal, 2n);
    await expect(federation.connect(bob).revealShares(1n, 1n, "bafkreir", SHA("r")))
      .to.emit(federation, "SharesRevealed")
      .withArgs(1n, 1n, 2n, "bafkreir", SHA("r"));
    expect(await federation.secureRound(1n, 1n)).to.deep.equal([Phase.Reveal, 2n, 2n, 2n, 1n]);
    await expect(federation.connect(aggregator).advancePhase(1n, 1n))
      .to.be.revertedWithCustomError(federation, "FederationWrongPhase")
      .withArgs(1n, 1n, Phase.Masked, Phase.Reveal);
  });

  it("takes each step once, only after the step before it, and masked updates only in their phase", async function () {
    const f = await networkHelpers.loadFixture(deploy);
    const { federation, aggregator, alice, bob, carol, outsider } = f;
    await federation.connect(alice).advertiseKeys(1n, 1n, KEY("e"), KEY("m"));
    await expect(federation.connect(alice).advertiseKeys(1n, 1n, KEY("e"), KEY("m")))
      .to.be.revertedWithCustomError(federation, "FederationAlreadyDone")
      .withArgs(1n, 1n, 1n, Phase.Keys);
    await expect(federation.connect(outsider).advertiseKeys(1n, 1n, KEY("e"), KEY("m")))
      .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
      .withArgs(outsider.address, 0n, 0n);
    await expect(
      federation.connect(bob).advertiseKeys(1n, 1n, ethers.ZeroHash, KEY("m")),
    ).to.be.revertedWithCustomError(federation, "FederationZeroKey");
    await expect(federation.connect(bob).submitUpdate(1n, 1n, "bafkreim", SHA("m"), 1n, SHA("x")))
      .to.be.revertedWithCustomError(federation, "FederationWrongPhase")
      .withArgs(1n, 1n, Phase.Masked, Phase.Keys);
    await federation.connect(bob).advertiseKeys(1n, 1n, KEY("e"), KEY("m"));
    await federation.connect(aggregator).advancePhase(1n, 1n);
    // carol advertised no keys: she cannot deal, and so cannot submit
    await expect(federation.connect(carol).dealShares(1n, 1n, "bafkreis", SHA("s")))
      .to.be.revertedWithCustomError(federation, "FederationNotParticipant")
      .withArgs(1n, 1n, 3n, Phase.Keys);
    await federation.connect(alice).dealShares(1n, 1n, "bafkreis", SHA("s"));
    await federation.connect(bob).dealShares(1n, 1n, "bafkreis", SHA("s"));
    await federation.connect(aggregator).advancePhase(1n, 1n);
    await expect(federation.connect(carol).submitUpdate(1n, 1n, "bafkreim", SHA("m"), 1n, SHA("x")))
      .to.be.revertedWithCustomError(federation, "FederationNotParticipant")
      .withArgs(1n, 1n, 3n, Phase.Shares);
    await federation.connect(alice).submitUpdate(1n, 1n, "bafkreim", SHA("m"), 1n, SHA("x"));
    // one survivor is below the minimum of 2 contributors
    await expect(federation.connect(aggregator).advancePhase(1n, 1n))
      .to.be.revertedWithCustomError(federation, "FederationPhaseShort")
      .withArgs(1n, 1n, Phase.Masked, 1n, 2n);
    await expect(federation.connect(alice).revealShares(1n, 1n, "bafkreir", SHA("r")))
      .to.be.revertedWithCustomError(federation, "FederationWrongPhase")
      .withArgs(1n, 1n, Phase.Reveal, Phase.Masked);
    await expect(federation.connect(outsider).advancePhase(1n, 1n))
      .to.be.revertedWithCustomError(federation, "FederationNotAggregator")
      .withArgs(1n, outsider.address);
  });

  it("refuses keys and shares after the round's deadline", async function () {
    const f = await networkHelpers.loadFixture(deploy);
    const { federation, aggregator, alice, bob, carol } = f;
    for (const s of [alice, bob]) await federation.connect(s).advertiseKeys(1n, 1n, KEY("e"), KEY("m"));
    const { roundDeadline } = await federation.task(1n);
    await networkHelpers.time.increaseTo(roundDeadline + 1n);
    await expect(federation.connect(carol).advertiseKeys(1n, 1n, KEY("e"), KEY("m")))
      .to.be.revertedWithCustomError(federation, "FederationDeadlinePassed")
      .withArgs(1n, 1n, roundDeadline);
    await federation.connect(aggregator).advancePhase(1n, 1n);
    await expect(federation.connect(alice).dealShares(1n, 1n, "bafkreis", SHA("s")))
      .to.be.revertedWithCustomError(federation, "FederationDeadlinePassed")
      .withArgs(1n, 1n, roundDeadline);
  });

  it("finalizes only in phase Reveal, with threshold reveals (late too), over just the survivors", async function () {
    const f = await networkHelpers.loadFixture(deploy);
    const { federation, aggregator, alice, bob, carol } = f;
    const fin = (ids: bigint[], w: bigint[]) =>
      federation
        .connect(aggregator)
        .finalizeRound(1n, 1n, "bafkreiglobal", SHA("g"), ids, w, ethers.encodeBytes32String("fedavg"));
    await expect(fin([1n, 2n], [E18 / 2n, E18 / 2n]))
      .to.be.revertedWithCustomError(federation, "FederationWrongPhase")
      .withArgs(1n, 1n, Phase.Reveal, Phase.Keys);
    await toReveal(f, [alice, bob, carol]);
    // reveals come after the submission deadline
    await networkHelpers.time.increaseTo((await federation.task(1n)).roundDeadline + 1n);
    await federation.connect(alice).revealShares(1n, 1n, "bafkreir", SHA("r"));
    await expect(fin([1n, 2n, 3n], [E18 / 2n, E18 / 4n, E18 / 4n]))
      .to.be.revertedWithCustomError(federation, "FederationPhaseShort")
      .withArgs(1n, 1n, Phase.Reveal, 1n, 2n);
    await federation.connect(bob).revealShares(1n, 1n, "bafkreir", SHA("r"));
    // leaving a survivor out would unmask nothing: refused
    await expect(fin([1n, 2n], [E18 / 2n, E18 / 2n]))
      .to.be.revertedWithCustomError(federation, "FederationNotSurvivors")
      .withArgs(1n, 1n, 2n, 3n);
    await expect(fin([1n, 2n, 3n], [E18 / 2n, E18 / 4n, E18 / 4n])).to.emit(federation, "RoundFinalized");
    // round 2 starts again from phase Keys
    expect((await federation.secureRound(1n, 2n)).phase).to.equal(Phase.Keys);
    await expect(federation.connect(carol).revealShares(1n, 1n, "bafkreir", SHA("r")))
      .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
      .withArgs(1n, 1n);
  });

  it("refuses secure steps on an open task, reveals from non-submitters, unavailability claims", async function () {
    const f = await networkHelpers.loadFixture(deploy);
    const { federation, aggregator, alice, carol } = f;
    await federation.connect(aggregator).openFirstRound(2n, "bafkreiinit", SHA("init"));
    await expect(federation.connect(alice).advertiseKeys(2n, 1n, KEY("e"), KEY("m")))
      .to.be.revertedWithCustomError(federation, "FederationWrongPrivacy")
      .withArgs(2n, 0n);
    await expect(federation.connect(aggregator).advancePhase(2n, 1n))
      .to.be.revertedWithCustomError(federation, "FederationWrongPrivacy")
      .withArgs(2n, 0n);
    await toReveal(f, [f.alice, f.bob]);
    await expect(federation.connect(carol).revealShares(1n, 1n, "bafkreir", SHA("r")))
      .to.be.revertedWithCustomError(federation, "FederationNotParticipant")
      .withArgs(1n, 1n, 3n, Phase.Masked);
    // a secure round has its own dropouts: an open task's declaration of unavailable updates is refused on it
    await expect(federation.connect(aggregator).declareUnavailable(1n, 1n, [1n]))
      .to.be.revertedWithCustomError(federation, "FederationWrongPrivacy")
      .withArgs(1n, 1n);
  });
});
