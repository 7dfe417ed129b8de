/**
 * The comparison behind the paper's claim, driven through the federation code itself (clients, aggregator, chain,
 * store — no second training path): on PubMedQA split into hospitals (by specialty, Dirichlet(alpha) over
 * specialties, IID), from one base model, compare the base alone, local-only LoRA per hospital, FedAvg-LoRA,
 * exact-aggregation LoRA, FedProx and centralized LoRA on the pooled data. Every method gets the same token budget
 * per hospital (centralized: the sum). Per hospital: held-out perplexity and yes/no/maybe accuracy; then the worst
 * hospital (Min), the mean and the harmonic mean, the cross-hospital matrix of local adapters, and rounds to
 * convergence; over several seeds as mean ± std.
 */
import { initBackend } from "../model/backend.js";
import { parseBaseModel, readBaseBytes, type BaseModel } from "../model/checkpoint.js";
import { LoraAdapter, DEFAULT_LORA_CONFIG, type LoraConfig } from "../model/lora.js";
import { parseAdapter, serializeAdapter, type LoraWeights } from "../model/adapter.js";
import { evaluateLoss } from "../train/evaluate.js";
import { fairness, probeAccuracy, qaAccuracy, type Fairness } from "../train/qa.js";
import { buildProbe, type ProbeItem } from "../data/probe.js";
import { DECISIONS, loadPubMedQA, qaDocuments, type Decision, type QAItem } from "../data/pubmedqa.js";
import { partition, splitClients, type PartitionSpec } from "../data/partition.js";
import type { Document } from "../data/types.js";
import { summarizePartition, type PartitionSummary } from "../data/summary.js";
import { concatTokens, concatWindowed, fitQaPrompt, qaWindows, tokenizeDocuments } from "../data/tokens.js";
import type { Signer } from "ethers";
import { startLocalFederation, type LocalFederation } from "../federation/local.js";
import { noiseMultiplierFor } from "../dp/accountant.js";
import type { DpParams } from "../chain/index.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { startTrainers } from "../federation/trainer-pool.js";
import { InvalidArgumentError } from "../errors.js";

export type Method = "base" | "local" | "fedavg" | "exact-svd" | "fedprox" | "centralized";
export const METHODS: Method[] = ["base", "local", "fedavg", "exact-svd", "fedprox", "centralized"];
/** A DP-FedAvg row of the experiment, by its budget: `dp-fedavg ε=8`, `dp-fedavg ε=∞`. */
export type DpMethod = `dp-fedavg ε=${string}`;

/** DP-FedAvg rows: client-level DP with central noise (node/dp), one run per budget at the same rounds and steps. */
export interface ExperimentDp {
  /** Budgets ε at `delta` over the experiment's rounds; Infinity: clipping and uniform weights without noise. */
  epsilons: number[];
  delta: number;
  /** The clipping norm C (the task's max update norm) of the DP rows. */
  clip: number;
}

/** The noise multiplier that ε = ∞ stands for: the chain needs σ > 0; 1e-6 × C is far below any LoRA value. */
export const NO_NOISE = 1e-6;

export function dpMethodName(epsilon: number): DpMethod {
  return `dp-fedavg ε=${epsilon === Infinity ? "∞" : epsilon}`;
}

export interface ExperimentConfig {
  data: string;
  baseDir: string;
  partitions: PartitionSpec[];
  methods: Method[];
  seeds: number[];
  rounds: number;
  /** Local steps per round; local-only trains rounds × steps, centralized clients × rounds × steps. */
  stepsPerRound: number;
  /**
   * What a hospital trains on: "qa" = one window per training item ending on its yes/no/maybe answer, in the
   * format the accuracy is scored in (supervised fine-tuning); "text" = random windows of its documents (language
   * modelling only: the answer token is then ~1 in 400 training targets and accuracy barely moves).
   */
  trainOn: "qa" | "text";
  /** With trainOn "qa": loss weight of the answer token(s) against 1 for each context token (see qaWindows). */
  answerWeight: number;
  batchSize: number;
  lr: number;
  proxMu: number;
  heldOutFraction: number;
  /** Held-out QA items scored per hospital (0 = all). */
  qaPerClient: number;
  /** Held-out windows (of the base's context) scored for perplexity per hospital (0 = all). */
  evalSequences: number;
  /** Knowledge-flow probe items built from each hospital's training documents (node/data/probe.ts; 0 = none). */
  probeItems: number;
  workers: boolean;
  lora: LoraConfig;
  /** DP-FedAvg rows after the methods (none by default; `--dp` runs DP_EXPERIMENT). */
  dp?: ExperimentDp | null;
}

