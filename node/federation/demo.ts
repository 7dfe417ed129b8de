/**
 * `fok demo`: a whole federation in one process — an in-process Hardhat network, an embedded IPFS store, an
 * aggregator and N hospital clients (training in worker threads) on the default medical corpus (WordNet's medical
 * definitions) split by category — then a per-client table and the provenance of the final adapter.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initBackend } from "../model/backend.js";
import { parseBaseModel } from "../model/checkpoint.js";
import { LoraAdapter, DEFAULT_LORA_CONFIG, type LoraConfig } from "../model/lora.js";
import { parseAdapter, serializeAdapter } from "../model/adapter.js";
import { evaluateLoss } from "../train/evaluate.js";
import { loadWordnetMedical } from "../data/corpora.js";
import { partition, splitClients } from "../data/partition.js";
import { tokenizeDocuments } from "../data/tokens.js";
import { deployContracts, type TaskHistory } from "../chain/index.js";
import { createStore } from "../store/index.js";
import { CheckpointError } from "../model/safetensors.js";
import { FederationClient } from "./client.js";
import { Aggregator, type RoundReport } from "./aggregator.js";
import { InlineTrainer, WorkerTrainer, limitConcurrency, type RoundTrainer } from "./trainer-pool.js";
import { availableParallelism } from "node:os";
import { loraConfigHash, modelFingerprint } from "./task-config.js";

export interface DemoOptions {
  /** Hospitals (one per WordNet medical category, largest first; at most 6). Default 4. */
  clients: number;
  rounds: number;
  /** Local optimizer steps per client per round. */
  steps: number;
  batchSize: number;
  lr: number;
  strategy: string;
  /** Train clients in worker threads (uses every core). */
  workers: boolean;
  baseDir: string;
  /** Keep the store here (default: a temporary folder, removed at the end). */
  storeDir?: string;
  seed: number;
  lora: LoraConfig;
  /** Also train each hospital alone, on the same token budget (rounds × steps), for a local-only column. */
  localOnly: boolean;
  log: (line: string) => void;
}

export const DEFAULT_DEMO: DemoOptions = {
  clients: 4,
  rounds: 3,
  steps: 40,
  batchSize: 8,
  lr: 5e-3,
  strategy: "fedavg",
  workers: true,
  baseDir: "models/base",
  seed: 7,
  lora: DEFAULT_LORA_CONFIG,
  localOnly: false,
  log: (l) => process.stderr.write(l + "\n"),
};

export interface DemoClientRow {
  client: string;
  identity: number;
  trainDocs: number;
  heldOutDocs: number;
  /** Held-out perplexity of the base model alone, and with the global adapter after each round. */
  basePerplexity: number;
  perRoundPerplexity: number[];
  finalPerplexity: number;
  /** With --local-only: the hospital's own adapter, trained alone on the same token budget. */
  localOnlyPerplexity?: number;
}

export interface DemoReport {
  task: number;
  strategy: string;
  baseModelSha256: string;
  rows: DemoClientRow[];
  rounds: RoundReport[];
  history: TaskHistory;
  seconds: number;
}

