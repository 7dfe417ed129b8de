/**
 * `fok demo`: a whole federation in one process — an in-process Hardhat network, an embedded IPFS store, an
 * aggregator and N hospital clients (training in worker threads) on the default medical corpus (WordNet's medical
 * definitions) split by category — then a per-client table and the provenance of the final adapter.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initBackend } from "../model/backend.js";
import { parseBaseModel, readBaseBytes, type BaseModel } from "../model/checkpoint.js";
import { LoraAdapter, DEFAULT_LORA_CONFIG, type LoraConfig } from "../model/lora.js";
import { parseAdapter, serializeAdapter } from "../model/adapter.js";
import { CheckpointError } from "../model/safetensors.js";
import { evaluateLoss } from "../train/evaluate.js";
import type { TrainConfig } from "../train/train.js";
import { loadWordnetMedical } from "../data/corpora.js";
import { partition, splitClients } from "../data/partition.js";
import { tokenizeDocuments } from "../data/tokens.js";
import type { DpParams, PrivacyMode, TaskHistory } from "../chain/index.js";
import { createStore } from "../store/index.js";
import type { RoundReport } from "./aggregator.js";
import type { ClientDataset } from "./local-trainer.js";
import { startLocalFederation, type LocalFederation } from "./local.js";

export interface DemoOptions {
  /** Hospitals (one per WordNet medical category, largest first; at most 6). Default 4. */
  clients: number;
  rounds: number;
  /** Local optimizer steps per client per round. */
  steps: number;
  batchSize: number;
  lr: number;
  strategy: string;
  /** Secure aggregation (masked updates, node/secure) or updates in the clear (default). */
  privacy: PrivacyMode;
  /** Client-level differential privacy (central noise in open mode, distributed in secure); none by default. */
  dp?: DpParams;
  /** The task's clipping bound (default DEFAULT_MAX_UPDATE_NORM). */
  maxUpdateNorm?: number;
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
  batchSize: 4, // windows of the base's context (256 tokens)
  lr: 5e-3,
  strategy: "fedavg",
  privacy: "open",
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
  await initBackend(undefined, true);
  const { base, baseBytes } = await loadDemoBase(o);
  const hospitals = await demoHospitals(o, base);
  const hre = await import("hardhat");
  const { ethers } = await hre.network.create();
  const ownStore = !o.storeDir;
  const storeDir = o.storeDir ?? (await mkdtemp(join(tmpdir(), "fok-demo-store-")));
  const store = await createStore({ dir: storeDir });
  const evaluation = new HeldOutEvaluation(base, o.lora, hospitals, o.log);
  const train = {
    steps: o.steps,
    batchSize: o.batchSize,
    lr: o.lr,
    warmupSteps: Math.min(5, o.steps),
    seed: o.seed,
    proxMu: o.strategy === "fedprox" ? 0.01 : 0,
  };
  let fed: LocalFederation | undefined;
  try {
    fed = await startLocalFederation({
      signers: await ethers.getSigners(),
      store,
      baseBytes,
      baseModelSha256: base.sha256,
      model: base.model.config,
      lora: o.lora,
      hospitals: hospitals.map((h, i) => ({
        name: h.name,
        institution: `hospital:${h.name}`,
        metadataCid: `bafkreidemo${i}`,
        data: h.data,
      })),
      strategy: o.strategy,
      ...{ privacy: o.privacy, dp: o.dp, maxUpdateNorm: o.maxUpdateNorm },
      rounds: o.rounds,
      // secure mode needs at least 2 (a sum of one is that one's update)
      minUpdates: Math.max(o.privacy === "secure" ? 2 : 1, Math.ceil(hospitals.length / 2)),
      train,
      workers: o.workers,
      onStep: (i, s) => {
        if (s.step === s.steps || s.step % 20 === 0) {
          const speed = `${Math.round(s.tokensPerSec)} tok/s`;
          o.log(`[client ${hospitals[i]!.name}] step ${s.step}/${s.steps} loss ${s.loss.toFixed(3)} ${speed}`);
        }
      },
      log: o.log,
      onGlobal: (round, bytes) => evaluation.afterRound(round, bytes),
    });
    o.log(
      `[demo] chain: identities ${fed.identities.join(", ")} registered; task ${fed.task} (${o.strategy}, ` +
        (o.privacy === "secure" ? "secure aggregation, " : "") +
        (o.dp ? `client-level DP with budget ε ${o.dp.epsilonMax} (σ ${o.dp.noiseMultiplier}), ` : "") +
        `${o.rounds} rounds) created; base model pinned as ${fed.baseModelCid}`,
    );
    await evaluation.baseline();
    await fed.openFirstRound({ seed: o.seed });
    const reports = await fed.run();
    const history = await fed.ledger.readTaskHistory(fed.task);
    const localOnly = o.localOnly ? await localOnlyBaseline(o, fed, train, evaluation) : null;
    const rows = evaluation.rows(hospitals, fed.identities, localOnly);
    const seconds = (performance.now() - t0) / 1000;
    return {
      task: fed.task,
      strategy: o.strategy,
      baseModelSha256: base.sha256,
      rows,
      rounds: reports,
      history,
      seconds,
    };
  } finally {
    await fed?.close();
    await store.close();
    base.model.dispose();
    if (ownStore) await rm(storeDir, { recursive: true, force: true });
  }
}

interface DemoHospital {
  name: string;
  trainDocs: number;
  heldOutDocs: number;
  data: ClientDataset & { heldOutTokens: Int32Array };
}

