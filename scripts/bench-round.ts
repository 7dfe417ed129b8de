/**
 * One federation round's wall time, split into train / pin / commit (clients) and fetch+verify / aggregate / pin /
 * finalize (aggregator), for 4 and 16 clients on the in-process chain and an in-memory store with the committed
 * base model; then FedAvg and exact-aggregation throughput for 16 clients × 8 MB adapters beside a plain
 * Float32Array copy of the same bytes (the ceiling).
 *
 *   npx hardhat run scripts/bench-round.ts        (or: npm run bench:round)
 */
import { network } from "hardhat";
import { readFile } from "node:fs/promises";
import { initBackend } from "../node/model/backend.js";
import { parseBaseModel } from "../node/model/checkpoint.js";
import { DEFAULT_LORA_CONFIG } from "../node/model/lora.js";
import { deployContracts } from "../node/chain/index.js";
import { createStore, sha256Hex, type AdapterStore } from "../node/store/index.js";
import { FederationClient } from "../node/federation/client.js";
import { Aggregator } from "../node/federation/aggregator.js";
import { InlineTrainer, type RoundTrainer } from "../node/federation/trainer-pool.js";
import { loraConfigHash, modelFingerprint } from "../node/federation/task-config.js";
import { FedAvg, type ClientUpdate } from "../node/aggregate/index.js";

const STEPS = Number(process.env.BENCH_ROUND_STEPS ?? 4);
await initBackend("wasm", true);
const { ethers } = await network.create();
const signers = await ethers.getSigners();
const baseBytes = await readFile("models/base/model.safetensors");
const base = parseBaseModel(baseBytes);
const lora = DEFAULT_LORA_CONFIG;
const rows: Record<string, number | string>[] = [];

for (const n of [4, 16]) {
  const ledger = await deployContracts(signers[0]!);
  const store = await createStore();
  const baseCid = await store.add(baseBytes);
  const loraHash = loraConfigHash(lora);
  for (let i = 0; i < n; i++)
    await ledger.registerIdentity(
      signers[2 + i]!.address,
      `h${i}`,
      modelFingerprint(base.sha256, loraHash),
      "bafkreimeta",
    );
  const task = await ledger.createTask({
    baseModelCid: baseCid,
    baseModelSha256: base.sha256,
    loraConfigHash: loraHash,
    aggregator: signers[1]!.address,
    strategy: "fedavg",
    minUpdates: n,
    roundDuration: 3600,
    maxRounds: 1,
  });
  const t = { train: 0, pin: 0, commit: 0 };
  const timed =
    <T>(key: keyof typeof t, p: () => Promise<T>) =>
    async () => {
      const t0 = performance.now();
      const v = await p();
      t[key] += performance.now() - t0;
      return v;
    };
  const tokens = Int32Array.from({ length: 20_000 }, (_, i) => (i * 7919) % base.gpt.config.vocabSize);
  const inline = await InlineTrainer.create(baseBytes, lora, { trainTokens: tokens, numExamples: 100 });
  const clients = [];
  for (let i = 0; i < n; i++) {
    const signer = signers[2 + i]!;
    const l = ledger.connect(signer);
    const submit = l.submitUpdate.bind(l);
    l.submitUpdate = (c) => timed("commit", () => submit(c))();
    const s: AdapterStore = Object.create(store);
    s.add = (b, o) => timed("pin", () => store.add(b, o))();
    const trainer: RoundTrainer = {
      trainRound: (job) => timed("train", () => inline.trainRound(job))(),
      close: async () => {},
    };
    clients.push(
      new FederationClient({ ledger: l, signer, store: s, task, trainer, train: { steps: STEPS, batchSize: 8 } }),
    );
  }
  const aggregator = new Aggregator({
    ledger: ledger.connect(signers[1]!),
    store,
    task,
    model: base.gpt.config,
    lora,
    baseModelSha256: base.sha256,
    expectedUpdates: n,
  });
  await aggregator.openFirstRound();
  const t0 = performance.now();
  for (const c of clients) await c.participate(1); // one core: clients one after another
  const report = (await aggregator.finalize(1))!;
  const wall = performance.now() - t0;
  rows.push({
    clients: n,
    "train (all clients)": t.train,
    "pin (all clients)": t.pin,
    "commit (all clients)": t.commit,
    "fetch+verify": report.timings.fetchVerifyMs,
    aggregate: report.timings.aggregateMs,
    "pin global": report.timings.pinMs,
    finalize: report.timings.finalizeMs,
    "round wall": wall,
  });
  await store.close();
}

// aggregation throughput: 16 × 8 MB adapters
const N = 16;
const floats = 2 * 1024 * 1024; // 8 MB of float32 per client
const updates: ClientUpdate[] = Array.from({ length: N }, (_, c) => {
  const A = new Float32Array(floats / 2).map((_, i) => Math.sin(i + c));
  const B = new Float32Array(floats / 2).map((_, i) => Math.cos(i * 3 + c));
  return { identity: c + 1, numExamples: 100 + c, weights: new Map([["h.0.attn.c_attn", { A, B }]]) };
});
const bytes = N * floats * 4;
const copyStart = performance.now();
for (const u of updates) {
  const w = u.weights.get("h.0.attn.c_attn")!;
  new Float32Array(w.A);
  new Float32Array(w.B);
}
const copyS = (performance.now() - copyStart) / 1000;
const avgStart = performance.now();
const out = new FedAvg().aggregate(updates);
const avgS = (performance.now() - avgStart) / 1000;
void sha256Hex;
void out;

if (process.argv.includes("--json") || process.env.FOK_BENCH_JSON) {
  console.log(
    JSON.stringify({
      rounds: rows,
      aggregation: { clients: N, bytes, copyGBps: bytes / 1e9 / copyS, fedavgGBps: bytes / 1e9 / avgS },
    }),
  );
  process.exit(0);
}
console.log(`| clients | ${Object.keys(rows[0]!).slice(1).join(" | ")} |`);
console.log(
  `| ---: | ${Object.keys(rows[0]!)
    .slice(1)
    .map(() => "---:")
    .join(" | ")} |`,
);
for (const r of rows)
  console.log(
    `| ${r.clients} | ${Object.values(r)
      .slice(1)
      .map((v) => `${(Number(v) / 1000).toFixed(2)} s`)
      .join(" | ")} |`,
  );
console.log(
  `(LoRA r 8 on q,v of the committed base model; ${STEPS} local steps of 8 × 64 tokens per client; clients trained one after another on one core)`,
);
console.log("");
console.log(`aggregation of ${N} × 8 MB adapters (${(bytes / 1e9).toFixed(3)} GB in):`);
console.log(`  plain Float32Array copy: ${(bytes / 1e9 / copyS).toFixed(2)} GB/s (${(copyS * 1000).toFixed(0)} ms)`);
console.log(
  `  FedAvg (float64 accumulate, validate): ${(bytes / 1e9 / avgS).toFixed(2)} GB/s (${(avgS * 1000).toFixed(0)} ms)`,
);
process.exit(0);