export async function runDemo(partial: Partial<DemoOptions> = {}): Promise<DemoReport> {
  const o: DemoOptions = { ...DEFAULT_DEMO, ...partial };
  const t0 = performance.now();
  const log = o.log;
  await initBackend(undefined, true);
  let baseBytes: Uint8Array;
  try {
    baseBytes = await readFile(join(o.baseDir, "model.safetensors"));
  } catch {
    throw new CheckpointError(
      `no base model at ${o.baseDir}/model.safetensors; build one with \`npm run pretrain -- --out ${o.baseDir}\``,
    );
  }
  const base = parseBaseModel(baseBytes);
  log(
    `[demo] base model ${base.sha256.slice(0, 18)}… (${base.gpt.config.nLayer} layers, d=${base.gpt.config.nEmbd}, vocab ${base.gpt.config.vocabSize})`,
  );

  // data: the medical part of WordNet, one hospital per category
  const docs = await loadWordnetMedical();
  const parts = partition(docs, { kind: "label" }, o.seed)
    .sort((a, b) => b.docs.length - a.docs.length || (a.name < b.name ? -1 : 1))
    .slice(0, Math.max(1, Math.min(o.clients, 6)));
  const clientsData = splitClients(parts, 0.1, o.seed);
  const datasets: { trainTokens: Int32Array; heldOutTokens: Int32Array; numExamples: number }[] = [];
  for (const c of clientsData) {
    datasets.push({
      trainTokens: await tokenizeDocuments(base.tokenizer, c.train),
      heldOutTokens: await tokenizeDocuments(base.tokenizer, c.heldOut),
      numExamples: c.train.length,
    });
  }
  log(
    `[demo] ${clientsData.length} hospitals: ${clientsData.map((c, i) => `${c.name} (${c.train.length} docs, ${datasets[i]!.trainTokens.length} tokens)`).join(", ")}`,
  );

  // chain and store
  const hre = await import("hardhat");
  const { ethers } = await hre.network.create();
  const signers = await ethers.getSigners();
  const [admin, aggregatorAccount] = signers;
  const ledger = await deployContracts(admin!);
  const ownStore = !o.storeDir;
  const storeDir = o.storeDir ?? (await mkdtemp(join(tmpdir(), "fok-demo-store-")));
  const store = await createStore({ dir: storeDir });
  const trainers: RoundTrainer[] = [];
  try {
    const baseCid = await store.add(baseBytes);
    const loraHash = loraConfigHash(o.lora);
    const fingerprint = modelFingerprint(base.sha256, loraHash);
    const identities: number[] = [];
    for (const [i, c] of clientsData.entries()) {
      identities.push(
        await ledger.registerIdentity(signers[2 + i]!.address, `hospital:${c.name}`, fingerprint, `bafkreidemo${i}`),
      );
    }
    const task = await ledger.createTask({
      baseModelCid: baseCid,
      baseModelSha256: base.sha256,
      loraConfigHash: loraHash,
      aggregator: aggregatorAccount!.address,
      strategy: o.strategy,
      minUpdates: Math.max(1, Math.ceil(clientsData.length / 2)),
      roundDuration: 3600,
      maxRounds: o.rounds,
    });
    log(
      `[demo] chain: identities ${identities.join(", ")} registered; task ${task} (${o.strategy}, ${o.rounds} rounds) created; base model pinned as ${baseCid}`,
    );

    // evaluation of the global adapter on every hospital's held-out text, after each round
    const evalOpts = { seqLen: base.gpt.config.blockSize, batchSize: 16 };
    const baseline: number[] = [];
    for (const d of datasets) baseline.push((await evaluateLoss(base.gpt, null, d.heldOutTokens, evalOpts)).perplexity);
    const perRound: number[][] = datasets.map(() => []);
    const aggregator = new Aggregator({
      ledger: ledger.connect(aggregatorAccount!),
      store,
      task,
      model: base.gpt.config,
      lora: o.lora,
      baseModelSha256: base.sha256,
      expectedUpdates: clientsData.length,
      pollMs: 100,
      log: (l) => log(`[aggregator] ${l}`),
      onGlobal: async (round, bytes) => {
        const adapter = LoraAdapter.init(base.gpt.config, o.lora);
        adapter.assign(parseAdapter(bytes, base.gpt.config, o.lora).weights);
        const ppl = [];
        for (const [i, d] of datasets.entries()) {
          const p = (await evaluateLoss(base.gpt, adapter, d.heldOutTokens, evalOpts)).perplexity;
          perRound[i]!.push(p);
          ppl.push(p);
        }
        adapter.dispose();
        log(
          `[aggregator] round ${round}: held-out perplexity with the global adapter: ${ppl.map((p, i) => `${clientsData[i]!.name} ${p.toFixed(1)}`).join(", ")}`,
        );
      },
    });
    const train = {
      steps: o.steps,
      batchSize: o.batchSize,
      lr: o.lr,
      warmupSteps: Math.min(5, o.steps),
      seed: o.seed,
      proxMu: o.strategy === "fedprox" ? 0.01 : 0,
    };
    for (const [i, d] of datasets.entries()) {
      const name = clientsData[i]!.name;
      const onStep = (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => {
        if (s.step === s.steps || s.step % 20 === 0)
          log(
            `[client ${name}] step ${s.step}/${s.steps} loss ${s.loss.toFixed(3)} ${Math.round(s.tokensPerSec)} tok/s`,
          );
      };
      trainers.push(
        o.workers
          ? await WorkerTrainer.start(baseBytes, o.lora, d, onStep)
          : await InlineTrainer.create(baseBytes, o.lora, d, onStep),
      );
    }
    // every hospital shares this one machine: train at most one per core at a time (faster than all at once)
    const sharing = o.workers ? limitConcurrency(trainers, availableParallelism()) : trainers;
    const clients = clientsData.map(
      (c, i) =>
        new FederationClient({
          ledger: ledger.connect(signers[2 + i]!),
          signer: signers[2 + i]!,
          store,
          task,
          trainer: sharing[i]!,
          train,
          pollMs: 100,
          log: (l) => log(`[client ${c.name}] ${l}`),
        }),
    );
    await aggregator.openFirstRound(o.seed);
    const [reports] = await Promise.all([aggregator.run(), ...clients.map((c) => c.run())]);
    const history = await ledger.readTaskHistory(task);
    const localOnly: number[] = [];
    if (o.localOnly) {
      const init = LoraAdapter.init(base.gpt.config, o.lora, o.seed);
      const initBytes = serializeAdapter(base.gpt.config, o.lora, await init.exportWeights(), {
        kind: "init",
        task,
        round: 0,
        baseModelSha256: base.sha256,
      });
      init.dispose();
      log(`[demo] local-only baseline: each hospital alone, ${o.rounds * o.steps} steps`);
      const outs = await Promise.all(
        trainers.map((t, i) =>
          t.trainRound({
            task,
            round: 0,
            identity: identities[i]!,
            startAdapter: initBytes,
            train: { ...train, steps: o.rounds * o.steps, proxMu: 0 },
          }),
        ),
      );
      for (const [i, out] of outs.entries()) {
        const a = LoraAdapter.init(base.gpt.config, o.lora);
        a.assign(parseAdapter(out.adapter, base.gpt.config, o.lora).weights);
        localOnly.push((await evaluateLoss(base.gpt, a, datasets[i]!.heldOutTokens, evalOpts)).perplexity);
        a.dispose();
      }
    }
    const rows: DemoClientRow[] = clientsData.map((c, i) => ({
      client: c.name,
      identity: identities[i]!,
      trainDocs: c.train.length,
      heldOutDocs: c.heldOut.length,
      basePerplexity: baseline[i]!,
      perRoundPerplexity: perRound[i]!,
      finalPerplexity: perRound[i]![perRound[i]!.length - 1]!,
      ...(o.localOnly ? { localOnlyPerplexity: localOnly[i]! } : {}),
    }));
    return {
      task,
      strategy: o.strategy,
      baseModelSha256: base.sha256,
      rows,
      rounds: reports as RoundReport[],
      history,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await Promise.all(trainers.map((t) => t.close()));
    await store.close();
    base.gpt.dispose();
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
  }
}

/** The demo's closing summary: a per-client table and the final adapter's provenance. */
export function formatDemoReport(r: DemoReport): string {
  const lines: string[] = [];
  lines.push("");
  lines.push(`Held-out perplexity per hospital (lower is better), task ${r.task}, strategy ${r.strategy}:`);
  const rounds = r.rows[0]?.perRoundPerplexity.length ?? 0;
  const local = r.rows.every((x) => x.localOnlyPerplexity !== undefined);
  lines.push(
    `  ${"hospital".padEnd(12)} ${"id".padStart(3)} ${"docs".padStart(5)}  ${"base".padStart(8)}  ${Array.from({ length: rounds }, (_, i) => `round ${i + 1}`.padStart(8)).join("  ")}  change${local ? "   local-only" : ""}`,
  );
  for (const row of r.rows) {
    const change = ((row.finalPerplexity / row.basePerplexity - 1) * 100).toFixed(1) + "%";
    lines.push(
      `  ${row.client.padEnd(12)} ${String(row.identity).padStart(3)} ${String(row.trainDocs).padStart(5)}  ${row.basePerplexity.toFixed(1).padStart(8)}  ${row.perRoundPerplexity.map((p) => p.toFixed(1).padStart(8)).join("  ")}  ${change.padStart(6)}${local ? row.localOnlyPerplexity!.toFixed(1).padStart(13) : ""}`,
    );
  }
  const worstBase = Math.max(...r.rows.map((x) => x.basePerplexity));
  const worstFinal = Math.max(...r.rows.map((x) => x.finalPerplexity));
  lines.push(
    `  worst hospital: ${worstBase.toFixed(1)} → ${worstFinal.toFixed(1)} federated${local ? `, ${Math.max(...r.rows.map((x) => x.localOnlyPerplexity!)).toFixed(1)} local-only (same token budget)` : ""}`,
  );
  const last = r.history.rounds[r.history.rounds.length - 1]!;
  const fin = last.finalized!;
  lines.push("");
  lines.push(`Provenance of the final global adapter (round ${last.round}):`);
  lines.push(`  CID ${fin.globalCid}`);
  lines.push(`  sha256 ${fin.globalSha256}  (tx ${fin.transactionHash}, block ${fin.blockNumber})`);
  lines.push(`  started from ${last.startCid}`);
  for (const [i, id] of fin.contributors.entries()) {
    const sub = last.submissions.find((s) => s.identity === id)!;
    const share = Number((fin.weights[i]! * 10000n) / 10n ** 18n) / 100;
    lines.push(
      `  identity ${id} (${sub.signer.slice(0, 10)}…) weight ${share.toFixed(2)}%  ${sub.numExamples} examples  update ${sub.cid}`,
    );
  }
  lines.push(
    `  rounds: ${r.history.rounds.map((x) => `${x.round}: ${x.finalized?.contributors.length ?? 0} contributors`).join(", ")}`,
  );
  lines.push(`Finished in ${r.seconds.toFixed(0)} s.`);
  return lines.join("\n");
}
