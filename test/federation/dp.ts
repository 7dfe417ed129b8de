/**
 * Differentially private rounds end to end on the in-process chain: central noise in the open mode (every pinned
 * update clipped to C, the global adapter the uniform average plus noise of the declared size, the ε spent recorded
 * per round and recomputed by verify), distributed noise in the secure mode, a clipping violation named by verify,
 * and a round beyond the budget refused by the aggregator and the clients before anything is sent.
 */
import { expect } from "chai";
import { network } from "hardhat";
import { epsilonUnits, type DpParams } from "../../node/chain/index.js";
import { averageWeights, unitsToWeights, updateNorm, type ClientUpdate } from "../../node/aggregate/index.js";
import { parseAdapter, type LoraWeights } from "../../node/model/adapter.js";
import { checkTaskParams, loraConfigHash } from "../../node/federation/task-config.js";
import { checkNoise } from "../../node/dp/noise.js";
import { DpConfigError, epsilonAfter, fmtEpsilon, PrivacyBudgetError } from "../../node/dp/privacy.js";
import { printTask } from "../../node/cli/inspect.js";
import { dashboardState } from "../../node/dashboard/server.js";
import { Verdicts } from "../../node/dashboard/verdicts.js";
import { verifyTask } from "../../node/provenance/verify.js";
import {
  LORA,
  TINY,
  capturePlaintext,
  runAllRounds,
  tinyFederation,
  type TinyFederation,
} from "../fixtures/tiny-federation.js";

const { ethers } = await network.create();

const C = 0.05;
const DP: DpParams = { noiseMultiplier: 1, delta: 1e-5, epsilonMax: 10 };

const weightsOf = async (s: TinyFederation, cid: string) => parseAdapter(await s.store.get(cid), TINY, LORA).weights;

/** The uniform average of the pinned updates of `ids` in round `round` (index into the history). */
async function plainMean(s: TinyFederation, round: number, ids: number[]): Promise<LoraWeights> {
  const r = (await s.ledger.readTaskHistory(s.task)).rounds[round - 1]!;
  const updates: ClientUpdate[] = [];
  for (const id of ids) {
    const sub = r.submissions.find((x) => x.identity === id)!;
    updates.push({ identity: id, numExamples: 1, weights: await weightsOf(s, sub.cid) });
  }
  return averageWeights(
    updates,
    ids.map(() => 1 / ids.length),
  );
}

const failures = (checks: { ok: boolean; round: number | null; identity: number | null; check: string }[]) =>
  checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check]);

