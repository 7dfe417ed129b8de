import { expect } from "chai";
import { rejection } from "../../node/testing/rejection.js";
import { network } from "hardhat";
import { parseAdapter, serializeAdapter } from "../../node/model/adapter.js";
import { sha256Hex } from "../../node/digest.js";
import { FederationClient, ClientIdentityError } from "../../node/federation/client.js";
import { Aggregator } from "../../node/federation/aggregator.js";
import type { RoundTrainer } from "../../node/federation/trainer-pool.js";
import { FedAvg, unitsToWeights } from "../../node/aggregate/index.js";
import { LORA, TINY, TRAIN, tinyFederation } from "../fixtures/tiny-federation.js";
import { formatVerifyReport, verifyTask, type VerifyReport } from "../../node/provenance/verify.js";
import { createStore } from "../../node/store/index.js";
import type { FederationLedger } from "../../node/chain/index.js";

const { ethers, networkHelpers } = await network.create();

describe("federation end to end (tiny model, in-process chain, embedded store)", function () {
  this.timeout(300_000);
  const setup = async (options: Parameters<typeof tinyFederation>[1] = {}) =>
    tinyFederation(await ethers.getSigners(), options);
  /** What every extra aggregator of the task is built with. */
  const aggregatorOptions = (s: Awaited<ReturnType<typeof setup>>, ledger = s.ledger.connect(s.signers[1]!)) => ({
    ledger,
    store: s.store,
    task: s.task,
    model: TINY,
    lora: LORA,
    baseModelSha256: s.baseSha,
    pollMs: 50,
  });
  /** Another aggregator of the task (a restart, or one that finalizes once `expectedUpdates` are in). */
  const aggregatorExpecting = (
    s: Awaited<ReturnType<typeof setup>>,
    expectedUpdates: number,
    ledger?: FederationLedger,
  ) => new Aggregator({ ...aggregatorOptions(s, ledger), expectedUpdates });

  /** Hospital 3's client options (identity 3, account 4). */
  const hospital3Options = (s: Awaited<ReturnType<typeof setup>>) => ({
    ledger: s.ledger.connect(s.signers[4]!),
    signer: s.signers[4]!,
    store: s.store,
    task: s.task,
    train: TRAIN,
    pollMs: 50,
  });
  /** Hospital 3's client with another trainer: one that cheats. */
  const hospital3With = (s: Awaited<ReturnType<typeof setup>>, trainer: RoundTrainer) =>
    new FederationClient({ ...hospital3Options(s), trainer });

  it("3 clients × 2 rounds: every commitment on-chain, every CID verified, global = FedAvg", async function () {
    const s = await setup();
    await s.aggregator.openFirstRound();
    for (const round of [1, 2]) {
      expect(await Promise.all(s.clients.map((c) => c.participate(round)))).to.deep.equal([
        "submitted",
        "submitted",
        "submitted",
      ]);
      const report = await s.aggregator.finalize(round);
      expect(report!.contributors).to.deep.equal([1, 2, 3]);
      expect(report!.excluded).to.deep.equal([]);
    }
    const h = await s.ledger.readTaskHistory(s.task);
    expect(h.completed).to.equal(true);
    expect(h.rounds.map((r) => r.submissions.map((x) => x.identity))).to.deep.equal([
      [1, 2, 3],
      [1, 2, 3],
    ]);
    for (const r of h.rounds) {
      for (const sub of r.submissions) {
        const bytes = await s.store.get(sub.cid, { expectedSha256: sub.adapterSha256 });
        const parsed = parseAdapter(bytes, TINY, LORA);
        expect([parsed.metadata.task, parsed.metadata.round, parsed.metadata.identity]).to.deep.equal([
          s.task,
          r.round,
          sub.identity,
        ]);
        expect(sha256Hex(Buffer.from(parsed.metadata.metrics!))).to.equal(sub.metricsDigest);
      }
      const g = r.finalized!;
      await s.store.get(g.globalCid, { expectedSha256: g.globalSha256 });
    }
    // round 2 starts from round 1's global adapter
    expect(h.rounds[1]!.startCid).to.equal(h.rounds[0]!.finalized!.globalCid);
    // recompute round 2's aggregation from the chain and the bytes alone
    const r2 = h.rounds[1]!;
    const updates = [];
    for (const sub of r2.submissions) {
      updates.push({
        identity: sub.identity,
        numExamples: sub.numExamples,
        weights: parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights,
      });
    }
    const result = new FedAvg().aggregate(updates);
    const expected = serializeAdapter(TINY, LORA, result.weights, {
      kind: "global",
      task: s.task,
      round: 2,
      baseModelSha256: s.baseSha,
      strategy: "fedavg",
    });
    expect(sha256Hex(expected)).to.equal(r2.finalized!.globalSha256);
    expect(r2.finalized!.weights).to.deep.equal(unitsToWeights([10, 20, 30]));
    await s.store.close();
  });

  it("an aggregator killed after fetching the updates and restarted finalizes exactly once", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    await Promise.all(s.clients.map((c) => c.participate(1)));
    // first aggregator dies between fetching + aggregating and finalizing
    const crashing = s.ledger.connect(s.signers[1]!);
    crashing.finalizeRound = async () => {
      throw new Error("killed");
    };
    const first = aggregatorExpecting(s, 3, crashing);
    expect((await rejection(first.finalize(1))).message).to.equal("killed");
    const restarted = aggregatorExpecting(s, 3);
    const report = await restarted.finalize(1);
    expect(report!.contributors).to.deep.equal([1, 2, 3]);
    expect(await restarted.finalize(1)).to.equal(null); // a second restart finds it finalized
    expect((await s.ledger.finalizations(s.task, 1)).length).to.equal(1);
    await s.store.close();
  });

  it("a client restarted mid-round submits its pinned adapter once, without training again", async function () {
    const dir = (await import("node:fs/promises")).mkdtemp(
      (await import("node:path")).join((await import("node:os")).tmpdir(), "fok-client-"),
    );
    const stateDir = await dir;
    const s = await setup({ stateDirs: [stateDir], maxRounds: 1 });
    await s.aggregator.openFirstRound();
    const signer = s.signers[2]!;
    // the first run dies after pinning, before the transaction
    const crashingLedger = s.ledger.connect(signer);
    crashingLedger.submitUpdate = async () => {
      throw new Error("killed");
    };
    let calls = 0;
    const counting: RoundTrainer = {
      trainRound: (job) => (calls++, s.trainers[0]!.trainRound(job)),
      close: async () => {},
    };
    const client = (ledger: typeof crashingLedger) =>
      new FederationClient({ ledger, signer, store: s.store, task: s.task, trainer: counting, train: TRAIN, stateDir });
    const first = client(crashingLedger);
    expect((await rejection(first.participate(1))).message).to.equal("killed");
    expect(calls).to.equal(1);
    const restarted = client(s.ledger.connect(signer));
    expect(await restarted.participate(1)).to.equal("submitted");
    expect(calls).to.equal(1);
    expect(await restarted.participate(1)).to.equal("already-submitted");
    expect((await s.ledger.submissionEvents(s.task, 1, 1)).length).to.equal(1);
    await s.store.close();
  });

  it("a revoked client's update is neither accepted nor aggregated", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    // identity 3 submits, then is revoked before aggregation: left out of the aggregate
    await Promise.all(s.clients.map((c) => c.participate(1)));
    await s.ledger.revoke(3);
    const report = await s.aggregator.finalize(1);
    expect(report!.contributors).to.deep.equal([1, 2]);
    expect(report!.excluded).to.deep.equal([{ identity: 3, reason: "FokError: identity is Revoked" }]);
    // and a revoked identity cannot submit at all
    const s2 = await setup({ maxRounds: 1 });
    await s2.aggregator.openFirstRound();
    await s2.ledger.revoke(1);
    expect(await rejection(s2.clients[0]!.participate(1))).to.be.instanceOf(ClientIdentityError);
    await s.store.close();
    await s2.store.close();
  });

  it("a client that is late by the chain's clock finds the deadline passed and submits nothing", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    await networkHelpers.time.increase(3601); // client and aggregator judge deadlines by the chain's time alone
    expect(await s.clients[0]!.participate(1)).to.equal("deadline-passed");
    expect((await s.ledger.submissionEvents(s.task, 1, 1)).length).to.equal(0);
    await s.store.close();
  });

  it("a hospital with more examples than the cap claims the cap; its weight follows the claim", async function () {
    const s = await setup({ maxRounds: 1, maxExamples: 15 }); // the hospitals hold 10, 20 and 30 examples
    await s.aggregator.openFirstRound();
    expect(await Promise.all(s.clients.map((c) => c.participate(1)))).to.deep.equal([
      "submitted",
      "submitted",
      "submitted",
    ]);
    const report = (await s.aggregator.finalize(1))!;
    expect(report.weights).to.deep.equal(unitsToWeights([10, 15, 15]));
    const round = (await s.ledger.readRound(s.task, 1))!;
    const claims = [...round.submissions].sort((a, b) => a.identity - b.identity).map((x) => x.numExamples);
    expect(claims).to.deep.equal([10, 15, 15]);
    await s.store.close();
  });

  it("update norm bound: honest clients clip to it, a scaled update is left out, verify agrees", async function () {
    const bound = 0.01;
    const s = await setup({ maxRounds: 1, maxUpdateNorm: bound });
    await s.aggregator.openFirstRound();
    // hospital 3 trains, then multiplies its change by 100 to outweigh the others
    const honest = s.trainers[2]!;
    const scaled: RoundTrainer = {
      trainRound: async (job) => {
        const out = await honest.trainRound(job);
        const start = parseAdapter(job.startAdapter, TINY, LORA).weights;
        const mine = parseAdapter(out.adapter, TINY, LORA);
        const grow = (x: Float32Array, y: Float32Array) => x.map((v, i) => y[i]! + 100 * (v - y[i]!));
        const weights = new Map(
          [...mine.weights].map(([m, w]) => [m, { A: grow(w.A, start.get(m)!.A), B: grow(w.B, start.get(m)!.B) }]),
        );
        return { ...out, adapter: serializeAdapter(TINY, LORA, weights, mine.metadata) };
      },
      close: async () => {},
    };
    const cheat = hospital3With(s, scaled);
    expect(
      await Promise.all([s.clients[0]!.participate(1), s.clients[1]!.participate(1), cheat.participate(1)]),
    ).to.deep.equal(["submitted", "submitted", "submitted"]);
    const report = (await aggregatorExpecting(s, 3).finalize(1))!;
    expect(report.contributors).to.deep.equal([1, 2]);
    expect(report.excluded).to.have.length(1);
    expect(report.excluded[0]!.identity).to.equal(3);
    expect(report.excluded[0]!.reason).to.match(/^FokError: update norm 0\.99\d+ exceeds the task's bound 0\.01$/);
    // the honest ones were clipped to the bound by their clients (their metrics say from what)
    for (const sub of (await s.ledger.readRound(s.task, 1))!.submissions.slice(0, 2)) {
      const meta = parseAdapter(await s.store.get(sub.cid), TINY, LORA).metadata;
      const metrics = JSON.parse(meta.metrics!);
      expect(metrics.updateNorm).to.be.at.most(bound);
      expect(metrics.clippedFrom).to.be.greaterThan(bound);
    }
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check])).to.deep.equal([
      [1, 3, "update norm"],
    ]);
    await s.store.close();
  });

  it("an update nobody serves is declared unavailable, left out; verify notes it, readable or not", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    // hospital 3 pins its update in a store nobody can reach (offline after submitting, a partition)
    const offline = await createStore();
    const opened = (await s.ledger.readRound(s.task, 1))!;
    await offline.add(await s.store.get(opened.startCid));
    const h3 = new FederationClient({ ...hospital3Options(s), store: offline, trainer: s.trainers[2]! });
    expect(
      await Promise.all([s.clients[0]!.participate(1), s.clients[1]!.participate(1), h3.participate(1)]),
    ).to.deep.equal(["submitted", "submitted", "submitted"]);
    const report = (await aggregatorExpecting(s, 3).finalize(1))!;
    expect([report.contributors, report.unavailable]).to.deep.equal([[1, 2], [3]]);
    expect(report.excluded.map((x) => [x.identity, x.reason.split(":")[0]])).to.deep.equal([[3, "NotFoundError"]]);
    const round = (await s.ledger.readRound(s.task, 1))!;
    expect(round.unavailable.map((d) => d.identities)).to.deep.equal([[3]]);
    const declaredIn = round.unavailable[0]!.blockNumber;
    // the verifier cannot read it either: a note, not a failure; the contributor set excuses it
    const notes = (r: VerifyReport) =>
      r.checks.filter((c) => c.note).map((c) => [c.round, c.identity, c.check, c.detail]);
    const unread = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(unread.checks.filter((c) => !c.ok)).to.deep.equal([]);
    const declared = `the aggregator declared this update unavailable (block ${declaredIn})`;
    const claim = `${declared} and left it out; whether it was,`;
    expect(notes(unread)).to.have.length(1);
    expect(notes(unread)[0]!.slice(0, 3)).to.deep.equal([1, 3, "availability"]);
    expect(notes(unread)[0]![3]).to.have.string(`${claim} verify cannot check (not readable now (`);
    const passed = unread.checks.length - 1;
    expect(formatVerifyReport(unread).split("\n").at(-1)).to.equal(
      `VERIFIED: task ${s.task}, ${passed} checks passed, 1 note (claims verify cannot check)`,
    );
    // once its bytes can be read, the update is checked like any other and the claim stays a note
    await s.store.add(await offline.get(round.submissions[2]!.cid));
    const read = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect([read.ok, notes(read)]).to.deep.equal([
      true,
      [[1, 3, "availability", `${claim} verify cannot check (readable now)`]],
    ]);
    expect(read.checks.filter((c) => c.identity === 3 && c.check === "update digest").map((c) => c.ok)).to.deep.equal([
      true,
    ]);
    await offline.close();
    await s.store.close();
  });

  it("FFA-LoRA: clients train B only, an update that moved A is left out, verify agrees", async function () {
    const s = await setup({ maxRounds: 1, strategy: "ffa-lora" });
    await s.aggregator.openFirstRound();
    // hospital 3 trains as told, then nudges its A
    const honest = s.trainers[2]!;
    const moved: RoundTrainer = {
      trainRound: async (job) => {
        const out = await honest.trainRound(job);
        const mine = parseAdapter(out.adapter, TINY, LORA);
        for (const w of mine.weights.values()) w.A[0]! += 1e-3;
        return { ...out, adapter: serializeAdapter(TINY, LORA, mine.weights, mine.metadata) };
      },
      close: async () => {},
    };
    const cheat = hospital3With(s, moved);
    await Promise.all([s.clients[0]!.participate(1), s.clients[1]!.participate(1), cheat.participate(1)]);
    const report = (await aggregatorExpecting(s, 3).finalize(1))!;
    expect(report.contributors).to.deep.equal([1, 2]);
    expect(report.excluded.map((e) => [e.identity, e.reason])).to.deep.equal([
      [3, "FokError: module h.0.attn.c_attn: A changed; FFA-LoRA keeps A frozen"],
    ]);
    const r1 = (await s.ledger.readRound(s.task, 1))!;
    const init = parseAdapter(await s.store.get(r1.startCid), TINY, LORA).weights;
    for (const sub of r1.submissions.slice(0, 2)) {
      const w = parseAdapter(await s.store.get(sub.cid), TINY, LORA).weights; // trained with A frozen
      for (const [m, x] of w) expect([...x.A]).to.deep.equal([...init.get(m)!.A]);
    }
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check])).to.deep.equal([
      [1, 3, "strategy rule"],
    ]);
    await s.store.close();
  });

  it("round below minimum at deadline is closed on-chain; the next opens from the same adapter", async function () {
    const s = await setup({ maxRounds: 2, minUpdates: 3 });
    const lines: string[] = [];
    const aggregator = new Aggregator({ ...aggregatorOptions(s), expectedUpdates: 3, log: (l) => lines.push(l) });
    const init = await aggregator.openFirstRound();
    await Promise.all(s.clients.slice(0, 2).map((c) => c.participate(1)));
    await networkHelpers.time.increase(3601);
    expect(await aggregator.finalize(1)).to.equal(null);
    expect(lines.at(-1)).to.equal(
      "round 1: closed without a global adapter (2 usable updates, the task needs 3); " +
        "the next round starts from the same one",
    );
    const round2 = (await s.ledger.readRound(s.task, 2))!;
    expect(round2.startCid).to.equal(init);
    expect(await Promise.all(s.clients.map((c) => c.participate(2)))).to.deep.equal([
      "submitted",
      "submitted",
      "submitted",
    ]);
    expect((await aggregator.finalize(2))!.contributors).to.deep.equal([1, 2, 3]);
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok)).to.deep.equal([]);
    const closed = verified.checks.find((c) => c.check === "closed round")!;
    expect(closed.detail).to.match(/with 2 valid updates \[1, 2\], fewer than the minimum 3$/);
    expect(verified.checks.find((c) => c.round === 2 && c.check === "lineage")!.detail).to.equal(
      "starts from where round 1 (closed) started",
    );
    await s.store.close();
  });

  it("verify fails an aggregator that closes a round whose valid updates met the minimum", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    await Promise.all(s.clients.map((c) => c.participate(1)));
    await networkHelpers.time.increase(3601);
    const round = (await s.ledger.readRound(s.task, 1))!;
    await s.ledger.connect(s.signers[1]!).closeRound(s.task, 1, round.startCid);
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    const failed = verified.checks.filter((c) => !c.ok);
    expect(failed.map((c) => [c.round, c.check])).to.deep.equal([[1, "closed round"]]);
    expect(failed[0]!.detail).to.match(/though 3 valid updates \[1, 2, 3\] met the minimum 2$/);
    await s.store.close();
  });

  describe("robustness", function () {
    it("a client still training when its round is finalized skips that round and joins the next", async function () {
      const s = await setup();
      await s.aggregator.openFirstRound();
      await Promise.all(s.clients.slice(0, 2).map((c) => c.participate(1)));
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const slow: RoundTrainer = {
        trainRound: async (job) => (await gate, s.trainers[2]!.trainRound(job)),
        close: async () => {},
      };
      const signer = s.signers[4]!;
      const late = new FederationClient({
        ledger: s.ledger.connect(signer),
        signer,
        store: s.store,
        task: s.task,
        trainer: slow,
        train: TRAIN,
        pollMs: 50,
      });
      const outcome = late.participate(1);
      await new Promise((r) => setTimeout(r, 200)); // it is training now
      expect((await aggregatorExpecting(s, 2).finalize(1))!.contributors).to.deep.equal([1, 2]);
      release();
      expect(await outcome).to.equal("round-closed");
      expect(await late.participate(2)).to.equal("submitted");
      await s.store.close();
    });

    it("the aggregator waits past an unusable update for enough usable ones instead of exiting", async function () {
      const s = await setup({ maxRounds: 1 });
      await s.aggregator.openFirstRound();
      await Promise.all([s.clients[0]!.participate(1), s.clients[2]!.participate(1)]);
      await s.ledger.revoke(3); // identity 3's update is no longer usable: one usable of the two expected
      const finalizing = aggregatorExpecting(s, 2).finalize(1);
      await new Promise((r) => setTimeout(r, 300));
      expect(await s.clients[1]!.participate(1)).to.equal("submitted");
      const report = (await finalizing)!;
      expect(report.contributors).to.deep.equal([1, 2]);
      expect(report.excluded.map((x) => x.identity)).to.deep.equal([3]);
      await s.store.close();
    });

    it("a client whose chain endpoint fails a while retries with backoff and completes the task", async function () {
      this.timeout(60_000);
      const s = await setup({ maxRounds: 1 });
      const signer = s.signers[2]!;
      const flaky = s.ledger.connect(signer);
      const taskInfo = flaky.taskInfo.bind(flaky);
      let failures = 2;
      flaky.taskInfo = async (task) => {
        if (failures-- > 0)
          throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8545"), { code: "ECONNREFUSED" });
        return taskInfo(task);
      };
      const lines: string[] = [];
      const client = new FederationClient({
        ledger: flaky,
        signer,
        store: s.store,
        task: s.task,
        trainer: s.trainers[0]!,
        train: TRAIN,
        pollMs: 50,
        log: (l) => lines.push(l),
      });
      await s.aggregator.openFirstRound();
      await Promise.all([client.run(), aggregatorExpecting(s, 2).run(), s.clients[1]!.participate(1)]);
      expect(lines.filter((l) => l.startsWith("chain unreachable (connect ECONNREFUSED"))).to.deep.equal([
        "chain unreachable (connect ECONNREFUSED 127.0.0.1:8545); retrying in 1 s",
        "chain unreachable (connect ECONNREFUSED 127.0.0.1:8545); retrying in 2 s",
      ]);
      // the client says what became of its update (10 of the 30 examples: a third) before the task ends
      expect(lines.slice(-2)).to.deep.equal(["round 1: aggregated with weight 33.33%", "task 1 completed"]);
      expect((await s.ledger.readRound(s.task, 1))!.finalized!.contributors).to.deep.equal([1, 2]);
      await s.store.close();
    });
  });
});