export const DEFAULT_EXPERIMENT: ExperimentConfig = {
  data: "../shared/data/pubmedqa/ori_pqal.json",
  baseDir: "models/base",
  partitions: [{ kind: "label" }, { kind: "dirichlet", clients: 5, alpha: 0.1 }],
  // the paper's comparison; FedProx and exact-SVD on request (each adds about 100 s a run here)
  methods: ["base", "local", "fedavg", "centralized"],
  seeds: [1, 2, 3],
  rounds: 4,
  stepsPerRound: 4,
  trainOn: "qa",
  answerWeight: 255,
  batchSize: 4,
  lr: 5e-3,
  proxMu: 0.01,
  heldOutFraction: 0.2,
  qaPerClient: 20,
  evalSequences: 8,
  probeItems: 16,
  workers: true,
  // every projection and the output head: a LoRA below a frozen tied head cannot move the answer (test/train/qa.ts)
  lora: { ...DEFAULT_LORA_CONFIG, targetModules: ["c_attn", "o", "c_fc", "mlp.c_proj", "lm_head"] },
};

/**
 * The utility cost of client-level DP (`npm run experiment -- --dp`): on the specialty partition, FedAvg and
 * DP-FedAvg at ε = ∞, 8 and 1 (δ 1e-5) with the default experiment's rounds, steps and data per hospital. C = 3:
 * just below the median norm of a hospital's round update there (3.37 over a first run's rounds; the report lists
 * them), the usual choice for DP-FedAvg.
 */
export const DP_EXPERIMENT: Partial<ExperimentConfig> = {
  partitions: [{ kind: "label" }],
  methods: ["base", "fedavg"],
  dp: { epsilons: [Infinity, 8, 1], delta: 1e-5, clip: 3 },
};

export const QUICK: Partial<ExperimentConfig> = {
  partitions: [{ kind: "label" }],
  methods: METHODS,
  seeds: [1],
  rounds: 2,
  stepsPerRound: 2,
  qaPerClient: 3,
  evalSequences: 4,
  probeItems: 4,
};

export interface ClientResult {
  client: string;
  perplexity: number;
  accuracy: number;
  /** How often the model answered yes, no and maybe on this hospital's QA items. */
  answers?: Record<Decision, number>;
  /** Probe accuracy of the model this hospital ends with on its own items, and on every hospital's (the mean). */
  probeOwn?: number;
  probeCross?: number;
}

export interface MethodResult {
  method: Method | DpMethod;
  clients: ClientResult[];
  worstPerplexity: number;
  meanPerplexity: number;
  minAccuracy: number;
  meanAccuracy: number;
  hmeanAccuracy: number;
  /**
   * The knowledge-flow probe: matrix[k][j] = accuracy of the model hospital k ends with on hospital j's items; own
   * = the diagonal, cross = each row's mean; Min-Acc and H-mean over hospitals of each.
   */
  probe?: { matrix: number[][]; own: Fairness; cross: Fairness };
  /** Federated methods: mean held-out loss over hospitals after each round. */
  curve?: number[];
  /** Per hospital, held-out loss after each round. */
  clientCurves?: number[][];
  /** FedAvg: Min-Acc (the worst hospital's QA accuracy) with the global adapter after each round. */
  minAccuracyCurve?: number[];
  roundsToConvergence?: number;
  /** Federated methods: each hospital's update norm ‖Δ‖₂ per round, before clipping (from its adapter's metrics). */
  updateNorms?: number[][];
  /** DP rows: the settings, the ε the chain recorded after the last round, and d (LoRA values noised). */
  dp?: { epsilon: number; noiseMultiplier: number; delta: number; clip: number; spent: number; values: number };
}

export interface RunResult {
  partition: string;
  seed: number;
  /** Tokens per training window (the base model's context). */
  seqLen: number;
  summary: PartitionSummary;
  methods: MethodResult[];
  /** Local-only: matrix[i][j] = perplexity of hospital i's adapter on hospital j's held-out set. */
  crossClient?: { clients: string[]; perplexity: number[][] };
  /** Each hospital answering every question with its training majority: accuracy per hospital, Min, mean, H-mean. */
  majority?: { clients: ClientResult[]; fairness: Fairness };
}

