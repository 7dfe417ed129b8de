/**
 * The local training loop: AdamW with decoupled weight decay, global-norm gradient clipping, linear warm-up then
 * cosine decay, gradient accumulation, periodic evaluation on held-out tokens with early stopping, and an optional
 * FedProx proximal term. Trains exactly the variables it is given: the LoRA adapter's (the base stays frozen,
 * bit for bit) or, for pre-training, the whole model's.
 */
import { tf } from "../model/backend.js";
import type { CausalLM } from "../model/causal-lm.js";
import type { LoraAdapter } from "../model/lora.js";
import { InvalidArgumentError } from "../errors.js";
import { evaluateLoss, type EvalResult } from "./evaluate.js";
import { mulberry32 } from "../random.js";
import type { BatchRows, GradientPool, SliceGradients } from "./parallel.js";

export interface TrainConfig {
  /** Optimizer steps (each over gradAccum micro-batches). */
  steps: number;
  /** Sequences per micro-batch. */
  batchSize: number;
  /** Tokens per sequence (<= the model's context). */
  seqLen: number;
  /** Peak learning rate. */
  lr: number;
  /** Linear warm-up steps from 0 to lr. */
  warmupSteps: number;
  /** Cosine decay ends at lr · minLrRatio. */
  minLrRatio: number;
  /** AdamW decoupled weight decay. */
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Clip the global gradient norm to this (0 = off). */
  gradClip: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Evaluate on held-out tokens every this many steps (0 = only at the end). */
  evalEvery: number;
  /** Held-out sequences per evaluation (0 = all). */
  evalSequences: number;
  /** Stop after this many evaluations without improvement (0 = never). */
  earlyStopPatience: number;
  /** FedProx μ: adds μ/2·||w − w_start||² over the trained variables (0 = off). */
  proxMu: number;
  /** FFA-LoRA: train B only; A stays at the round's start (the task's seeded initialisation). */
  freezeA: boolean;
  /** Seeds batch sampling and dropout. */
  seed: number;
}

export const DEFAULT_TRAIN_CONFIG: TrainConfig = {
  steps: 100,
  batchSize: 8,
  seqLen: 64,
  lr: 3e-3,
  warmupSteps: 10,
  minLrRatio: 0.1,
  weightDecay: 0,
  beta1: 0.9,
  beta2: 0.999,
  eps: 1e-8,
  gradClip: 1,
  gradAccum: 1,
  evalEvery: 0,
  evalSequences: 0,
  earlyStopPatience: 0,
  proxMu: 0,
  freezeA: false,
  seed: 0,
};

export interface StepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokensPerSec: number;
  eval?: EvalResult;
}

export interface TrainResult {
  steps: number;
  finalLoss: number;
  /** Mean training loss over the last 10% of steps. */
  tailLoss: number;
  evals: { step: number; result: EvalResult }[];
  stoppedEarly: boolean;
  tokensPerSec: number;
  seconds: number;
  /** Tokens seen (steps · accum · batch · seqLen). */
  tokens: number;
}

