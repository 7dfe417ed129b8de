/**
 * How `fok verify` and `fok inspect` grow with history: a generated history of N identities × R rounds (every
 * identity submits a tiny adapter every round, FedAvg finalizes) on the in-process chain, then verify and inspect on
 * a fresh reader (nothing cached), timed, with every JSON-RPC call counted by method; then one poll of the last
 * round twice, to show that a second poll reads only new blocks. Sizes 10 × 10, 100 × 10, 100 × 100.
 *
 *   npm run bench:history            (BENCH_HISTORY_SIZES="10x10,100x10" for fewer)
 */
import { network } from "hardhat";
import { BrowserProvider, Wallet, type Eip1193Provider } from "ethers";
import { initBackend } from "../node/model/backend.js";
import { LoraAdapter, type LoraConfig } from "../node/model/lora.js";
import type { GPTConfig } from "../node/model/gpt.js";
import { serializeAdapter, type LoraWeights } from "../node/model/adapter.js";
import { FederationLedger, deployContracts, type TaskHistory } from "../node/chain/index.js";
import { FedAvg, unitsToWeights } from "../node/aggregate/index.js";
import { createStore } from "../node/store/index.js";
import { sha256Hex } from "../node/digest.js";
import { verifyTask } from "../node/provenance/verify.js";
import { printTask } from "../node/cli/inspect.js";
import { loraConfigHash } from "../node/federation/task-config.js";

const MODEL: GPTConfig = {
  nLayer: 1,
  nEmbd: 16,
  nHead: 2,
  blockSize: 16,
  vocabSize: 260,
  dropout: 0,
  layerNormEps: 1e-5,
};
const LORA: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ["q", "v"] };
const SIZES = (process.env.BENCH_HISTORY_SIZES ?? "10x10,100x10,100x100")
  .split(",")
  .map((s) => s.split("x").map(Number) as [number, number]);

await initBackend("cpu", true);
const conn = await network.create();
const inner = conn.provider as unknown as Eip1193Provider;
const calls = new Map<string, number>();
const counting: Eip1193Provider = {
  request: (a) => {
    calls.set(a.method, (calls.get(a.method) ?? 0) + 1);
    return inner.request(a);
  },
};
const [admin, aggregatorSigner] = await conn.ethers.getSigners();
const ledger = await deployContracts(admin!);
const store = await createStore();
const baseBytes = new TextEncoder().encode("a stand-in base model: verify checks its digest only");
const baseSha = sha256Hex(baseBytes);
const baseCid = await store.add(baseBytes);

// the identities, funded and registered once (the largest size's count)
const most = Math.max(...SIZES.map(([n]) => n));
const wallets = Array.from({ length: most }, () => Wallet.createRandom().connect(conn.ethers.provider));
for (const w of wallets)
  await conn.provider.request({ method: "hardhat_setBalance", params: [w.address, "0x56BC75E2D63100000"] });
const ids: number[] = [];
for (const [i, w] of wallets.entries())
  ids.push(await ledger.registerIdentity(w.address, `h${i}`, baseSha, "bafkreimeta"));
const agg = ledger.connect(aggregatorSigner!);
const hospitals = wallets.map((w) => ledger.connect(w));

