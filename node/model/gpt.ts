/**
 * A GPT-2-style decoder in TensorFlow.js: token + position embeddings, pre-norm blocks of causal self-attention and
 * a GELU MLP, a final LayerNorm and a head tied to the token embedding. Parameter names are GPT-2's checkpoint keys
 * (`h.0.attn.c_attn.weight`, ...) and Conv1D weights are stored [in, out] as GPT-2 stores them, so a Hugging Face
 * GPT-2 checkpoint loads as is.
 *
 * Every product is a plain 2-D matMul (or a batched one in attention) with no transpose flags: wasm runs only
 * those fast (see kernels.ts).
 */
import { tf } from "./backend.js";
import { InvalidArgumentError } from "../errors.js";
import { LM_HEAD, type LoraAdapter } from "./lora.js";
import { causalAttention } from "./attention.js";
import { FrozenProducts } from "./products.js";
import type { CausalLM } from "./causal-lm.js";

export interface GPTConfig {
  /** Number of transformer blocks (GPT-2 `n_layer`). */
  nLayer: number;
  /** Width of the residual stream (`n_embd`). */
  nEmbd: number;
  /** Attention heads (`n_head`); must divide nEmbd. */
  nHead: number;
  /** Longest context in tokens (`n_positions`). */
  blockSize: number;
  /** Vocabulary size (`vocab_size`). */
  vocabSize: number;
  /** Dropout on embeddings, attention and residual branches during training. 0 = off. */
  dropout: number;
  /** LayerNorm epsilon (`layer_norm_epsilon`). */
  layerNormEps: number;
}

export const DEFAULT_GPT_CONFIG: GPTConfig = {
  nLayer: 4,
  nEmbd: 128,
  nHead: 4,
  blockSize: 64,
  vocabSize: 4096,
  dropout: 0,
  layerNormEps: 1e-5,
};

/** The GPT-2 checkpoint keys and shapes a config has, in a fixed order. */
export function parameterShapes(c: GPTConfig): [string, number[]][] {
  const C = c.nEmbd;
  const out: [string, number[]][] = [
    ["wte.weight", [c.vocabSize, C]],
    ["wpe.weight", [c.blockSize, C]],
  ];
  for (let i = 0; i < c.nLayer; i++) {
    const p = `h.${i}.`;
    out.push(
      [p + "ln_1.weight", [C]],
      [p + "ln_1.bias", [C]],
      [p + "attn.c_attn.weight", [C, 3 * C]],
      [p + "attn.c_attn.bias", [3 * C]],
      [p + "attn.c_proj.weight", [C, C]],
      [p + "attn.c_proj.bias", [C]],
      [p + "ln_2.weight", [C]],
      [p + "ln_2.bias", [C]],
      [p + "mlp.c_fc.weight", [C, 4 * C]],
      [p + "mlp.c_fc.bias", [4 * C]],
      [p + "mlp.c_proj.weight", [4 * C, C]],
      [p + "mlp.c_proj.bias", [C]],
    );
  }
  out.push(["ln_f.weight", [C]], ["ln_f.bias", [C]]);
  return out;
}

export function validateConfig(c: GPTConfig): void {
  for (const k of ["nLayer", "nEmbd", "nHead", "blockSize", "vocabSize"] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1)
      throw new InvalidArgumentError(`model config ${k} must be a positive integer, got ${c[k]}`);
  }
  if (c.nEmbd % c.nHead !== 0) throw new InvalidArgumentError(`nEmbd ${c.nEmbd} is not divisible by nHead ${c.nHead}`);
  if (!(c.dropout >= 0 && c.dropout < 1)) throw new InvalidArgumentError(`dropout must be in [0, 1), got ${c.dropout}`);
}

/** The frozen-or-trainable weights of a GPT, by checkpoint key. */
let instances = 0;

export class GPT implements CausalLM {
  readonly params: Map<string, tf.Variable>;
  private readonly causalMask: tf.Tensor2D;
  private readonly products = new FrozenProducts();