async function loadDemoBase(o: DemoOptions): Promise<{ base: BaseModel; baseBytes: Uint8Array }> {
  let baseBytes: Uint8Array;
  try {
    baseBytes = await readBaseBytes(o.baseDir); // ours, a GPT-2 folder, or a Llama-family Hub folder
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(
      `no base model at ${o.baseDir}/model.safetensors; build one with \`npm run pretrain -- --out ${o.baseDir}\``,
    );
  }
  const base = parseBaseModel(baseBytes);
  const c = base.model.config;
  const width = "nEmbd" in c ? c.nEmbd : c.hiddenSize;
  o.log(`[demo] base model ${base.sha256.slice(0, 18)}… (${c.nLayer} layers, d=${width}, vocab ${c.vocabSize})`);
  return { base, baseBytes };
}

/** The medical part of WordNet, one hospital per category (largest first), each split into train and held-out. */
async function demoHospitals(o: DemoOptions, base: BaseModel): Promise<DemoHospital[]> {
  const docs = await loadWordnetMedical();
  const parts = partition(docs, { kind: "label" }, o.seed)
    .sort((a, b) => b.docs.length - a.docs.length || (a.name < b.name ? -1 : 1))
    .slice(0, Math.max(1, Math.min(o.clients, 6)));
  const hospitals: DemoHospital[] = [];
  for (const c of splitClients(parts, 0.1, o.seed)) {
    const data = {
      trainTokens: await tokenizeDocuments(base.tokenizer, c.train),
      heldOutTokens: await tokenizeDocuments(base.tokenizer, c.heldOut),
      numExamples: c.train.length,
    };
    hospitals.push({ name: c.name, trainDocs: c.train.length, heldOutDocs: c.heldOut.length, data });
  }
  const sizes = hospitals.map((h) => `${h.name} (${h.trainDocs} docs, ${h.data.trainTokens.length} tokens)`);
  o.log(`[demo] ${hospitals.length} hospitals: ${sizes.join(", ")}`);
  return hospitals;
}

/** Every hospital's held-out perplexity: the base model alone, then the global adapter after each round. */
class HeldOutEvaluation {
  private readonly base0: number[] = [];
  private readonly perRound: number[][];

  constructor(
    readonly base: BaseModel,
    private readonly lora: LoraConfig,
    private readonly hospitals: DemoHospital[],
    private readonly log: (line: string) => void,
  ) {
    this.perRound = hospitals.map(() => []);
  }

  async baseline(): Promise<void> {
    for (const i of this.hospitals.keys()) this.base0.push(await this.perplexity(null, i));
  }

  async afterRound(round: number, bytes: Uint8Array): Promise<void> {
    const adapter = loadAdapter(this.base, this.lora, bytes);
    const ppl: string[] = [];
    for (const [i, h] of this.hospitals.entries()) {
      const p = await this.perplexity(adapter, i);
      this.perRound[i]!.push(p);
      ppl.push(`${h.name} ${p.toFixed(1)}`);
    }
    adapter.dispose();
    this.log(`[aggregator] round ${round}: held-out perplexity with the global adapter: ${ppl.join(", ")}`);
  }

  /** Hospital `i`'s held-out perplexity with `adapter` (or the base alone). */
  async perplexity(adapter: LoraAdapter | null, i: number): Promise<number> {
    const evalOpts = { seqLen: this.base.model.contextLength, batchSize: 16 };
    return (await evaluateLoss(this.base.model, adapter, this.hospitals[i]!.data.heldOutTokens, evalOpts)).perplexity;
  }

  rows(hospitals: DemoHospital[], identities: number[], localOnly: number[] | null): DemoClientRow[] {
    return hospitals.map((h, i) => ({
      client: h.name,
      identity: identities[i]!,
      trainDocs: h.trainDocs,
      heldOutDocs: h.heldOutDocs,
      basePerplexity: this.base0[i]!,
      perRoundPerplexity: this.perRound[i]!,
      finalPerplexity: this.perRound[i]![this.perRound[i]!.length - 1]!,
      ...(localOnly ? { localOnlyPerplexity: localOnly[i]! } : {}),
    }));
  }
}

/** Each hospital alone from the same initial adapter, on the same token budget (rounds × steps). */
async function localOnlyBaseline(
  o: DemoOptions,
  fed: LocalFederation,
  train: Partial<TrainConfig>,
  evaluation: HeldOutEvaluation,
): Promise<number[]> {
  const { base } = evaluation;
  const init = LoraAdapter.init(base.model.config, o.lora, o.seed);
  const meta = { kind: "init" as const, task: fed.task, round: 0, baseModelSha256: base.sha256 };
  const initBytes = serializeAdapter(base.model.config, o.lora, await init.exportWeights(), meta);
  init.dispose();
  o.log(`[demo] local-only baseline: each hospital alone, ${o.rounds * o.steps} steps`);
  const steps = o.rounds * o.steps;
  const job = { task: fed.task, round: 0, startAdapter: initBytes, train: { ...train, steps, proxMu: 0 } };
  const outs = await Promise.all(fed.trainers.map((t, i) => t.trainRound({ ...job, identity: fed.identities[i]! })));
  const perplexities: number[] = [];
  for (const [i, out] of outs.entries()) {
    const adapter = loadAdapter(base, o.lora, out.adapter);
    perplexities.push(await evaluation.perplexity(adapter, i));
    adapter.dispose();
  }
  return perplexities;
}

function loadAdapter(base: BaseModel, lora: LoraConfig, bytes: Uint8Array): LoraAdapter {
  const adapter = LoraAdapter.init(base.model.config, lora);
  adapter.assign(parseAdapter(bytes, base.model.config, lora).weights);
  return adapter;
}