/** A task of `n` identities × `rounds` rounds: each submits start + a small change, FedAvg finalizes. */
async function generate(n: number, rounds: number): Promise<number> {
  const task = await ledger.createTask({
    baseModelCid: baseCid,
    baseModelSha256: baseSha,
    loraConfigHash: loraConfigHash(LORA),
    aggregator: aggregatorSigner!.address,
    strategy: "fedavg",
    minUpdates: 1,
    roundDuration: 10 ** 9,
    maxRounds: rounds,
    maxExamples: 1000,
    maxUpdateNorm: 20,
  });
  const init = LoraAdapter.init(MODEL, LORA, 1);
  let start: LoraWeights = await init.exportWeights();
  init.dispose();
  const initBytes = serializeAdapter(MODEL, LORA, start, { kind: "init", task, round: 0, baseModelSha256: baseSha });
  await agg.openFirstRound(task, await store.add(initBytes), sha256Hex(initBytes));
  for (let round = 1; round <= rounds; round++) {
    const updates = [];
    for (let k = 0; k < n; k++) {
      const w: LoraWeights = new Map(
        [...start].map(([m, { A, B }]) => [m, { A, B: B.map((x, j) => x + 1e-3 * Math.sin(round * 31 + k * 7 + j)) }]),
      );
      const metrics = JSON.stringify({ numExamples: 10 + k });
      const bytes = serializeAdapter(MODEL, LORA, w, {
        kind: "update",
        task,
        round,
        identity: ids[k],
        baseModelSha256: baseSha,
        metrics,
      });
      const cid = await store.add(bytes);
      const c = {
        task,
        round,
        cid,
        adapterSha256: sha256Hex(bytes),
        numExamples: 10 + k,
        metricsDigest: sha256Hex(metrics),
      };
      await hospitals[k]!.submitUpdate(c);
      updates.push({ identity: ids[k]!, numExamples: 10 + k, weights: w });
    }
    const result = new FedAvg().aggregate(updates);
    const bytes = serializeAdapter(MODEL, LORA, result.weights, {
      kind: "global",
      task,
      round,
      baseModelSha256: baseSha,
      strategy: "fedavg",
    });
    const cid = await store.add(bytes);
    await agg.finalizeRound(
      task,
      round,
      cid,
      sha256Hex(bytes),
      result.contributors,
      unitsToWeights(result.units),
      "fedavg",
    );
    start = result.weights;
  }
  return task;
}

/** Wall time and JSON-RPC calls of `fn` through a fresh reader (nothing cached). */
async function measured<T>(fn: (reader: FederationLedger) => Promise<T>) {
  const reader = new FederationLedger(ledger.deployment, new BrowserProvider(counting));
  calls.clear();
  const t0 = performance.now();
  const value = await fn(reader);
  const ms = performance.now() - t0;
  const byMethod = Object.fromEntries([...calls].sort((a, b) => b[1] - a[1]));
  return { value, ms, rpc: [...calls.values()].reduce((a, b) => a + b, 0), byMethod, logQueries: reader.logs.queries };
}

const rows = [];
for (const [n, rounds] of SIZES) {
  const g0 = performance.now();
  const task = await generate(n, rounds);
  const generated = (performance.now() - g0) / 1000;
  const v = await measured((r) => verifyTask(r, store, task, { model: MODEL, lora: LORA }));
  if (!v.value.ok)
    throw new Error(`verify failed on the generated history: ${JSON.stringify(v.value.checks.find((c) => !c.ok))}`);
  const i = await measured(async (r) => {
    const [ids, history] = await Promise.all([r.readIdentities(), r.readTaskHistory(task)]);
    const lines: string[] = [];
    printTask(history as TaskHistory, { out: (l) => lines.push(l) });
    return ids.length + lines.length;
  });
  // one client's poll of the last round, then the same poll again after one more block
  const poller = new FederationLedger(ledger.deployment, new BrowserProvider(counting));
  calls.clear();
  await poller.readRound(task, rounds);
  const firstPoll = [...calls.values()].reduce((a, b) => a + b, 0);
  await conn.provider.request({ method: "hardhat_mine", params: ["0x1"] });
  calls.clear();
  await poller.readRound(task, rounds);
  const nextPoll = [...calls.values()].reduce((a, b) => a + b, 0);
  const subs = n * rounds;
  rows.push({
    "identities × rounds": `${n} × ${rounds}`,
    submissions: subs,
    "generate s": +generated.toFixed(1),
    "verify s": +(v.ms / 1000).toFixed(2),
    "verify ms / submission": +(v.ms / subs).toFixed(2),
    "verify RPC calls": v.rpc,
    "verify log queries": v.logQueries,
    "inspect s": +(i.ms / 1000).toFixed(2),
    "inspect RPC calls": i.rpc,
    "poll RPC, first / next": `${firstPoll} / ${nextPoll}`,
  });
  console.log(
    `${n} × ${rounds}: verify RPC by method ${JSON.stringify(v.byMethod)}; inspect ${JSON.stringify(i.byMethod)}`,
  );
}
console.table(rows);
await store.close();
