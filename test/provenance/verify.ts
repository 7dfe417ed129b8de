import { expect } from "chai";
import { network } from "hardhat";
import { parseAdapter, serializeAdapter } from "../../node/model/adapter.js";
import { LoraAdapter } from "../../node/model/lora.js";
import { sha256Hex } from "../../node/digest.js";
import { strategyId } from "../../node/chain/index.js";
import { FedAvg, Krum, unitsToWeights, type Strategy } from "../../node/aggregate/index.js";
import { verifyTask, formatVerifyReport, type ByteSource } from "../../node/provenance/verify.js";
import { LORA, TINY, runAllRounds, tinyFederation } from "../fixtures/tiny-federation.js";

const { ethers } = await network.create();

describe("node/provenance verify (fok verify)", function () {
  this.timeout(300_000);
  const setup = async (options: { maxRounds?: number; strategy?: string; minUpdates?: number } = {}) =>
    tinyFederation(await ethers.getSigners(), options);

  async function honestRun() {
    const s = await setup();
    await runAllRounds(s);
    return s;
  }
  const failures = (r: Awaited<ReturnType<typeof verifyTask>>) =>
    r.checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check]);

  it("passes on an honest run, with contribution figures for every contributor", async function () {
    const s = await honestRun();
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([]);
    expect(report.ok).to.equal(true);
    // base and LoRA config, and per round: start digest + lineage, 3 × (identity, example cap, digest, metrics,
    // update norm), strategy, 3 contributors, contributor set, global, weights, aggregate
    expect(report.checks.length).to.equal(2 + 2 * (2 + 3 * 5 + 1 + 3 + 1 + 3));
    expect(report.contributions.map((c) => [c.round, c.identity, c.weightShare])).to.deep.equal([
      [1, 1, 0.166666],
      [1, 2, 0.333333],
      [1, 3, 0.5],
      [2, 1, 0.166666],
      [2, 2, 0.333333],
      [2, 3, 0.5],
    ]);
    for (const c of report.contributions) expect(c.cosineToAggregate).to.be.within(-1, 1);
    // with held-out data: each contributor's leave-one-out effect, from a loss we can check by hand here
    const heldOut = {
      loss: async (w: Map<string, { A: Float32Array; B: Float32Array }>) =>
        [...w.values()].reduce((acc, x) => acc + x.B.reduce((a, b) => a + b * b, 0), 0),
    };
    const withLoo = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA, round: 2, heldOut });
    const r2 = (await s.ledger.readTaskHistory(s.task)).rounds[1]!;
    const ups = [];
    for (const sub of r2.submissions)
      ups.push({
        identity: sub.identity,
        numExamples: sub.numExamples,
        weights: parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights,
      });
    const full = await heldOut.loss(new FedAvg().aggregate(ups).weights);
    const without1 = await heldOut.loss(new FedAvg().aggregate(ups.slice(1)).weights);
    expect(withLoo.contributions.map((c) => c.round)).to.deep.equal([2, 2, 2]);
    expect(withLoo.contributions[0]!.leaveOneOutDelta).to.equal(full - without1);
    expect(formatVerifyReport(report).split("\n").at(-1)).to.equal(
      `VERIFIED: task 1, ${report.checks.length} checks passed`,
    );
    await s.store.close();
  });

  it("fails naming round 2, identity 2 and the digest check when that update's bytes change", async function () {
    const s = await honestRun();
    const h = await s.ledger.readTaskHistory(s.task);
    const target = h.rounds[1]!.submissions.find((x) => x.identity === 2)!.cid;
    const lying: ByteSource = {
      get: async (cid) => {
        const b = Buffer.from(await s.store.get(cid));
        if (cid === target) b[b.length - 1] ^= 1;
        return b;
      },
    };
    const report = await verifyTask(s.ledger, lying, s.task, { model: TINY, lora: LORA });
    expect(report.ok).to.equal(false);
    expect(failures(report)).to.deep.equal([
      [2, 2, "update digest"],
      [2, null, "contributor set"],
      [2, null, "aggregate"],
    ]);
    await s.store.close();
  });

  for (const [what, tamper] of [
    ["a contributor's weight dropped", (w: Map<string, { A: Float32Array; B: Float32Array }>) => w],
    [
      "noise added",
      (w: Map<string, { A: Float32Array; B: Float32Array }>) =>
        new Map([...w].map(([m, x]) => [m, { A: x.A.map((v) => v + 1e-3), B: x.B }])),
    ],
  ] as const) {
    it(`fails naming round 1 and the aggregate check when the global is not it (${what})`, async function () {
      const s = await setup({ maxRounds: 1 });
      await s.aggregator.openFirstRound();
      await Promise.all(s.clients.map((c) => c.participate(1)));
      const h = await s.ledger.readTaskHistory(s.task);
      const updates = [];
      for (const sub of h.rounds[0]!.submissions)
        updates.push({
          identity: sub.identity,
          numExamples: sub.numExamples,
          weights: parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights,
        });
      // identity 3's update silently left out
      const used = what.startsWith("a contributor") ? updates.slice(0, 2) : updates;
      const bytes = serializeAdapter(TINY, LORA, tamper(new FedAvg().aggregate(used).weights), {
        kind: "global",
        task: s.task,
        round: 1,
        baseModelSha256: s.baseSha,
        strategy: "fedavg",
      });
      const cid = await s.store.add(bytes);
      // ...but publishes all three identities with FedAvg's weights
      await s.ledger
        .connect(s.signers[1]!)
        .finalizeRound(s.task, 1, cid, sha256Hex(bytes), [1, 2, 3], unitsToWeights([10, 20, 30]), "fedavg");
      const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
      expect(failures(report)).to.deep.equal([[1, null, "aggregate"]]);
      await s.store.close();
    });
  }

  it("fails naming the round and identity when a listed contributor did not submit", async function () {
    const s = await honestRun();
    // the contract refuses such a finalize (FederationNotSubmitter); a forged history must still be caught
    const real = await s.ledger.readTaskHistory(s.task);
    const forged = structuredClone(real);
    forged.rounds[1]!.submissions = forged.rounds[1]!.submissions.filter((x) => x.identity !== 3);
    s.ledger.readTaskHistory = async () => forged;
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([
      [2, 3, "contributor submitted"],
      [2, null, "contributor set"],
      [2, null, "aggregate"],
    ]);
    await s.store.close();
  });

  /** Round 1 finalized by hand with `contributors` and the honest `strategy` aggregate of exactly their updates. */
  async function finalizeWith(s: Awaited<ReturnType<typeof setup>>, strategy: Strategy, contributors: number[]) {
    const h = await s.ledger.readTaskHistory(s.task);
    const updates = [];
    for (const sub of h.rounds[0]!.submissions) {
      if (!contributors.includes(sub.identity)) continue;
      const weights = parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights;
      updates.push({ identity: sub.identity, numExamples: sub.numExamples, weights });
    }
    const result = strategy.replay(updates, { scale: LORA.alpha / LORA.r, r: LORA.r });
    const meta = { kind: "global" as const, task: s.task, round: 1, baseModelSha256: s.baseSha, strategy: strategy.id };
    const bytes = serializeAdapter(TINY, LORA, result.weights, meta);
    const cid = await s.store.add(bytes);
    const asAggregator = s.ledger.connect(s.signers[1]!);
    const weights = unitsToWeights(result.units);
    await asAggregator.finalizeRound(s.task, 1, cid, sha256Hex(bytes), contributors, weights, strategy.id);
  }

  it("fails the contributor-set check when the aggregator leaves out a valid submitter", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    await Promise.all(s.clients.map((c) => c.participate(1)));
    await finalizeWith(s, new FedAvg(), [1, 2]); // identity 3 submitted a valid update and is silently dropped
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([[1, null, "contributor set"]]);
    expect(report.checks.find((c) => c.check === "contributor set")!.detail).to.equal(
      "valid updates [1, 2, 3]: fedavg picks [1, 2, 3], the round lists [1, 2]",
    );
    await s.store.close();
  });

  it("fails the contributor-set check when a Krum round lists an update Krum did not select", async function () {
    const s = await setup({ maxRounds: 1, strategy: "krum", minUpdates: 1 });
    await s.aggregator.openFirstRound();
    await Promise.all(s.clients.map((c) => c.participate(1)));
    const h = await s.ledger.readTaskHistory(s.task);
    const updates = [];
    for (const sub of h.rounds[0]!.submissions) {
      const weights = parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights;
      updates.push({ identity: sub.identity, numExamples: sub.numExamples, weights });
    }
    const krum = new Krum(undefined, 1);
    const chosen = krum.aggregate(updates).contributors;
    const other = [1, 2, 3].find((id) => !chosen.includes(id))!;
    await finalizeWith(s, krum, [other]);
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([[1, null, "contributor set"]]);
    expect(report.checks.find((c) => c.check === "contributor set")!.detail).to.equal(
      `valid updates [1, 2, 3]: krum picks [${chosen.join(", ")}], the round lists [${other}]`,
    );
    await s.store.close();
  });

  it("passes a Krum round whose contributor is Krum's own selection", async function () {
    const s = await setup({ maxRounds: 1, strategy: "krum", minUpdates: 1 });
    await s.aggregator.openFirstRound();
    await Promise.all(s.clients.map((c) => c.participate(1)));
    await s.aggregator.finalize(1);
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([]);
    await s.store.close();
  });

  it("fails naming the round and the strategy check when a round is labelled with another strategy", async function () {
    const s = await honestRun();
    // the contract refuses such a finalize (FederationWrongStrategy); a forged history must still be caught
    const forged = structuredClone(await s.ledger.readTaskHistory(s.task));
    forged.rounds[0]!.finalized!.strategyId = strategyId("krum");
    s.ledger.readTaskHistory = async () => forged;
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([[1, null, "strategy"]]);
    expect(report.checks.find((c) => c.check === "strategy")!.detail).to.equal(
      "finalized as krum, the task's strategy is fedavg",
    );
    await s.store.close();
  });

  it("fails the aggregate check, naming the strategy, when verify does not know the task's", async function () {
    const s = await honestRun();
    const forged = structuredClone(await s.ledger.readTaskHistory(s.task));
    forged.strategy = "secret-sauce";
    forged.strategyId = strategyId("secret-sauce");
    for (const r of forged.rounds) r.finalized!.strategyId = forged.strategyId;
    s.ledger.readTaskHistory = async () => forged;
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([
      [1, null, "aggregate"],
      [2, null, "aggregate"],
    ]);
    expect(report.checks.find((c) => !c.ok)!.detail).to.equal(
      'cannot re-run the aggregation: unknown strategy "secret-sauce"; choose one of ' +
        "fedavg, fedprox, ffa-lora, exact-svd, median, trimmed-mean, krum, multi-krum",
    );
    await s.store.close();
  });

  it("fails the LoRA config check when verify is given a config other than the task's", async function () {
    const s = await honestRun();
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: { ...LORA, alpha: 8 } });
    expect(failures(report)[0]).to.deep.equal([null, null, "LoRA config"]);
    expect(report.ok).to.equal(false);
    await s.store.close();
  });

  it("fails naming the identity and the example-cap check when a claim is above the task's cap", async function () {
    const s = await honestRun();
    // the contract refuses such a claim (FederationTooManyExamples); a forged history must still be caught
    const forged = structuredClone(await s.ledger.readTaskHistory(s.task));
    forged.rounds[1]!.submissions[2]!.numExamples = forged.maxExamples + 1;
    s.ledger.readTaskHistory = async () => forged;
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([
      [2, 3, "example cap"],
      [2, null, "weights"],
      [2, null, "aggregate"],
    ]);
    expect(report.checks.find((c) => !c.ok)!.detail).to.equal("100001 examples claimed, the task's cap is 100000");
    await s.store.close();
  });

  it("fails the lineage check when round 1 does not start from an unchanged initialisation", async function () {
    const s = await setup({ maxRounds: 1 });
    const a = LoraAdapter.init(TINY, LORA, 1);
    const w = await a.exportWeights();
    a.dispose();
    for (const x of w.values()) x.B.fill(0.01); // a start that already changes the model
    const bytes = serializeAdapter(TINY, LORA, w, {
      kind: "init",
      task: s.task,
      round: 0,
      baseModelSha256: s.baseSha,
    });
    await s.ledger.connect(s.signers[1]!).openFirstRound(s.task, await s.store.add(bytes), sha256Hex(bytes));
    await Promise.all(s.clients.map((c) => c.participate(1)));
    await s.aggregator.finalize(1);
    const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(failures(report)).to.deep.equal([[1, null, "lineage"]]);
    expect(report.checks.find((c) => c.check === "lineage")!.detail).to.match(/B all zero: false/);
    await s.store.close();
  });
});
