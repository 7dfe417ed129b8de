import { expect } from "chai";
import { network } from "hardhat";
import { initBackend } from "../../node/model/backend.js";
import { GPT, type GPTConfig } from "../../node/model/gpt.js";
import { BPETokenizer } from "../../node/model/tokenizer.js";
import { serializeBaseModel } from "../../node/model/checkpoint.js";
import { parseAdapter, serializeAdapter } from "../../node/model/adapter.js";
import type { LoraConfig } from "../../node/model/lora.js";
import { deployContracts, type FederationLedger } from "../../node/chain/index.js";
import { createStore, sha256Hex, type AdapterStore } from "../../node/store/index.js";
import { FederationClient, ClientIdentityError } from "../../node/federation/client.js";
import { Aggregator } from "../../node/federation/aggregator.js";
import { InlineTrainer, type RoundTrainer } from "../../node/federation/trainer-pool.js";
import { loraConfigHash, modelFingerprint } from "../../node/federation/task-config.js";
import { FedAvg, unitsToWeights } from "../../node/aggregate/index.js";
import { verifyTask, formatVerifyReport, type ByteSource } from "../../node/provenance/verify.js";
import { LoraAdapter } from "../../node/model/lora.js";
import { serveDashboard } from "../../node/dashboard/server.js";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";

const { ethers, networkHelpers } = await network.create();

const TINY: GPTConfig = {
  nLayer: 1,
  nEmbd: 16,
  nHead: 2,
  blockSize: 16,
  vocabSize: 260,
  dropout: 0,
  layerNormEps: 1e-5,
};
const LORA: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ["q", "v"] };
const TRAIN = { steps: 3, batchSize: 2, seqLen: 16, lr: 1e-2, warmupSteps: 1 };
const TEXTS = [
  "the heart pumps blood through the arteries and veins. ",
  "the tumour was removed in surgery and the margins were clear. ",
  "the infection was treated with antibiotics for ten days. ",
];

interface Setup {
  ledger: FederationLedger;
  store: AdapterStore;
  baseBytes: Uint8Array;
  baseSha: string;
  task: number;
  signers: Awaited<ReturnType<typeof ethers.getSigners>>;
  trainers: RoundTrainer[];
  aggregator: Aggregator;
  clients: FederationClient[];
}