  /** Random GPT-2 initialisation (N(0, 0.02), residual projections scaled by 1/sqrt(2·nLayer)), seeded. */
  static init(config: GPTConfig, seed = 1337): GPT {
    validateConfig(config);
    const weights = new Map<string, tf.Tensor>();
    let s = seed;
    for (const [name, shape] of parameterShapes(config)) {
      let t: tf.Tensor;
      if (name.endsWith("ln_1.weight") || name.endsWith("ln_2.weight") || name === "ln_f.weight") t = tf.ones(shape);
      else if (name.endsWith(".bias")) t = tf.zeros(shape);
      else {
        const std = name.endsWith("c_proj.weight") ? 0.02 / Math.sqrt(2 * config.nLayer) : 0.02;
        t = tf.randomNormal(shape, 0, std, "float32", s++);
      }
      weights.set(name, t);
    }
    return new GPT(config, weights, true);
  }

  /** Wraps given weights (every key of parameterShapes, exact shapes); takes ownership of the tensors. */
  constructor(
    readonly config: GPTConfig,
    weights: Map<string, tf.Tensor>,
    trainable = false,
  ) {
    validateConfig(config);
    this.params = new Map();
    const id = instances++; // tfjs variable names are global: keep each model's own
    for (const [name, shape] of parameterShapes(config)) {
      const w = weights.get(name);
      if (!w) throw new InvalidArgumentError(`missing weight ${name}`);
      if (w.shape.join(",") !== shape.join(","))
        throw new InvalidArgumentError(`weight ${name} has shape [${w.shape}], expected [${shape}]`);
      this.params.set(name, tf.variable(w, trainable, `gpt${id}/${name}`));
      w.dispose();
    }
    const T = config.blockSize;
    this.causalMask = tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([T, T]), -1, 0)), -1e9) as tf.Tensor2D);
  }

  /** The longest sequence: GPT-2's learned positions (`n_positions`). */
  get contextLength(): number {
    return this.config.blockSize;
  }

  private p(name: string): tf.Variable {
    return this.params.get(name)!;
  }

  /**
   * Logits [B·T, vocab] for token ids [B, T] (T <= blockSize). With `lora`, its low-rank updates are added to the
   * targeted projections. `training` turns dropout on. With `rows`, the logits of those positions only.
   */
  forward(
    idx: tf.Tensor2D,
    lora: LoraAdapter | null = null,
    training = false,
    rows: tf.Tensor1D | null = null,
  ): tf.Tensor2D {
    const c = this.config;
    const [B, T] = idx.shape;
    if (T > c.blockSize) throw new InvalidArgumentError(`sequence length ${T} exceeds the context ${c.blockSize}`);
    const C = c.nEmbd;
    const H = c.nHead;
    const D = C / H;
    const N = B * T;
    const drop = (x: tf.Tensor, rate: number) => (training && rate > 0 ? tf.dropout(x, rate) : x);
    return tf.tidy(() => {
      const tok = tf.reshape(tf.gather(this.p("wte.weight"), tf.reshape(idx, [N])), [B, T, C]);
      const pos = tf.slice(this.p("wpe.weight"), [0, 0], [T, C]); // [T, C], broadcast over the batch
      let x = drop(tf.reshape(tf.add(tok, pos), [N, C]), c.dropout) as tf.Tensor2D; // [N, C]
      const mask = tf.slice(this.causalMask, [0, 0], [T, T]); // [T, T]
      for (let i = 0; i < c.nLayer; i++) {
        const p = `h.${i}.`;
        // attention
        const h1 = this.layerNorm(x, p + "ln_1");
        const heads = (t: tf.Tensor) =>
          tf.reshape(tf.transpose(tf.reshape(t, [B, T, H, D]), [0, 2, 1, 3]), [B * H, T, D]);
        const [q, k, v] = this.qkv(h1, p + "attn.c_attn", lora, training).map(heads) as tf.Tensor3D[]; // [B·H, T, D]
        const y =
          training && c.dropout > 0 ? this.attentionWithDropout(q!, k!, v!, mask) : causalAttention(q!, k!, v!, mask);
        const yc = tf.reshape(tf.transpose(tf.reshape(y, [B, H, T, D]), [0, 2, 1, 3]), [N, C]) as tf.Tensor2D;
        x = tf.add(x, drop(this.linear(yc, p + "attn.c_proj", lora, training), c.dropout));
        // MLP
        const h2 = this.layerNorm(x, p + "ln_2");
        const f = gelu(this.linear(h2, p + "mlp.c_fc", lora, training)); // [N, 4C]
        x = tf.add(x, drop(this.linear(f, p + "mlp.c_proj", lora, training), c.dropout));
      }
      const xf = this.layerNorm(rows ? tf.gather(x, rows) : x, "ln_f");
      const wte = this.p("wte.weight"); // the tied head: wteᵀ [C, V] made explicit, so it stays a plain product
      const logits = this.product(xf, "wte.T", wte, () => tf.transpose(wte)); // [N, V]
      return lora ? lora.apply(LM_HEAD, xf, logits, training) : logits;
    });
  }

  /** Attention with dropout on the probabilities (pre-training only; the fused op has none), as composed ops. */
  private attentionWithDropout(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, mask: tf.Tensor2D): tf.Tensor3D {
    const att = tf.add(tf.mul(tf.matMul(q, tf.transpose(k, [0, 2, 1])), 1 / Math.sqrt(q.shape[2])), mask);
    return tf.matMul(tf.dropout(tf.softmax(att, -1), this.config.dropout), v) as tf.Tensor3D;
  }

  private derived(key: string, v: tf.Variable, make: () => tf.Tensor): tf.Tensor {
    return this.products.derived(key, v, make);
  }

  /**
   * Mean next-token cross-entropy (nats) of `targets` [B, T] given `idx` [B, T]; with `weights` [B, T], the
   * weighted mean Σ w·loss / Σ w.
   */
  loss(
    idx: tf.Tensor2D,
    targets: tf.Tensor2D,
    lora: LoraAdapter | null = null,
    training = false,
    weights: tf.Tensor2D | null = null,
  ): tf.Scalar {
    return tf.tidy(() => meanTokenLoss(this.forward(idx, lora, training), targets, weights));
  }

  /**
   * q, k and v [N, C] each: the fused c_attn projection computed as three products on weight slices, so no [N, 3C]
   * activation is split (SplitV and its gradient are slow on wasm).
   */
  private qkv(x: tf.Tensor2D, module: string, lora: LoraAdapter | null, training: boolean): tf.Tensor2D[] {
    const C = this.config.nEmbd;
    const w = this.p(module + ".weight");
    const b = this.p(module + ".bias");
    const deltas = lora ? lora.sectionDeltas(module, x, training) : null;
    return [0, 1, 2].map((s) => {
      const bs = this.derived(`${module}.bias/${s}`, b, () => tf.slice(b, [s * C], [C]));
      const y = tf.add(
        this.product(x, `${module}.weight/${s}`, w, () => tf.slice(w, [0, s * C], [C, C])),
        bs,
      ) as tf.Tensor2D;
      const d = deltas?.[s];
      return d ? (tf.add(y, d) as tf.Tensor2D) : y;
    });
  }

  private linear(x: tf.Tensor2D, module: string, lora: LoraAdapter | null, training: boolean): tf.Tensor2D {
    const y = tf.add(
      this.product(x, module + ".weight", this.p(module + ".weight")),
      this.p(module + ".bias"),
    ) as tf.Tensor2D;
    return lora ? lora.apply(module, x, y, training) : y;
  }

  /** x·W (see FrozenProducts: the wte transpose, the c_attn slices and Wᵀ are kept while the base is frozen). */
  private product(x: tf.Tensor2D, key: string, v: tf.Variable, make?: () => tf.Tensor): tf.Tensor2D {
    return this.products.product(x, key, v, make);
  }

  private layerNorm(x: tf.Tensor2D, name: string): tf.Tensor2D {
    const mean = tf.mean(x, -1, true);
    const xc = tf.sub(x, mean);
    const variance = tf.mean(tf.square(xc), -1, true);
    const norm = tf.mul(xc, tf.rsqrt(tf.add(variance, this.config.layerNormEps)));
    return tf.add(tf.mul(norm, this.p(name + ".weight")), this.p(name + ".bias")) as tf.Tensor2D;
  }

  /** The weights as plain arrays, by checkpoint key. */
  async exportWeights(): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
    const out = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, v] of this.params) out.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
    return out;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.causalMask.dispose();
    this.products.dispose();
  }
}

