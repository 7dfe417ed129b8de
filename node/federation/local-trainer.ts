/**
 * One client's local work for one round, with no I/O but the bytes it is handed: parse and check the starting
 * adapter, train LoRA on the client's tokens, and return the new adapter's bytes and the client's metrics. Runs in
 * the client's thread or in a worker (worker.ts) so several clients use several cores.
 */
import { parseBaseModel, type BaseModel } from "../model/checkpoint.js";
import { initBackend } from "../model/backend.js";
import { LoraAdapter, type LoraConfig } from "../model/lora.js";
import { parseAdapter, serializeAdapter } from "../model/adapter.js";
import { train, type TrainConfig } from "../train/train.js";
import { evaluateLoss } from "../train/evaluate.js";
import type { GradientPool } from "../train/parallel.js";
import { InvalidArgumentError } from "../errors.js";
import { clipUpdate } from "../aggregate/index.js";

export interface RoundJob {
  task: number;
  round: number;
  identity: number;
  /** The verified bytes of the round's starting (global) adapter. */
  startAdapter: Uint8Array;
  train: Partial<TrainConfig>;
  /** The task's bound on ‖update − start‖: a larger update is scaled back to it (clipped) before it is written. */
  maxUpdateNorm?: number;
}

export interface ClientMetrics {
  task: number;
  round: number;
  identity: number;
  numExamples: number;
  trainTokens: number;
  steps: number;
  /** Held-out loss of the starting adapter and of the new one, on this client's own held-out text. */
  heldOutLossBefore: number | null;
  heldOutLossAfter: number | null;
  trainLossEnd: number;
  /** ‖update − start‖ of the adapter submitted (after clipping). */
  updateNorm: number;
  /** The norm before clipping to the task's bound; null when the update was within it. */
  clippedFrom: number | null;
}

export interface RoundOutput {
  adapter: Uint8Array;
  /** Everything in here is deterministic: it goes into the adapter's bytes. */
  metrics: ClientMetrics;
  /** Wall-clock speed, for logs only. */
  tokensPerSec: number;
}

export interface ClientDataset {
  trainTokens: Int32Array;
  /** Where training windows may start in trainTokens (supervised examples, see train.ts); default anywhere. */
  trainWindowStarts?: Int32Array;
  /** Per-token loss weights parallel to trainTokens (see train.ts); default 1 everywhere. */
  trainLossWeights?: Float32Array;
  heldOutTokens?: Int32Array;
  /** Documents this client trains on (what it reports as numExamples). */
  numExamples: number;
}

export class LocalTrainer {
  private constructor(
    private readonly base: BaseModel,
    private readonly lora: LoraConfig,
    private readonly data: ClientDataset,
    private readonly onStep?: (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => void,
    private readonly pool?: GradientPool,
  ) {}

  static async create(
    baseBytes: Uint8Array,
    lora: LoraConfig,
    data: ClientDataset,
    onStep?: LocalTrainer["onStep"],
  ): Promise<LocalTrainer> {
    await initBackend(undefined, true);
    return new LocalTrainer(parseBaseModel(baseBytes), lora, data, onStep);
  }

  /**
   * A trainer on a base model already loaded in this thread; takes ownership of it. With `pool`, each micro-batch
   * is split over its threads (data parallelism; its workers hold the same base).
   */
  static fromBase(
    base: BaseModel,
    lora: LoraConfig,
    data: ClientDataset,
    onStep?: LocalTrainer["onStep"],
    pool?: GradientPool,
  ): LocalTrainer {
    return new LocalTrainer(base, lora, data, onStep, pool);
  }

  get baseSha256(): string {
    return this.base.sha256;
  }

  async trainRound(job: RoundJob): Promise<RoundOutput> {
    const parsed = parseAdapter(job.startAdapter, this.base.model.config, this.lora);
    if (parsed.metadata.baseModelSha256 !== this.base.sha256) {
      throw new InvalidArgumentError(
        `starting adapter is for base model ${parsed.metadata.baseModelSha256}, not ${this.base.sha256}`,
      );
    }
    const adapter = LoraAdapter.init(this.base.model.config, this.lora);
    try {
      adapter.assign(parsed.weights);
      const cfg = {
        seqLen: this.base.model.contextLength,
        ...job.train,
        seed: (job.train.seed ?? 0) + job.round * 1000 + job.identity,
      };
      const evalOpts = { seqLen: cfg.seqLen, batchSize: 16 };
      const held = this.data.heldOutTokens;
      const before = held ? (await evaluateLoss(this.base.model, adapter, held, evalOpts)).meanLoss : null;
      const result = await train({
        gpt: this.base.model,
        lora: adapter,
        tokens: this.data.trainTokens,
        windowStarts: this.data.trainWindowStarts,
        lossWeights: this.data.trainLossWeights,
        config: cfg,
        onStep: this.onStep,
        pool: this.pool,
      });
      const clip = clipUpdate(await adapter.exportWeights(), parsed.weights, job.maxUpdateNorm ?? Infinity);
      if (clip.clippedFrom !== null) adapter.assign(clip.weights);
      const after = held ? (await evaluateLoss(this.base.model, adapter, held, evalOpts)).meanLoss : null;
      const metrics: ClientMetrics = {
        task: job.task,
        round: job.round,
        identity: job.identity,
        numExamples: this.data.numExamples,
        trainTokens: this.data.trainTokens.length,
        steps: result.steps,
        heldOutLossBefore: before === null ? null : round6(before),
        heldOutLossAfter: after === null ? null : round6(after),
        trainLossEnd: round6(result.tailLoss),
        updateNorm: round6(clip.norm),
        clippedFrom: clip.clippedFrom === null ? null : round6(clip.clippedFrom),
      };
      const bytes = serializeAdapter(this.base.model.config, this.lora, clip.weights, {
        kind: "update",
        task: job.task,
        round: job.round,
        identity: job.identity,
        baseModelSha256: this.base.sha256,
        metrics: canonicalJson(metrics),
      });
      return { adapter: bytes, metrics, tokensPerSec: Math.round(result.tokensPerSec) };
    } finally {
      adapter.dispose();
    }
  }
}

/** JSON with sorted keys: the same object always gives the same text (and digest). */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_, v) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );
}

function round6(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}
