/**
 * Federation.sol's differential privacy: a DP task's settings fixed at creation (with the placement its privacy
 * mode allows), rounds finalized only through finalizeDpRound, which records the ε spent (never decreasing, never
 * over the budget) and demands uniform weights.
 */
import { expect } from "chai";
import { network } from "hardhat";

const { ethers, networkHelpers } = await network.create();

const SHA = (s: string) => ethers.sha256(ethers.toUtf8Bytes(s));
const E18 = 10n ** 18n;
const FEDAVG = ethers.encodeBytes32String("fedavg");
const Placement = { None: 0, Central: 1, Distributed: 2 };

function config(aggregator: string, minUpdates = 2) {
  return {
    baseModelCid: "bafkreibase",
    baseModelSha256: SHA("base"),
    loraConfigHash: ethers.id("lora"),
    aggregator,
    strategyId: FEDAVG,
    minUpdates,
    roundDuration: 3600n,
    maxRounds: 3n,
    maxExamples: 10_000n,
    maxUpdateNorm: 1_000_000n,
  };
}

/** σ 1.1, δ 1e-5, ε_max 5. */
const DP = { noiseMultiplier: 1_100_000n, delta: 10n ** 13n, epsilonMax: 5_000_000n, placement: Placement.Central };

async function deploy() {
  const [admin, aggregator, alice, bob, carol] = await ethers.getSigners();
  const identity = await ethers.deployContract("LLMIdentity", [admin.address]);
  const federation = await ethers.deployContract("Federation", [await identity.getAddress(), admin.address]);
  for (const [i, s] of [alice, bob, carol].entries())
    await identity.register(s.address, ethers.id(`hospital ${i}`), ethers.id("fp"), `bafkreimeta${i}`);
  await federation.createDpTask(config(aggregator.address), 0, DP); // task 1: open, central noise
  await federation.createTask(config(aggregator.address)); // task 2: no DP
  for (const task of [1n, 2n]) {
    await federation.connect(aggregator).openFirstRound(task, "bafkreiinit", SHA("init"));
    for (const s of [alice, bob, carol])
      await federation.connect(s).submitUpdate(task, 1n, `bafkrei${s.address}`, SHA(s.address), 10n, SHA("m"));
  }
  return { federation, admin, aggregator, alice, bob, carol };
}

const THIRD = E18 / 3n;
const UNIFORM = [THIRD + 1n, THIRD, THIRD];