/** Mean next-token cross-entropy of logits [N, V] against targets [B, T]; with `weights` [B, T], Σ w·loss / Σ w. */
export function meanTokenLoss(logits: tf.Tensor2D, targets: tf.Tensor2D, weights: tf.Tensor2D | null): tf.Scalar {
  const per = tokenLoss(logits, targets);
  if (!weights) return per.mean() as tf.Scalar;
  const w = tf.reshape(weights, [-1]);
  return tf.div(tf.sum(tf.mul(per, w)), tf.sum(w)) as tf.Scalar;
}

/**
 * Per-token cross-entropy [N] of logits [N, V] against targets [B, T] (flattened), as one fused op: the forward pass
 * runs one softmax over the vocabulary and the backward pass reuses it (dlogits = (p − onehot)·dy), where the
 * composed logSoftmax would exponentiate [N, V] twice. The loss is max − logit[target] + log Σexp(logit − max), and
 * Σexp(logit − max) = 1 / max(p) since the largest logit contributes exp(0): exact, and p's maximum (≥ 1/V) never
 * underflows.
 */
export function tokenLoss(logits: tf.Tensor2D, targets: tf.Tensor2D): tf.Tensor1D {
  const [N, V] = logits.shape;
  if (targets.size !== N) throw new InvalidArgumentError(`targets have ${targets.size} tokens, logits ${N} rows`);
  const t = tf.reshape(targets, [N]).toInt() as tf.Tensor1D;
  const loss = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const [x, save] = args as [tf.Tensor, tf.GradSaveFunc];
    const p = tf.softmax(x as tf.Tensor2D, -1);
    const flatIndex = tf.add(tf.mul(tf.range(0, N, 1, "int32"), tf.scalar(V, "int32")), t);
    const target = tf.gather(tf.reshape(x, [N * V]), flatIndex);
    const value = tf.sub(tf.sub(tf.max(x, -1), target), tf.log(tf.max(p, -1)));
    save([p, t]); // the engine keeps saved tensors alive until the backward pass
    return {
      value,
      // an int32 one-hot, cast by sub: wasm's OneHot writes int32 bits whatever dtype it is asked for (tfjs 4.22)
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.mul(tf.sub(saved[0]!, tf.oneHot(saved[1] as tf.Tensor1D, V)), tf.reshape(dy, [N, 1])),
    };
  })(logits) as tf.Tensor1D;
  t.dispose();
  return loss;
}

/**
 * GPT-2's GELU (tanh approximation, "gelu_new"): 0.5·x·(1 + tanh(z)) with z = √(2/π)·(x + 0.044715·x³), computed as
 * the identical x·sigmoid(2z), since wasm's Sigmoid is vectorised and its Tanh is not (0.26 vs 4.7 ms on [512, 512]).
 */
export function gelu(x: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => {
    const cube = tf.mul(tf.mul(x, x), x); // tf.pow is ~10x slower on wasm
    const twoZ = tf.mul(2 * Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, cube)));
    return tf.mul(x, tf.sigmoid(twoZ)) as tf.Tensor2D;
  });
}