describe("federation end to end (tiny model, in-process chain, embedded store)", function () {
  this.timeout(300_000);
  let tokenizer: BPETokenizer;
  let baseBytes: Uint8Array;

  before(async function () {
    await initBackend("wasm", true);
    tokenizer = await BPETokenizer.train(
      TEXTS.map((t) => t.repeat(20)),
      260,
    );
    const gpt = GPT.init(TINY, 1);
    baseBytes = await serializeBaseModel(gpt, tokenizer);
    gpt.dispose();
  });

  async function setup(options: { stateDirs?: string[]; maxRounds?: number } = {}): Promise<Setup> {
    const signers = await ethers.getSigners();
    const [admin, aggregatorAccount] = signers;
    const ledger = await deployContracts(admin!);
    const store = await createStore();
    const baseCid = await store.add(baseBytes);
    const baseSha = sha256Hex(baseBytes);
    const loraHash = loraConfigHash(LORA);
    for (let i = 0; i < 3; i++) {
      await ledger.registerIdentity(
        signers[2 + i]!.address,
        `hospital-${i}`,
        modelFingerprint(baseSha, loraHash),
        `bafkreimeta${i}`,
      );
    }
    const task = await ledger.createTask({
      baseModelCid: baseCid,
      baseModelSha256: baseSha,
      loraConfigHash: loraHash,
      aggregator: aggregatorAccount!.address,
      strategy: "fedavg",
      minUpdates: 2,
      roundDuration: 3600,
      maxRounds: options.maxRounds ?? 2,
    });
    const trainers: RoundTrainer[] = [];
    const clients: FederationClient[] = [];
    for (let i = 0; i < 3; i++) {
      const tokens = Int32Array.from(await tokenizer.encode(TEXTS[i]!.repeat(10)));
      const trainer = await InlineTrainer.create(baseBytes, LORA, {
        trainTokens: tokens,
        heldOutTokens: tokens.subarray(0, 40),
        numExamples: 10 * (i + 1),
      });
      trainers.push(trainer);
      const signer = signers[2 + i]!;
      clients.push(
        new FederationClient({
          ledger: ledger.connect(signer),
          signer,
          store,
          task,
          trainer,
          train: TRAIN,
          stateDir: options.stateDirs?.[i],
          pollMs: 50,
        }),
      );
    }
    const aggregator = new Aggregator({
      ledger: ledger.connect(aggregatorAccount!),
      store,
      task,
      model: TINY,
      lora: LORA,
      baseModelSha256: baseSha,
      expectedUpdates: 3,
      pollMs: 50,
    });
    return { ledger, store, baseBytes, baseSha, task, signers, trainers, aggregator, clients };
  }

  it("runs 3 clients × 2 rounds: every commitment on-chain, every CID verified, round 2's global = FedAvg of round 2", async function () {
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
    const aggAccount = s.signers[1]!;
    const crashing = s.ledger.connect(aggAccount);
    crashing.finalizeRound = async () => {
      throw new Error("killed");
    };
    const first = new Aggregator({
      ledger: crashing,
      store: s.store,
      task: s.task,
      model: TINY,
      lora: LORA,
      baseModelSha256: s.baseSha,
      expectedUpdates: 3,
    });
    let err: Error | null = null;
    try {
      await first.finalize(1);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.equal("killed");
    const restarted = new Aggregator({
      ledger: s.ledger.connect(aggAccount),
      store: s.store,
      task: s.task,
      model: TINY,
      lora: LORA,
      baseModelSha256: s.baseSha,
      expectedUpdates: 3,
    });
    const report = await restarted.finalize(1);
    expect(report!.contributors).to.deep.equal([1, 2, 3]);
    expect(await restarted.finalize(1)).to.equal(null); // a second restart finds it finalized
    const events = await s.ledger.federation.queryFilter(s.ledger.federation.filters.RoundFinalized(s.task, 1));
    expect(events.length).to.equal(1);
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
    const first = new FederationClient({
      ledger: crashingLedger,
      signer,
      store: s.store,
      task: s.task,
      trainer: counting,
      train: TRAIN,
      stateDir,
    });
    let err: Error | null = null;
    try {
      await first.participate(1);
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).to.equal("killed");
    expect(calls).to.equal(1);
    const restarted = new FederationClient({
      ledger: s.ledger.connect(signer),
      signer,
      store: s.store,
      task: s.task,
      trainer: counting,
      train: TRAIN,
      stateDir,
    });
    expect(await restarted.participate(1)).to.equal("submitted");
    expect(calls).to.equal(1);
    expect(await restarted.participate(1)).to.equal("already-submitted");
    const events = await s.ledger.federation.queryFilter(s.ledger.federation.filters.UpdateSubmitted(s.task, 1, 1));
    expect(events.length).to.equal(1);
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
    let err: unknown;
    try {
      await s2.clients[0]!.participate(1);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ClientIdentityError);
    await s.store.close();
    await s2.store.close();
  });

  it("a client that is late finds the deadline passed and submits nothing", async function () {
    const s = await setup({ maxRounds: 1 });
    await s.aggregator.openFirstRound();
    await networkHelpers.time.increase(3601);
    // the client compares wall-clock time to the deadline, so move the chain's clock far ahead of it instead
    const info = await s.ledger.federation.task(s.task);
    const original = Date.now;
    Date.now = () => (Number(info.roundDeadline) + 1) * 1000;
    try {
      expect(await s.clients[0]!.participate(1)).to.equal("deadline-passed");
    } finally {
      Date.now = original;
    }
    await s.store.close();
  });

  describe("fok verify", function () {
    async function honestRun() {
      const s = await setup();
      await s.aggregator.openFirstRound();
      for (const round of [1, 2]) {
        await Promise.all(s.clients.map((c) => c.participate(round)));
        await s.aggregator.finalize(round);
      }
      return s;
    }
    const failures = (r: Awaited<ReturnType<typeof verifyTask>>) =>
      r.checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check]);

    it("passes on an honest run, with contribution figures for every contributor", async function () {
      const s = await honestRun();
      const report = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
      expect(failures(report)).to.deep.equal([]);
      expect(report.ok).to.equal(true);
      // base, and per round: start digest + lineage, 3 × (identity, digest, metrics), 3 contributors, global, weights, aggregate
      expect(report.checks.length).to.equal(1 + 2 * (2 + 3 * 3 + 3 + 3));
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

    it("fails naming round 2, identity 2 and the digest check when that update's stored bytes are altered", async function () {
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
      it(`fails naming round 1 and the aggregate check when the global adapter is not the aggregation (${what})`, async function () {
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
        const used = what.startsWith("a contributor") ? updates.slice(0, 2) : updates; // identity 3's update silently left out
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
        [2, null, "aggregate"],
      ]);
      await s.store.close();
    });

    it("fails the lineage check when round 1 does not start from an unchanged initialisation of the base", async function () {
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

  describe("fok dashboard", function () {
    const CHROMIUM = process.env.FOK_CHROMIUM ?? "/usr/bin/chromium";

    it("shows the identities, the rounds and a chart of a finished run in headless Chromium", async function () {
      if (!existsSync(CHROMIUM)) this.skip(); // .ci/run installs Debian's chromium
      const s = await setup();
      await s.aggregator.openFirstRound();
      for (const round of [1, 2]) {
        await Promise.all(s.clients.map((c) => c.participate(round)));
        await s.aggregator.finalize(round);
      }
      const dash = await serveDashboard({ ledger: s.ledger, store: s.store });
      expect(dash.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
      const { chromium } = await import("playwright-core");
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-quic",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
        ],
      });
      try {
        const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
        await page.goto(dash.url);
        await page.waitForSelector("tr.round");
        expect(await page.locator("tr.identity").count()).to.equal(3);
        expect(await page.locator("tr.round").count()).to.equal(2);
        const h = await s.ledger.readTaskHistory(s.task);
        const text = await page.locator("#lineage").innerText();
        expect(text).to.contain("task 1 — fedavg, 2/2 rounds, completed");
        expect(await page.locator(`a[href="/api/cid/${h.rounds[1]!.finalized!.globalCid}"]`).count()).to.be.greaterThan(
          0,
        );
        // the loss chart has one line per client with a point per round
        const series = await page.evaluate(() => {
          const chart = (
            globalThis as unknown as {
              Chart: { getChart(id: string): { data: { datasets: { data: (number | null)[] }[] } } };
            }
          ).Chart.getChart("lossChart");
          return chart.data.datasets.map((d) => d.data.filter((x) => x !== null).length);
        });
        expect(series).to.deep.equal([2, 2, 2]);
        // a transaction link opens its details
        await page.locator("a.tx").first().click();
        await page.waitForFunction(() =>
          (globalThis as unknown as { document: { getElementById(id: string): { textContent: string } } }).document
            .getElementById("detail")
            .textContent.includes('"hash"'),
        );
        const out = join(import.meta.dirname, "../../test-output");
        await mkdir(out, { recursive: true });
        await page.screenshot({ path: join(out, "dashboard.png"), fullPage: true });
        expect(existsSync(join(out, "dashboard.png"))).to.equal(true);
      } finally {
        await browser.close();
        await dash.close();
        await s.store.close();
      }
    });
  });
});