/** Learning rate at `step` (0-based): linear warm-up, then cosine down to lr · minLrRatio. */
export function learningRate(
  c: Pick<TrainConfig, "lr" | "warmupSteps" | "minLrRatio" | "steps">,
  step: number,
): number {
  if (step < c.warmupSteps) return (c.lr * (step + 1)) / c.warmupSteps;
  const span = Math.max(1, c.steps - c.warmupSteps);
  const progress = Math.min(1, (step - c.warmupSteps) / span);
  return c.lr * (c.minLrRatio + (1 - c.minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
}

export interface TrainOptions {
  gpt: CausalLM;
  /** The adapter to train; null trains every GPT weight (pre-training). */
  lora: LoraAdapter | null;
  /** Training tokens, one stream (documents joined by <|endoftext|>). */
  tokens: Int32Array;
  /**
   * Offsets in `tokens` where a training window may start (each needs seqLen + 1 tokens from there); by default any
   * offset. Supervised data uses it to align every window on an example, e.g. a QA prompt ending in its answer.
   */
  windowStarts?: Int32Array;
  /**
   * Per-token loss weights, parallel to `tokens`: the weight of token i when it is a target (HF's labels = −100 is
   * weight 0). The step's loss is Σ w·loss / Σ w over the batch. Default: every target weighs 1.
   */
  lossWeights?: Float32Array;
  /** Held-out tokens for evaluation and early stop. */
  evalTokens?: Int32Array;
  config?: Partial<TrainConfig>;
  onStep?: (info: StepInfo) => void;
  signal?: AbortSignal;
  /**
   * Data parallelism: each micro-batch's rows split over this pool's threads (this one included), the gradients
   * combined (parallel.ts). Workers hold their own copy of the base, which must be `gpt`'s.
   */
  pool?: GradientPool;
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const c: TrainConfig = { ...DEFAULT_TRAIN_CONFIG, ...options.config };
  validate(options, c);
  if (options.pool && !options.lora)
    throw new InvalidArgumentError("data-parallel training trains a LoRA adapter: give lora with pool");
  const { gpt, lora } = options;
  const trainable = trainOnly(gpt, lora, c.freezeA);
  const vars = trainable.vars;
  const m = vars.map((v) => tf.zerosLike(v));
  const v2 = vars.map((v) => tf.zerosLike(v));
  const anchor = c.proxMu > 0 ? vars.map((v) => tf.clone(v)) : null;
  const sample = windowSampler(options, c);
  const evaluation = new EvalSchedule(options, c);
  const losses: number[] = [];
  const started = performance.now();
  const tokensPerStep = c.gradAccum * c.batchSize * c.seqLen;
  let step = 0;
  try {
    for (; step < c.steps; step++) {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error("aborted");
      const t0 = performance.now();
      const { loss, grads } = await accumulateGradients(options, c, vars, anchor, sample);
      if (!Number.isFinite(loss)) throw new TrainingDivergedError(step, loss);
      const lr = learningRate(c, step);
      const gradNorm = applyAdamW(vars, grads, m, v2, c, lr, step + 1);
      losses.push(loss);
      const tokensPerSec = (tokensPerStep / (performance.now() - t0)) * 1000;
      const info: StepInfo = { step: step + 1, steps: c.steps, loss, lr, gradNorm, tokensPerSec };
      const evaluated = await evaluation.after(step + 1);
      if (evaluated) info.eval = evaluated;
      options.onStep?.(info);
      if (evaluation.stoppedEarly) {
        step++;
        break;
      }
    }
  } finally {
    tf.dispose([...m, ...v2, ...(anchor ?? [])]);
    trainable.restore();
  }
  const seconds = (performance.now() - started) / 1000;
  const tail = losses.slice(-Math.max(1, Math.floor(losses.length / 10)));
  return {
    steps: step,
    finalLoss: losses[losses.length - 1] ?? NaN,
    tailLoss: tail.reduce((a, b) => a + b, 0) / tail.length,
    evals: evaluation.evals,
    stoppedEarly: evaluation.stoppedEarly,
    seconds,
    tokens: step * tokensPerStep,
    tokensPerSec: (step * tokensPerStep) / seconds,
  };
}

/** Refuses a configuration or data that would train something other than asked, before anything is allocated. */
function validate(options: TrainOptions, c: TrainConfig): void {
  const { gpt, tokens } = options;
  if (c.seqLen > gpt.contextLength)
    throw new InvalidArgumentError(`seqLen ${c.seqLen} exceeds the model context ${gpt.contextLength}`);
  if (tokens.length < c.seqLen + 1)
    throw new InvalidArgumentError(`${tokens.length} training tokens are fewer than one sequence of ${c.seqLen + 1}`);
  for (const k of ["steps", "batchSize", "seqLen", "gradAccum"] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1)
      throw new InvalidArgumentError(`train.${k} must be a positive integer, got ${c[k]}`);
  }
  if (!(c.lr > 0) || !Number.isFinite(c.lr)) throw new InvalidArgumentError(`train.lr must be positive, got ${c.lr}`);
  const starts = options.windowStarts;
  if (starts) {
    if (starts.length === 0) throw new InvalidArgumentError("windowStarts is empty: no training window to sample");
    const last = tokens.length - c.seqLen - 1;
    const bad = starts.findIndex((s) => s < 0 || s > last);
    if (bad >= 0)
      throw new InvalidArgumentError(
        `windowStarts[${bad}] = ${starts[bad]} leaves fewer than seqLen + 1 = ${c.seqLen + 1} ` +
          `of the ${tokens.length} tokens`,
      );
  }
  const weights = options.lossWeights;
  if (weights) {
    if (weights.length !== tokens.length)
      throw new InvalidArgumentError(`lossWeights has ${weights.length} entries for ${tokens.length} tokens`);
    const bad = weights.findIndex((w) => !(w >= 0) || !Number.isFinite(w));
    if (bad >= 0)
      throw new InvalidArgumentError(`lossWeights[${bad}] = ${weights[bad]} is not a finite non-negative number`);
  }
}

/**
 * Makes only the trained variables trainable: with LoRA the base is frozen for the duration (GPT keeps derived
 * tensors of frozen weights); `restore` puts every flag back.
 */
function trainOnly(gpt: CausalLM, lora: LoraAdapter | null, freezeA: boolean) {
  const vars = lora ? (freezeA ? lora.variables("B") : lora.variables()) : [...gpt.params.values()];
  const touched = lora ? [...gpt.params.values(), ...vars] : vars;
  const wasTrainable = touched.map((v) => v.trainable);
  if (lora) gpt.params.forEach((v) => (v.trainable = false));
  vars.forEach((v) => (v.trainable = true));
  return { vars, restore: () => touched.forEach((v, i) => (v.trainable = wasTrainable[i]!)) };
}

/** Draws a batch of training windows (seeded): inputs, targets and, with loss weights, the targets' weights. */
function windowSampler(options: TrainOptions, c: TrainConfig): () => BatchRows {
  const { tokens, windowStarts: starts, lossWeights: weights } = options;
  const rand = mulberry32(c.seed);
  return () => {
    const B = c.batchSize;
    const T = c.seqLen;
    const x = new Int32Array(B * T);
    const y = new Int32Array(B * T);
    const w = weights ? new Float32Array(B * T) : null;
    for (let b = 0; b < B; b++) {
      const start = starts ? starts[Math.floor(rand() * starts.length)]! : Math.floor(rand() * (tokens.length - T - 1));
      x.set(tokens.subarray(start, start + T), b * T);
      y.set(tokens.subarray(start + 1, start + T + 1), b * T);
      w?.set(weights!.subarray(start + 1, start + T + 1), b * T);
    }
    // an all-zero-weight batch would divide by zero: weigh it uniformly instead
    if (w && !w.some((v) => v > 0)) w.fill(1);
    return { x, y, w, rows: B, T };
  };
}

/** The rows as the model's input tensors. */
function batchTensors(b: BatchRows): [x: tf.Tensor2D, y: tf.Tensor2D, weights: tf.Tensor2D | null] {
  const shape: [number, number] = [b.rows, b.T];
  return [tf.tensor2d(b.x, shape, "int32"), tf.tensor2d(b.y, shape, "int32"), b.w ? tf.tensor2d(b.w, shape) : null];
}

/**
 * The mean loss of `rows` (training mode) and its gradient for each of `vars`: one slice of a data-parallel
 * micro-batch, here or in a gradient worker. `weight` is the slice's; the caller combines slices by it.
 */
export async function sliceLossAndGradients(
  model: CausalLM,
  lora: LoraAdapter | null,
  vars: tf.Variable[],
  rows: BatchRows,
): Promise<SliceGradients> {
  const [x, y, w] = batchTensors(rows);
  const { value, grads } = tf.variableGrads(() => model.loss(x, y, lora, true, w), vars);
  const loss = (await value.data())[0]!;
  const out = await Promise.all(vars.map(async (v) => (await grads[v.name]!.data()) as Float32Array));
  tf.dispose([value, x, y, ...(w ? [w] : []), ...Object.values(grads)]);
  return { loss, weight: 0, grads: out };
}

/**
 * One micro-batch through the pool: its mean loss and gradients as tensors, FedProx's term added here once.
 * `values`: the adapter's values for the workers (every A and B, in `LoraAdapter.variables()` order).
 */
async function pooledGradients(
  options: TrainOptions,
  c: TrainConfig,
  vars: tf.Variable[],
  anchor: tf.Tensor[] | null,
  batch: BatchRows,
  values: Float32Array[],
): Promise<{ loss: number; grads: tf.Tensor[] }> {
  const local = (rows: BatchRows) => sliceLossAndGradients(options.gpt, options.lora, vars, rows);
  const r = await options.pool!.gradients(batch, values, c.freezeA, local);
  let grads = r.grads.map((g, i) => tf.tensor(g, vars[i]!.shape));
  let loss = r.loss;
  if (anchor) {
    // d/dw μ/2·‖w − w₀‖² = μ·(w − w₀)
    const prox = tf.tidy(() => tf.addN(vars.map((w, i) => tf.sum(tf.square(tf.sub(w, anchor[i]!))))));
    loss += (c.proxMu / 2) * (await prox.data())[0]!;
    prox.dispose();
    const plain = grads;
    grads = tf.tidy(() => plain.map((g, i) => tf.add(g, tf.mul(c.proxMu, tf.sub(vars[i]!, anchor[i]!)))));
    tf.dispose(plain);
  }
  return { loss, grads };
}

/** `gradAccum` micro-batches: their mean loss and summed gradients (FedProx's proximal term added when set). */
async function accumulateGradients(
  options: TrainOptions,
  c: TrainConfig,
  vars: tf.Variable[],
  anchor: tf.Tensor[] | null,
  sample: () => BatchRows,
): Promise<{ loss: number; grads: tf.Tensor[] }> {
  const { gpt, lora } = options;
  let lossSum = 0;
  let grads: tf.Tensor[] | null = null;
  // the adapter does not change within a step: read once for every micro-batch the workers take. Every LoRA value
  // travels, A included when only B trains (the workers' A must be this adapter's too)
  const values = options.pool
    ? await Promise.all(lora!.variables().map(async (v) => (await v.data()) as Float32Array))
    : [];
  for (let a = 0; a < c.gradAccum; a++) {
    let list: tf.Tensor[];
    if (options.pool) {
      const r = await pooledGradients(options, c, vars, anchor, sample(), values);
      lossSum += r.loss;
      list = r.grads;
    } else {
      const [x, y, w] = batchTensors(sample());
      const { value, grads: g } = tf.variableGrads(() => {
        const loss = gpt.loss(x, y, lora, true, w);
        if (!anchor) return loss;
        const prox = tf.addN(vars.map((w, i) => tf.sum(tf.square(tf.sub(w, anchor[i]!)))));
        return tf.add(loss, tf.mul(c.proxMu / 2, prox)) as tf.Scalar;
      }, vars);
      lossSum += (await value.data())[0]!;
      value.dispose();
      tf.dispose([x, y, ...(w ? [w] : [])]);
      list = vars.map((w) => g[w.name]!);
    }
    if (!grads) grads = list;
    else {
      const prev: tf.Tensor[] = grads;
      grads = prev.map((p, i) => tf.add(p, list[i]!));
      prev.forEach((t) => t.dispose());
      list.forEach((t) => t.dispose());
    }
  }
  return { loss: lossSum / c.gradAccum, grads: grads! };
}

/** Held-out evaluation every `evalEvery` steps and at the last, with early stop after `earlyStopPatience` evals. */
class EvalSchedule {
  readonly evals: TrainResult["evals"] = [];
  stoppedEarly = false;
  private best = Infinity;
  private sinceBest = 0;

  constructor(
    private readonly options: TrainOptions,
    private readonly c: TrainConfig,
  ) {}

  /** The evaluation after `step` (1-based) when one is due, else undefined. */
  async after(step: number): Promise<EvalResult | undefined> {
    const { c, options } = this;
    const due = (c.evalEvery > 0 && step % c.evalEvery === 0) || step === c.steps;
    if (!options.evalTokens || !due) return undefined;
    const result = await evaluateLoss(options.gpt, options.lora, options.evalTokens, {
      seqLen: c.seqLen,
      batchSize: c.batchSize,
      maxSequences: c.evalSequences,
    });
    this.evals.push({ step, result });
    if (result.meanLoss < this.best - 1e-4) {
      this.best = result.meanLoss;
      this.sinceBest = 0;
    } else if (c.earlyStopPatience > 0 && ++this.sinceBest >= c.earlyStopPatience) {
      this.stoppedEarly = true;
    }
    return result;
  }
}

/** One AdamW step over `vars` with summed `grads` (disposed here); returns the pre-clip global gradient norm. */
function applyAdamW(
  vars: tf.Variable[],
  grads: tf.Tensor[],
  m: tf.Tensor[],
  v: tf.Tensor[],
  c: TrainConfig,
  lr: number,
  t: number,
): number {
  const scale = 1 / c.gradAccum;
  const norm = tf.tidy(() => Math.sqrt(tf.addN(grads.map((g) => tf.sum(tf.square(g)))).dataSync()[0]!) * scale);
  const clip = c.gradClip > 0 && norm > c.gradClip ? c.gradClip / norm : 1;
  const bc1 = 1 - c.beta1 ** t;
  const bc2 = 1 - c.beta2 ** t;
  tf.tidy(() => {
    vars.forEach((w, i) => {
      const g = tf.mul(grads[i]!, scale * clip);
      const mi = tf.add(tf.mul(m[i]!, c.beta1), tf.mul(g, 1 - c.beta1));
      const vi = tf.add(tf.mul(v[i]!, c.beta2), tf.mul(tf.square(g), 1 - c.beta2));
      const update = tf.div(tf.div(mi, bc1), tf.add(tf.sqrt(tf.div(vi, bc2)), c.eps));
      const decayed = c.weightDecay > 0 ? tf.mul(w, 1 - lr * c.weightDecay) : w;
      w.assign(tf.sub(decayed, tf.mul(update, lr)));
      m[i]!.dispose();
      v[i]!.dispose();
      m[i] = tf.keep(mi);
      v[i] = tf.keep(vi);
    });
  });
  grads.forEach((g) => g.dispose());
  return norm;
}

/** The loss became NaN or Inf. */
export class TrainingDivergedError extends InvalidArgumentError {
  constructor(
    readonly step: number,
    readonly loss: number,
  ) {
    super(`training diverged at step ${step + 1}: loss ${loss}`);
  }
}