export function partitionName(p: PartitionSpec): string {
  return p.kind === "label"
    ? "specialty"
    : p.kind === "dirichlet"
      ? `dirichlet-${p.alpha}`
      : p.kind === "quantity"
        ? "quantity"
        : "iid";
}

interface Hospital {
  name: string;
  train: Int32Array;
  /** Window starts in `train` and loss weights for supervised data; absent = any offset, weight 1. */
  trainStarts?: Int32Array;
  trainWeights?: Float32Array;
  heldOut: Int32Array;
  qa: QAItem[];
  /** Knowledge-flow probe items from this hospital's training documents. */
  probe: ProbeItem[];
  numExamples: number;
  /** The most frequent answer in this hospital's training items, and its accuracy on the held-out QA items. */
  majority: Decision;
  majorityAccuracy: number;
}

/** The most frequent decision among items (ties: yes, then no, then maybe). */
function majorityDecision(items: readonly QAItem[]): Decision {
  const counts = DECISIONS.map((d) => items.filter((q) => q.decision === d).length);
  return DECISIONS[counts.indexOf(Math.max(...counts))]!;
}

/** Refuses a config (e.g. from a --config file) that would run something other than it says. */
export function validateExperimentConfig(cfg: ExperimentConfig): void {
  for (const k of ["rounds", "stepsPerRound", "batchSize"] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] < 1)
      throw new InvalidArgumentError(`experiment ${k} must be a positive integer, got ${cfg[k]}`);
  }
  if (cfg.seeds.length === 0) throw new InvalidArgumentError("experiment seeds is empty");
  const unknown = cfg.methods.filter((m) => !METHODS.includes(m));
  if (unknown.length > 0)
    throw new InvalidArgumentError(
      `unknown experiment methods ${JSON.stringify(unknown)}; choose from ${METHODS.join(", ")}`,
    );
  const dp = cfg.dp;
  if (dp && (!dp.epsilons.every((e) => e > 0) || !(dp.delta > 0 && dp.delta < 1) || !(dp.clip > 0)))
    throw new InvalidArgumentError(`experiment dp needs epsilons > 0, 0 < delta < 1 and clip > 0`);
  if (cfg.trainOn !== "qa" && cfg.trainOn !== "text")
    throw new InvalidArgumentError(`experiment trainOn must be "qa" or "text", got ${JSON.stringify(cfg.trainOn)}`);
  if (!(cfg.answerWeight >= 0) || !Number.isFinite(cfg.answerWeight))
    throw new InvalidArgumentError(
      `experiment answerWeight must be a finite non-negative number, got ${cfg.answerWeight}`,
    );
}

export async function runExperiment(cfg: ExperimentConfig, log: (l: string) => void): Promise<RunResult[]> {
  validateExperimentConfig(cfg);
  await initBackend(undefined, true);
  const baseBytes = await readBaseBytes(cfg.baseDir);
  const base = parseBaseModel(baseBytes);
  const { items } = await loadPubMedQA(cfg.data);
  const hre = await import("hardhat");
  const { ethers } = await hre.network.create();
  const x: Context = {
    cfg,
    base,
    baseBytes,
    byId: new Map(items.map((q) => [`pubmedqa/${q.id}`, q])),
    docs: qaDocuments(items),
    signers: await ethers.getSigners(),
    log,
  };
  const results: RunResult[] = [];
  for (const spec of cfg.partitions) for (const seed of cfg.seeds) results.push(await runPartition(x, spec, seed));
  base.model.dispose();
  return results;
}

/** What every run of one experiment shares. */
interface Context {
  cfg: ExperimentConfig;
  base: BaseModel;
  baseBytes: Uint8Array;
  byId: Map<string, QAItem>;
  docs: Document[];
  signers: Signer[];
  log: (l: string) => void;
}

