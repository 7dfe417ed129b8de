/**
 * One federation round's wall time, split into train / pin / commit (clients) and fetch+verify / aggregate / pin /
 * finalize (aggregator), for 4 and 16 clients on the in-process chain and an in-memory store with the committed
 * base model. Aggregation throughput against its ceilings: scripts/bench-aggregate.ts.
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

if (process.argv.includes("--json") || process.env.FOK_BENCH_JSON) {
  console.log(
    JSON.stringify({
      rounds: rows,
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
process.exit(0);