describe("differentially private rounds end to end", function () {
  this.timeout(300_000);

  it("central noise: clipped updates, uniform weights, noise of σC/n, ε recorded per round", async function () {
    const s = await tinyFederation(await ethers.getSigners(), { maxUpdateNorm: C, dp: DP });
    await runAllRounds(s, 2);
    const h = await s.ledger.readTaskHistory(s.task);
    expect(h.dpConfig).to.deep.equal({ ...DP, placement: "central" });
    for (const [k, r] of h.rounds.entries()) {
      const start = await weightsOf(s, r.startCid);
      // every hospital's update, as pinned, is within the clipping norm
      for (const sub of r.submissions) expect(updateNorm(await weightsOf(s, sub.cid), start)).to.be.at.most(C + 1e-6);
      const fin = r.finalized!;
      expect(fin.contributors).to.deep.equal([1, 2, 3]);
      expect(fin.weights).to.deep.equal(unitsToWeights([1, 1, 1])); // not 10/20/30: uniform under DP
      expect(fin.epsilon).to.equal(Number(epsilonUnits(epsilonAfter(DP, k + 1))) / 1e6);
      const noise = checkNoise(await weightsOf(s, fin.globalCid), await plainMean(s, k + 1, [1, 2, 3]), C / 3, false);
      expect(noise.problem).to.equal(null);
      expect(noise.rms).to.be.within((C / 3) * 0.6, (C / 3) * 1.4);
    }
    expect(h.rounds[1]!.finalized!.epsilon).to.be.above(h.rounds[0]!.finalized!.epsilon!);
    expect((await s.ledger.dp(s.task))!.spent).to.equal(h.rounds[1]!.finalized!.epsilon);
    const v = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(v.checks)).to.deep.equal([]);
    // fok inspect and the dashboard show the settings, the ε recorded per round and each identity's own
    const eps = (k: number) => fmtEpsilon(h.rounds[k - 1]!.finalized!.epsilon!);
    const printed: string[] = [];
    printTask(h, { out: (l) => printed.push(l) });
    expect(printed.slice(2, 5)).to.deep.equal([
      "  privacy: open (updates published in the clear)",
      `  client-level DP (central noise, added by the aggregator): σ 1 × clip ${C}, δ 0.00001; ` +
        `ε spent ${eps(2)} of 10 after 2 finalized rounds`,
      `  ε per identity (rounds contributed): 1: ${eps(2)} (2), 2: ${eps(2)} (2), 3: ${eps(2)} (2)`,
    ]);
    expect(printed.filter((l) => l.startsWith("    → global")).map((l) => l.split("; ")[1])).to.deep.equal([
      `ε spent ${eps(1)}`,
      `ε spent ${eps(2)}`,
    ]);
    const state = await dashboardState(s.ledger, s.store, new Verdicts(s.ledger, s.store));
    const t = state.tasks[0]!;
    expect([t.dp!.placement, t.dp!.spent, t.verdict.ok]).to.deep.equal([
      "central",
      h.rounds[1]!.finalized!.epsilon,
      true,
    ]);
    expect(t.rounds.map((r) => r.finalized!.epsilon)).to.deep.equal(h.rounds.map((r) => r.finalized!.epsilon));
    expect(t.dp!.identities.map((x) => [x.identity, x.rounds])).to.deep.equal([
      [1, 2],
      [2, 2],
      [3, 2],
    ]);
    const named = (check: string) => v.checks.filter((c) => c.check === check).map((c) => c.round);
    expect([named("privacy spent"), named("dp noise")]).to.deep.equal([
      [1, 2],
      [1, 2],
    ]);
    await s.close();
  });

  it("verify fails a round without noise or with ε under-reported, and names who did not clip", async function () {
    const s = await tinyFederation(await ethers.getSigners(), { maxUpdateNorm: C / 10, dp: DP, maxRounds: 1 });
    // hospital 2 trains without clipping; the aggregator adds no noise
    const train = s.trainers[1]!.trainRound.bind(s.trainers[1]);
    s.trainers[1]!.trainRound = (job) => train({ ...job, maxUpdateNorm: 1e9 });
    const aggregator = s.aggregator as unknown as {
      normals: (n: number) => Float64Array;
      o: { ledger: TinyFederation["ledger"] };
    };
    aggregator.normals = (n) => new Float64Array(n);
    // and records half the ε the round spent (the contract cannot compute ε; verify does)
    const ledger = aggregator.o.ledger;
    const finalize = ledger.finalizeRound.bind(ledger);
    ledger.finalizeRound = (task, round, cid, sha, ids, weights, strategy, eps) =>
      finalize(task, round, cid, sha, ids, weights, strategy, eps! / 2);
    await runAllRounds(s, 1);
    const r = (await s.ledger.readTaskHistory(s.task)).rounds[0]!;
    expect(r.finalized!.contributors).to.deep.equal([1, 3]); // the unclipped update left out
    const v = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(v.checks)).to.deep.equal([
      [1, null, "privacy spent"],
      [1, 2, "update norm"],
      [1, null, "dp noise"],
    ]);
    const detail = (check: string) => v.checks.find((c) => c.check === check && !c.ok)!.detail;
    expect(detail("update norm")).to.match(/^‖update − start‖ = \d+\.\d{6}, the task's bound is 0\.005$/);
    expect(detail("dp noise")).to.match(/^the noise has rms 0\.0000e\+0 where σC\/n is 2\.5000e-3 \(±/);
    const eps = epsilonAfter(DP, 1);
    expect(detail("privacy spent")).to.equal(
      `recorded ε ${(Number(epsilonUnits(eps / 2)) / 1e6).toFixed(3)} of the budget 10; ` +
        `1 finalized rounds at σ 1, δ 0.00001 spend ε ${eps.toFixed(3)}`,
    );
    await s.close();
  });

  it("refuses a round beyond ε_max: the aggregator and every client, before anything is submitted", async function () {
    const budget = { ...DP, epsilonMax: (epsilonAfter(DP, 2) + epsilonAfter(DP, 3)) / 2 };
    const s = await tinyFederation(await ethers.getSigners(), {
      maxUpdateNorm: C,
      dp: budget,
      maxRounds: 3,
      unchecked: true,
    });
    const params = {
      ...(await s.ledger.readTaskHistory(s.task)),
      loraConfigHash: loraConfigHash(LORA),
      dp: budget,
    };
    expect(() => checkTaskParams(params)).to.throw(
      DpConfigError,
      /^3 rounds at noise multiplier 1 spend ε .* 2 rounds fit/,
    );
    await runAllRounds(s, 2);
    const refused = (e: unknown) => {
      expect(e).to.be.instanceOf(PrivacyBudgetError);
      const b = e as PrivacyBudgetError;
      expect([b.task, b.round, b.epsilonMax]).to.deep.equal([s.task, 3, Number(budget.epsilonMax.toFixed(6))]);
      expect(b.epsilon).to.equal(epsilonAfter(DP, 3));
      return "refused";
    };
    expect(await s.aggregator.finalize(3).catch(refused)).to.equal("refused");
    expect(await Promise.all(s.clients.map((c) => c.participate(3).catch(refused)))).to.deep.equal([
      "refused",
      "refused",
      "refused",
    ]);
    expect((await s.ledger.readRound(s.task, 3))!.submissions).to.deep.equal([]);
    const v = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(v.checks)).to.deep.equal([]);
    await s.close();
  });

  it("distributed noise in secure mode: uniform weights, the sum carries σC, bytes re-derived", async function () {
    const s = await tinyFederation(await ethers.getSigners(), {
      maxUpdateNorm: C,
      dp: DP,
      privacy: "secure",
      threshold: 2,
      minUpdates: 3,
      maxRounds: 1,
    });
    const plain = capturePlaintext(s);
    await s.aggregator.openFirstRound();
    const [report, ...outcomes] = await Promise.all([
      s.aggregator.finalize(1),
      ...s.clients.map((c) => c.participate(1)),
    ]);
    expect(outcomes).to.deep.equal(["revealed", "revealed", "revealed"]);
    expect(report!.weights).to.deep.equal(unitsToWeights([1, 1, 1]));
    const h = await s.ledger.readTaskHistory(s.task);
    expect(h.dpConfig!.placement).to.equal("distributed");
    expect(h.rounds[0]!.finalized!.epsilon).to.equal(Number(epsilonUnits(epsilonAfter(DP, 1))) / 1e6);
    // each client added N(0, (σC)²/3): the average of 3 carries σC/3 per value
    const mean = averageWeights(
      [1, 2, 3].map((id) => ({
        identity: id,
        numExamples: 1,
        weights: parseAdapter(plain.get(id)!, TINY, LORA).weights,
      })),
      [1 / 3, 1 / 3, 1 / 3],
    );
    const noise = checkNoise(await weightsOf(s, h.rounds[0]!.finalized!.globalCid), mean, C / 3, false);
    expect(noise.problem).to.equal(null);
    const v = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(v.checks)).to.deep.equal([]);
    expect(v.checks.filter((c) => c.check === "secure aggregate").map((c) => c.ok)).to.deep.equal([true]);
    await s.store.close();
  });
});