/** Every method on one partition and seed. */
async function runPartition(x: Context, spec: PartitionSpec, seed: number): Promise<RunResult> {
  const { cfg, base, log } = x;
  const split = splitClients(partition(x.docs, spec, seed), cfg.heldOutFraction, seed);
  const summary = await summarizePartition(split, (t) => base.tokenizer.encode(t));
  const hospitals = await hospitalsOf(x, split, seed);
  const name = partitionName(spec);
  log(`[experiment] ${name}, seed ${seed}: ${hospitals.map((h) => `${h.name} ${h.numExamples}`).join(", ")}`);
  const majority = hospitals.map((h) => ({ client: h.name, perplexity: NaN, accuracy: h.majorityAccuracy }));
  const run: RunResult = {
    partition: name,
    seed,
    seqLen: base.model.contextLength,
    summary,
    methods: [],
    majority: { clients: majority, fairness: fairness(majority.map((c) => c.accuracy)) },
  };
  const initBytes = await initAdapter(base, cfg.lora, seed);
  let baseScore: MethodResult | undefined; // the federated methods' convergence starts from the base's loss
  for (const method of cfg.methods) {
    const t0 = performance.now();
    if (method === "base") {
      run.methods.push(await score(method, base, cfg, null, hospitals));
    } else if (method === "local" || method === "centralized") {
      run.methods.push(await trainAlone(x, method, hospitals, initBytes, seed, run));
    } else {
      baseScore ??=
        run.methods.find((m) => m.method === "base") ?? (await score("base", base, cfg, null, hospitals, false));
      run.methods.push(await federate(x, method, initBytes, hospitals, seed, baseScore, null));
    }
    logMethod(log, run.methods[run.methods.length - 1]!, t0);
  }
  for (const epsilon of cfg.dp?.epsilons ?? []) {
    const t0 = performance.now();
    baseScore ??=
      run.methods.find((m) => m.method === "base") ?? (await score("base", base, cfg, null, hospitals, false));
    run.methods.push(await federate(x, "fedavg", initBytes, hospitals, seed, baseScore, epsilon));
    logMethod(log, run.methods[run.methods.length - 1]!, t0);
  }
  return run;
}