describe("Federation differential privacy", function () {
  it("creates a DP task with its settings fixed, emits TaskDp, and refuses settings out of range", async function () {
    const { federation, aggregator } = await networkHelpers.loadFixture(deploy);
    const [cfg, spent] = await federation.dpConfig(1n);
    expect([...cfg]).to.deep.equal([1_100_000n, 10n ** 13n, 5_000_000n, 1n]);
    expect(spent).to.equal(0n);
    expect([...(await federation.dpConfig(2n))[0]]).to.deep.equal([0n, 0n, 0n, 0n]);
    const distributed = { ...DP, placement: Placement.Distributed };
    await expect(federation.createDpTask(config(aggregator.address), 2, distributed))
      .to.emit(federation, "TaskDp")
      .withArgs(3n, 1_100_000n, 10n ** 13n, 5_000_000n, 2n)
      .and.to.emit(federation, "TaskPrivacy")
      .withArgs(3n, 1n, 2n);
    const bad = [
      { ...DP, noiseMultiplier: 0n },
      { ...DP, delta: 0n },
      { ...DP, delta: E18 },
      { ...DP, epsilonMax: 0n },
      { ...DP, placement: Placement.None },
    ];
    for (const dp of bad) {
      await expect(federation.createDpTask(config(aggregator.address), 0, dp))
        .to.be.revertedWithCustomError(federation, "FederationInvalidDpConfig")
        .withArgs(dp.noiseMultiplier, dp.delta, dp.epsilonMax, dp.placement);
    }
    // central noise only in the open mode, distributed only in the secure mode
    await expect(federation.createDpTask(config(aggregator.address), 2, DP))
      .to.be.revertedWithCustomError(federation, "FederationInvalidDpConfig")
      .withArgs(DP.noiseMultiplier, DP.delta, DP.epsilonMax, Placement.Central);
    await expect(federation.createDpTask(config(aggregator.address), 0, distributed))
      .to.be.revertedWithCustomError(federation, "FederationInvalidDpConfig")
      .withArgs(DP.noiseMultiplier, DP.delta, DP.epsilonMax, Placement.Distributed);
  });

  it("finalizes a DP round only with finalizeDpRound, records the ε spent and emits PrivacySpent", async function () {
    const { federation, aggregator } = await networkHelpers.loadFixture(deploy);
    const agg = federation.connect(aggregator);
    await expect(agg.finalizeRound(1n, 1n, "bafkreiglobal", SHA("g"), [1n, 2n, 3n], UNIFORM, FEDAVG))
      .to.be.revertedWithCustomError(federation, "FederationDpMismatch")
      .withArgs(1n, true);
    await expect(agg.finalizeDpRound(2n, 1n, "bafkreiglobal", SHA("g"), [1n, 2n, 3n], UNIFORM, FEDAVG, 1n))
      .to.be.revertedWithCustomError(federation, "FederationDpMismatch")
      .withArgs(2n, false);
    await expect(agg.finalizeDpRound(1n, 1n, "bafkreiglobal", SHA("g"), [1n, 2n, 3n], UNIFORM, FEDAVG, 2_500_000n))
      .to.emit(federation, "RoundFinalized")
      .and.to.emit(federation, "PrivacySpent")
      .withArgs(1n, 1n, 2_500_000n)
      .and.to.emit(federation, "RoundOpened");
    expect((await federation.dpConfig(1n))[1]).to.equal(2_500_000n);
  });

  it("refuses an ε below what was spent or over the budget, and weights that are not uniform", async function () {
    const { federation, aggregator, alice, bob } = await networkHelpers.loadFixture(deploy);
    const agg = federation.connect(aggregator);
    const fin = (weights: bigint[], eps: bigint, round = 1n) =>
      agg.finalizeDpRound(
        1n,
        round,
        "bafkreiglobal",
        SHA("g"),
        [1n, 2n, 3n].slice(0, weights.length),
        weights,
        FEDAVG,
        eps,
      );
    await expect(fin(UNIFORM, 5_000_001n))
      .to.be.revertedWithCustomError(federation, "FederationBudgetExceeded")
      .withArgs(1n, 1n, 5_000_001n, 0n, 5_000_000n);
    // example-weighted (10/20/30) is not what DP's sensitivity analysis assumes
    const weighted = [E18 / 6n + 1n, E18 / 3n, E18 / 2n - 1n];
    await expect(fin(weighted, 1n))
      .to.be.revertedWithCustomError(federation, "FederationWeightsNotUniform")
      .withArgs(0n, weighted[0]!);
    await expect(fin([E18 / 2n, E18 / 2n, 0n], 1n))
      .to.be.revertedWithCustomError(federation, "FederationWeightsNotUniform")
      .withArgs(0n, E18 / 2n);
    await fin(UNIFORM, 3_000_000n);
    for (const s of [alice, bob])
      await federation.connect(s).submitUpdate(1n, 2n, `bafkrei2${s.address}`, SHA(`2${s.address}`), 10n, SHA("m"));
    await expect(fin([E18 / 2n, E18 / 2n], 2_999_999n, 2n))
      .to.be.revertedWithCustomError(federation, "FederationBudgetExceeded")
      .withArgs(1n, 2n, 2_999_999n, 3_000_000n, 5_000_000n);
    await expect(fin([E18 / 2n, E18 / 2n], 5_000_000n, 2n))
      .to.emit(federation, "PrivacySpent")
      .withArgs(1n, 2n, 5_000_000n);
  });
});
