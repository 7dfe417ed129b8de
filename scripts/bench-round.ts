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
import type { AdapterStore } from "../node/store/index.js";
import { startLocalFederation } from "../node/federation/local.js";
import { InlineTrainer, type RoundTrainer } from "../node/federation/trainer-pool.js";
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
  const t = { train: 0, pin: 0, commit: 0 };
  const timed =
    <A extends unknown[], T>(key: keyof typeof t, fn: (...a: A) => Promise<T>) =>
    async (...a: A) => {
      const t0 = performance.now();
      const v = await fn(...a);
      t[key] += performance.now() - t0;
      return v;
    };
  const tokens = Int32Array.from({ length: 20_000 }, (_, i) => (i * 7919) % base.model.config.vocabSize);
  const inline = await InlineTrainer.create(baseBytes, lora, { trainTokens: tokens, numExamples: 100 });
  const trainer: RoundTrainer = { trainRound: timed("train", (job) => inline.trainRound(job)), close: async () => {} };
  const fed = await startLocalFederation({
    signers,
    baseBytes,
    baseModelSha256: base.sha256,
    model: base.model.config,
    lora,
    hospitals: Array.from({ length: n }, (_, i) => ({
      name: `h${i}`,
      institution: `h${i}`,
      metadataCid: "bafkreimeta",
      trainer,
    })),
    strategy: "fedavg",
    rounds: 1,
    train: { steps: STEPS, batchSize: 8 },
    instrument: {
      ledger: (l) => Object.assign(l, { submitUpdate: timed("commit", l.submitUpdate.bind(l)) }),
      store: (s) => Object.assign(Object.create(s) as AdapterStore, { add: timed("pin", s.add.bind(s)) }),
    },
  });
  await fed.openFirstRound();
  const t0 = performance.now();
  for (const c of fed.clients) await c.participate(1); // one core: clients one after another
  const report = (await fed.aggregator.finalize(1))!;
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
  await fed.close();
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
  `(LoRA r 8 on q,v of the committed base model; ${STEPS} local steps of 8 × 64 tokens per client; ` +
    "clients trained one after another on one core)",
);
console.log("");
console.log(`aggregation of ${N} × 8 MB adapters (${(bytes / 1e9).toFixed(3)} GB in):`);
console.log(`  plain Float32Array copy: ${(bytes / 1e9 / copyS).toFixed(2)} GB/s (${(copyS * 1000).toFixed(0)} ms)`);
console.log(
  `  FedAvg (float64 accumulate, validate): ${(bytes / 1e9 / avgS).toFixed(2)} GB/s (${(avgS * 1000).toFixed(0)} ms)`,
);
process.exit(0);