function logMethod(log: (l: string) => void, m: MethodResult, t0: number) {
  const probe = m.probe
    ? `, probe Min-Acc own ${(m.probe.own.min * 100).toFixed(1)}% cross ${(m.probe.cross.min * 100).toFixed(1)}%`
    : "";
  log(
    `[experiment]   ${m.method.padEnd(11)} worst ppl ${m.worstPerplexity.toFixed(1)}, ` +
      `mean ppl ${m.meanPerplexity.toFixed(1)}, Min-Acc ${(m.minAccuracy * 100).toFixed(1)}%, ` +
      `mean acc ${(m.meanAccuracy * 100).toFixed(1)}%${probe} (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}

/** Each hospital's training data (text windows, or supervised QA windows), held-out tokens and QA items. */
async function hospitalsOf(x: Context, split: ReturnType<typeof splitClients>, seed: number): Promise<Hospital[]> {
  const { cfg, base } = x;
  const hospitals: Hospital[] = [];
  for (const c of split) {
    const qa = c.heldOut.map((d) => x.byId.get(d.id)!).slice(0, cfg.qaPerClient || undefined);
    const heldOut = await tokenizeDocuments(base.tokenizer, c.heldOut);
    const trainItems = c.train.map((d) => x.byId.get(d.id)!);
    // the probe asks about the text the hospital trains on: with QA windows, each question and its context's start
    const trained =
      cfg.trainOn === "qa"
        ? await Promise.all(
            trainItems.map(async (q, i) => ({
              id: c.train[i]!.id,
              text: await base.tokenizer.decode(await fitQaPrompt(base.tokenizer, q, base.model.contextLength - 1)),
            })),
          )
        : c.train;
    const probe = buildProbe(c.name, trained, { items: cfg.probeItems, seed });
    const majority = majorityDecision(trainItems);
    const common = {
      name: c.name,
      heldOut,
      qa,
      probe,
      numExamples: c.train.length,
      majority,
      majorityAccuracy: qa.filter((q) => q.decision === majority).length / qa.length,
    };
    if (cfg.trainOn === "qa") {
      const w = await qaWindows(base.tokenizer, trainItems, base.model.contextLength, cfg.answerWeight);
      hospitals.push({ ...common, train: w.tokens, trainStarts: w.starts, trainWeights: w.weights });
    } else hospitals.push({ ...common, train: await tokenizeDocuments(base.tokenizer, c.train) });
  }
  return hospitals;
}

/**
 * Local-only (each hospital alone; also fills the run's cross-hospital matrix) or centralized (the pooled data),
 * on the same token budget per hospital as the federated methods.
 */
async function trainAlone(
  x: Context,
  method: "local" | "centralized",
  hospitals: Hospital[],
  initBytes: Uint8Array,
  seed: number,
  run: RunResult,
): Promise<MethodResult> {
  const { cfg, base } = x;
  const datasets = method === "local" ? hospitals : [pool(hospitals)];
  const budget = cfg.rounds * cfg.stepsPerRound;
  const steps = method === "local" ? budget : hospitals.length * budget;
  const train = { batchSize: cfg.batchSize, lr: cfg.lr, warmupSteps: 2, seed, steps };
  const trainers = await startTrainers(x.baseBytes, cfg.lora, datasets.map(datasetOf), { workers: cfg.workers });
  const job = { task: 0, round: 0, identity: 0, startAdapter: initBytes, train };
  const outs = await Promise.all(trainers.map((t) => t.trainRound(job)));
  await Promise.all(trainers.map((t) => t.close()));
  const adapters = outs.map((o) => parseAdapter(o.adapter, base.model.config, cfg.lora).weights);
  if (method === "centralized") return score(method, base, cfg, adapters[0]!, hospitals);
  // each hospital's own adapter on its own held-out set; and the cross-hospital matrix
  const per = [];
  const matrix: number[][] = [];
  const probeMatrix: number[][] = [];
  for (const [i, h] of hospitals.entries()) {
    const a = load(base, cfg.lora, adapters[i]!);
    probeMatrix.push(await probeRow(base, a, hospitals));
    per.push({
      client: h.name,
      perplexity: (await evaluateLoss(base.model, a, h.heldOut, evalOpts(base, cfg))).perplexity,
      ...(await answered(base, a, h)),
    });
    const row: number[] = [];
    for (const other of hospitals)
      row.push((await evaluateLoss(base.model, a, other.heldOut, evalOpts(base, cfg))).perplexity);
    matrix.push(row);
    a.dispose();
  }
  run.crossClient = { clients: hospitals.map((h) => h.name), perplexity: matrix };
  return summarize(method, per, probeMatrix);
}

/** DP settings of a DP-FedAvg row at budget `epsilon` over the experiment's rounds. */
function dpParams(cfg: ExperimentConfig, epsilon: number): DpParams {
  const delta = cfg.dp!.delta;
  if (epsilon === Infinity) return { noiseMultiplier: NO_NOISE, delta, epsilonMax: 1e13 };
  const sigma = noiseMultiplierFor(epsilon, { sampleRate: 1, steps: cfg.rounds, delta });
  return { noiseMultiplier: Math.ceil(sigma * 1e6) / 1e6, delta, epsilonMax: epsilon };
}

/** A federated method through the federation code; with `epsilon`, DP-FedAvg at that budget (central noise). */
async function federate(
  x: Context,
  method: Method,
  initBytes: Uint8Array,
  hospitals: Hospital[],
  seed: number,
  baseScore: MethodResult,
  epsilon: number | null,
): Promise<MethodResult> {
  const { cfg, base } = x;
  const clientCurves: number[][] = hospitals.map(() => []);
  const minAccuracyCurve: number[] = [];
  let lastGlobal: LoraWeights | null = null;
  const dp = epsilon === null ? undefined : dpParams(cfg, epsilon);
  const fed = await startLocalFederation({
    signers: x.signers,
    baseBytes: x.baseBytes,
    baseModelSha256: base.sha256,
    model: base.model.config,
    lora: cfg.lora,
    hospitals: hospitals.map((h) => ({ name: h.name, metadataCid: "bafkreiexperiment", data: datasetOf(h) })),
    strategy: method,
    rounds: cfg.rounds,
    roundDuration: 86_400,
    dp,
    ...(dp && {
      maxUpdateNorm: cfg.dp!.clip,
      noiseSeed: sha256(new TextEncoder().encode(`fok experiment noise ${seed} ${epsilon}`)),
    }),
    train: {
      steps: cfg.stepsPerRound,
      batchSize: cfg.batchSize,
      lr: cfg.lr,
      warmupSteps: 2,
      seed,
      proxMu: method === "fedprox" ? cfg.proxMu : 0,
    },
    workers: cfg.workers,
    pollMs: 50,
    onGlobal: async (_round, bytes) => {
      lastGlobal = parseAdapter(bytes, base.model.config, cfg.lora).weights;
      // Min-Acc per round for FedAvg only: scoring every hospital's questions each round costs as much as training
      const min = await evaluateRound(x, lastGlobal, hospitals, clientCurves, method === "fedavg" && !dp);
      if (min !== null) minAccuracyCurve.push(min);
    },
  });
  let updateNorms: number[][];
  let spent: number;
  try {
    // the initial adapter is the same for every method: round 1 opens from it
    await fed.openFirstRound({ initialAdapter: initBytes });
    await fed.run();
    updateNorms = await roundUpdateNorms(fed, base, cfg);
    spent = (await fed.ledger.dp(fed.task))?.spent ?? 0;
  } finally {
    await fed.close();
  }
  const curve = clientCurves[0]!.map((_, r) => clientCurves.reduce((s, c) => s + c[r]!, 0) / clientCurves.length);
  const name = epsilon === null ? method : dpMethodName(epsilon);
  const result = await score(name, base, cfg, lastGlobal!, hospitals);
  const convergence = roundsToConvergence(curve, baseScore, cfg.rounds);
  const perRound = minAccuracyCurve.length ? { minAccuracyCurve } : {};
  const values = [...lastGlobal!.values()].reduce((n, w) => n + w.A.length + w.B.length, 0);
  const dpResult = dp && { epsilon: epsilon!, ...dp, clip: cfg.dp!.clip, spent, values };
  return {
    ...result,
    curve,
    clientCurves,
    ...perRound,
    roundsToConvergence: convergence,
    updateNorms,
    ...(dpResult && { dp: dpResult }),
  };
}

/** A round's global adapter on every hospital's held-out loss (appended to its curve); Min-Acc when asked. */
async function evaluateRound(
  x: Context,
  global: LoraWeights,
  hospitals: Hospital[],
  clientCurves: number[][],
  withAccuracy: boolean,
): Promise<number | null> {
  const { base, cfg } = x;
  const a = load(base, cfg.lora, global);
  const accuracies: number[] = [];
  for (const [i, h] of hospitals.entries()) {
    clientCurves[i]!.push((await evaluateLoss(base.model, a, h.heldOut, evalOpts(base, cfg))).meanLoss);
    if (withAccuracy) accuracies.push((await qaAccuracy(base.model, a, base.tokenizer, h.qa)).accuracy);
  }
  a.dispose();
  return accuracies.length ? Math.min(...accuracies) : null;
}

/** Each round's update norms before clipping, per hospital, from the metrics each client put in its adapter. */
async function roundUpdateNorms(fed: LocalFederation, base: BaseModel, cfg: ExperimentConfig): Promise<number[][]> {
  const h = await fed.ledger.readTaskHistory(fed.task);
  const norms: number[][] = [];
  for (const r of h.rounds) {
    const row: number[] = [];
    for (const s of r.submissions) {
      const meta = parseAdapter(await fed.store.get(s.cid), base.model.config, cfg.lora).metadata;
      const m = JSON.parse(meta.metrics ?? "{}") as { updateNorm?: number; clippedFrom?: number | null };
      row.push(m.clippedFrom ?? m.updateNorm ?? NaN);
    }
    norms.push(row);
  }
  return norms;
}

/** First round that gets 90% of the way from the base's mean log-perplexity to the final loss (else all rounds). */
function roundsToConvergence(curve: number[], baseScore: MethodResult, rounds: number): number {
  const final = curve[curve.length - 1]!;
  const start = baseScore.clients.reduce((s, c) => s + Math.log(c.perplexity), 0) / baseScore.clients.length;
  const target = start - 0.9 * (start - final);
  return curve.findIndex((l) => l <= target) + 1 || rounds;
}

async function score(
  method: Method | DpMethod,
  base: BaseModel,
  cfg: ExperimentConfig,
  weights: LoraWeights | null,
  hospitals: Hospital[],
  withQa = true,
): Promise<MethodResult> {
  const a = weights ? load(base, cfg.lora, weights) : null;
  const per: ClientResult[] = [];
  for (const h of hospitals) {
    per.push({
      client: h.name,
      perplexity: (await evaluateLoss(base.model, a, h.heldOut, evalOpts(base, cfg))).perplexity,
      ...(withQa ? await answered(base, a, h) : { accuracy: NaN }),
    });
  }
  const row = withQa ? await probeRow(base, a, hospitals) : null;
  a?.dispose();
  return summarize(method, per, row ? hospitals.map(() => row) : undefined);
}

/** One model's QA accuracy on a hospital's held-out items and how often it gave each answer. */
async function answered(base: BaseModel, a: LoraAdapter | null, h: Hospital) {
  const r = await qaAccuracy(base.model, a, base.tokenizer, h.qa);
  const answers = Object.fromEntries(DECISIONS.map((d) => [d, r.predictions.filter((p) => p === d).length]));
  return { accuracy: r.accuracy, answers: answers as Record<Decision, number> };
}

/** One model's probe accuracy on each hospital's items (scored in one pass, so batches fill). */
async function probeRow(base: BaseModel, a: LoraAdapter | null, hospitals: Hospital[]): Promise<number[]> {
  const { predictions } = await probeAccuracy(
    base.model,
    a,
    base.tokenizer,
    hospitals.flatMap((h) => h.probe),
  );
  let k = 0;
  return hospitals.map((h) => {
    const correct = h.probe.filter((item) => predictions[k++] === item.answer).length;
    return h.probe.length ? correct / h.probe.length : NaN;
  });
}

function summarize(method: Method | DpMethod, per: ClientResult[], probeMatrix?: number[][]): MethodResult {
  const ppl = per.map((c) => c.perplexity);
  const acc = fairness(per.map((c) => c.accuracy));
  const result: MethodResult = {
    method,
    clients: per,
    worstPerplexity: Math.max(...ppl),
    meanPerplexity: ppl.reduce((a, b) => a + b, 0) / ppl.length,
    minAccuracy: acc.min,
    meanAccuracy: acc.mean,
    hmeanAccuracy: acc.hmean,
  };
  if (!probeMatrix || probeMatrix.every((r) => r.every(Number.isNaN))) return result;
  per.forEach((c, k) => {
    c.probeOwn = probeMatrix[k]![k]!;
    c.probeCross = probeMatrix[k]!.reduce((s, v) => s + v, 0) / probeMatrix[k]!.length;
  });
  return {
    ...result,
    probe: {
      matrix: probeMatrix,
      own: fairness(per.map((c) => c.probeOwn!)),
      cross: fairness(per.map((c) => c.probeCross!)),
    },
  };
}

function load(base: BaseModel, lora: LoraConfig, w: LoraWeights): LoraAdapter {
  const a = LoraAdapter.init(base.model.config, lora);
  a.assign(w);
  return a;
}

const evalOpts = (base: BaseModel, cfg: ExperimentConfig) => ({
  seqLen: base.model.contextLength,
  batchSize: 16,
  maxSequences: cfg.evalSequences,
});

async function initAdapter(base: BaseModel, lora: LoraConfig, seed: number): Promise<Uint8Array> {
  const a = LoraAdapter.init(base.model.config, lora, seed);
  const bytes = serializeAdapter(base.model.config, lora, await a.exportWeights(), {
    kind: "init",
    task: 0,
    round: 0,
    baseModelSha256: base.sha256,
  });
  a.dispose();
  return bytes;
}

function pool(hospitals: Hospital[]): Hospital {
  const numExamples = hospitals.reduce((s, h) => s + h.numExamples, 0);
  if (hospitals.every((h) => h.trainStarts)) {
    const w = concatWindowed(
      hospitals.map((h) => ({ tokens: h.train, starts: h.trainStarts!, weights: h.trainWeights! })),
    );
    return {
      name: "pooled",
      train: w.tokens,
      trainStarts: w.starts,
      trainWeights: w.weights,
      heldOut: new Int32Array(0),
      qa: [],
      probe: [],
      numExamples,
      majority: "yes",
      majorityAccuracy: NaN,
    };
  }
  return {
    name: "pooled",
    train: concatTokens(hospitals.map((h) => h.train)),
    heldOut: new Int32Array(0),
    qa: [],
    probe: [],
    numExamples,
    majority: "yes",
    majorityAccuracy: NaN,
  };
}

function datasetOf(h: Hospital) {
  return {
    trainTokens: h.train,
    trainWindowStarts: h.trainStarts,
    trainLossWeights: h.trainWeights,
    numExamples: h.numExamples,
  };
}
