/**
 * The Llama family in TensorFlow.js — `llama` (SmolLM2, TinyLlama, Llama 2/3.x), `qwen2` (Qwen2.5) and `mistral` —
 * as Hugging Face's modeling code defines it: token embedding, pre-norm blocks of RMSNorm, grouped-query attention
 * with rotary position embeddings (the `rotate_half` layout; `rope_scaling` none, `linear` or `llama3`) and a SwiGLU
 * MLP, a final RMSNorm and a head tied to the embedding or not. Parameter names are the Hub's checkpoint keys
 * (`model.layers.0.self_attn.q_proj.weight`, ...) in nn.Linear's [out, in] layout, so a Hub checkpoint loads as is.
 *
 * A config field this engine does not implement is a typed error naming it, never a silent fallback.
 */
import { tf } from "./backend.js";
import { InvalidArgumentError } from "../errors.js";
import { causalAttention } from "./attention.js";
import { FrozenProducts } from "./products.js";
import { recomputed } from "./recompute.js";
import { CheckpointError, widenTensor, type NamedTensor, type RawTensor, type TensorHeader } from "./safetensors.js";
import { meanTokenLoss } from "./gpt.js";
import type { CausalLM } from "./causal-lm.js";
import { LM_HEAD, type LoraAdapter } from "./lora.js";

export type LlamaFamily = "llama" | "qwen2" | "mistral";
export const LLAMA_FAMILIES: readonly LlamaFamily[] = ["llama", "qwen2", "mistral"];

export type RopeScaling =
  | null
  | { type: "linear"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

export interface LlamaConfig {
  family: LlamaFamily;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  nLayer: number;
  nHead: number;
  /** Key/value heads (grouped-query attention); divides nHead. */
  nKvHead: number;
  headDim: number;
  maxPositions: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  tieWordEmbeddings: boolean;
  /** Biases on q, k and v (qwen2; llama's `attention_bias`). */
  qkvBias: boolean;
  /** A bias on o (llama's `attention_bias`). */
  oBias: boolean;
  mlpBias: boolean;
  /** Mistral's (and Qwen2's, when used) attention window: a longer sequence is refused, not computed otherwise. */
  slidingWindow: number | null;
}

/** A checkpoint's config asks for an architecture or a feature this engine does not implement. */
export class UnsupportedModelError extends CheckpointError {
  constructor(
    readonly field: string,
    readonly value: unknown,
    why: string,
  ) {
    super(`config.json ${field} = ${JSON.stringify(value)}: ${why}`);
  }
}

/** Reads a Hub config.json of the Llama family; a typed error for anything this engine cannot run as asked. */
export function parseLlamaConfig(json: unknown): LlamaConfig {
  if (!json || typeof json !== "object" || Array.isArray(json))
    throw new CheckpointError("config.json is not an object");
  const j = json as Record<string, unknown>;
  const family = j.model_type as LlamaFamily;
  if (!LLAMA_FAMILIES.includes(family)) {
    throw new UnsupportedModelError("model_type", j.model_type, `supported: gpt2, ${LLAMA_FAMILIES.join(", ")}`);
  }
  const int = (k: string, fallback?: number): number => {
    const v = j[k] ?? fallback;
    if (!Number.isInteger(v) || (v as number) < 1)
      throw new UnsupportedModelError(k, j[k], "must be a positive integer");
    return v as number;
  };
  const num = (k: string, fallback: number): number => {
    const v = j[k] ?? fallback;
    if (typeof v !== "number" || !(v > 0)) throw new UnsupportedModelError(k, j[k], "must be a positive number");
    return v;
  };
  const act = j.hidden_act ?? "silu";
  if (act !== "silu") throw new UnsupportedModelError("hidden_act", act, "only silu (SwiGLU) is implemented");
  if (j.partial_rotary_factor !== undefined && j.partial_rotary_factor !== 1) {
    throw new UnsupportedModelError(
      "partial_rotary_factor",
      j.partial_rotary_factor,
      "only full rotary is implemented",
    );
  }
  const hiddenSize = int("hidden_size");
  const nHead = int("num_attention_heads");
  const nKvHead = int("num_key_value_heads", nHead);
  if (nHead % nKvHead !== 0) {
    throw new UnsupportedModelError("num_key_value_heads", nKvHead, `must divide num_attention_heads ${nHead}`);
  }
  const headDim = int("head_dim", hiddenSize / nHead);
  if (headDim % 2 !== 0)
    throw new UnsupportedModelError("head_dim", headDim, "rotary embeddings need an even head_dim");
  const attentionBias = Boolean(j.attention_bias ?? false);
  const usesWindow = family === "mistral" || (family === "qwen2" && j.use_sliding_window === true);
  const window = j.sliding_window;
  if (usesWindow && window !== null && window !== undefined && !(Number.isInteger(window) && (window as number) > 0)) {
    throw new UnsupportedModelError("sliding_window", window, "must be a positive integer or null");
  }
  return {
    family,
    vocabSize: int("vocab_size"),
    hiddenSize,
    intermediateSize: int("intermediate_size"),
    nLayer: int("num_hidden_layers"),
    nHead,
    nKvHead,
    headDim,
    maxPositions: int("max_position_embeddings", 2048),
    rmsNormEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
    ropeScaling: parseRopeScaling(j.rope_scaling),
    tieWordEmbeddings: Boolean(j.tie_word_embeddings ?? false),
    qkvBias: family === "qwen2" ? true : family === "llama" ? attentionBias : false,
    oBias: family === "llama" ? attentionBias : false,
    mlpBias: family === "llama" ? Boolean(j.mlp_bias ?? false) : false,
    slidingWindow: usesWindow && typeof window === "number" ? window : null,
  };
}

function parseRopeScaling(s: unknown): RopeScaling {
  if (s === null || s === undefined) return null;
  if (typeof s !== "object") throw new UnsupportedModelError("rope_scaling", s, "must be an object or null");
  const r = s as Record<string, unknown>;
  const type = r.rope_type ?? r.type;
  const factor = r.factor;
  if (type === "default") return null;
  if (typeof factor !== "number" || !(factor > 0)) {
    throw new UnsupportedModelError("rope_scaling.factor", factor, "must be a positive number");
  }
  if (type === "linear") return { type, factor };
  if (type === "llama3") {
    const need = (k: string) => {
      if (typeof r[k] !== "number" || !((r[k] as number) > 0)) {
        throw new UnsupportedModelError(`rope_scaling.${k}`, r[k], "must be a positive number");
      }
      return r[k] as number;
    };
    return {
      type,
      factor,
      lowFreqFactor: need("low_freq_factor"),
      highFreqFactor: need("high_freq_factor"),
      originalMaxPositions: need("original_max_position_embeddings"),
    };
  }
  throw new UnsupportedModelError("rope_scaling.rope_type", type, "implemented: none, linear, llama3");
}

/** The Hub checkpoint keys and shapes of a config, in a fixed order. */
export function llamaParameterShapes(c: LlamaConfig): [string, number[]][] {
  const H = c.hiddenSize;
  const q = c.nHead * c.headDim;
  const kv = c.nKvHead * c.headDim;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [c.vocabSize, H]]];
  for (let i = 0; i < c.nLayer; i++) {
    const p = `model.layers.${i}.`;
    out.push([p + "input_layernorm.weight", [H]]);
    for (const [m, rows] of [
      ["q_proj", q],
      ["k_proj", kv],
      ["v_proj", kv],
    ] as const) {
      out.push([`${p}self_attn.${m}.weight`, [rows, H]]);
      if (c.qkvBias) out.push([`${p}self_attn.${m}.bias`, [rows]]);
    }
    out.push([p + "self_attn.o_proj.weight", [H, q]]);
    if (c.oBias) out.push([p + "self_attn.o_proj.bias", [H]]);
    out.push([p + "post_attention_layernorm.weight", [H]]);
    for (const [m, shape] of [
      ["gate_proj", [c.intermediateSize, H]],
      ["up_proj", [c.intermediateSize, H]],
      ["down_proj", [H, c.intermediateSize]],
    ] as const) {
      out.push([`${p}mlp.${m}.weight`, [...shape]]);
      if (c.mlpBias) out.push([`${p}mlp.${m}.bias`, [shape[0]]]);
    }
  }
  out.push(["model.norm.weight", [H]]);
  if (!c.tieWordEmbeddings) out.push(["lm_head.weight", [c.vocabSize, H]]);
  return out;
}

/** RoPE's inverse frequencies [headDim / 2] for the config, with its scaling (float64, as HF computes them). */
export function ropeInverseFrequencies(c: LlamaConfig): Float64Array {
  const half = c.headDim / 2;
  const inv = Float64Array.from({ length: half }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / c.headDim));
  const s = c.ropeScaling;
  if (!s) return inv;
  if (s.type === "linear") return inv.map((f) => f / s.factor);
  // llama3: long wavelengths scaled by 1/factor, short ones kept, a smooth ramp between
  const lowWavelen = s.originalMaxPositions / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositions / s.highFreqFactor;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f;
    if (wavelen > lowWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return (1 - smooth) * (f / s.factor) + smooth * f;
  });
}

/** Above this estimate of a training step's kept activations, "auto" recomputes each layer instead (see recomputes). */
export const RECOMPUTE_ABOVE_BYTES = 256 * 2 ** 20;

/** Keys a Hub checkpoint may carry that are not parameters (old rotary buffers). */
const IGNORED = /\.rotary_emb\.inv_freq$/;

let instances = 0;

export class Llama implements CausalLM {
  readonly params: Map<string, tf.Variable>;
  private readonly products = new FrozenProducts();
  private readonly rope = new Map<number, { cos: tf.Tensor2D; sin: tf.Tensor2D; mask: tf.Tensor2D }>();
  /** Activation checkpointing in LoRA training: always, never, or "auto" (see recomputes). */
  recompute: boolean | "auto" = "auto";

  /**
   * Wraps Hub-layout weights (every key of llamaParameterShapes, exact shapes; a tied checkpoint's lm_head and old
   * rotary buffers are skipped); takes ownership of the tensors. A missing, unexpected or misshapen weight is a
   * CheckpointError naming it, and nothing is kept.
   */
  constructor(
    readonly config: LlamaConfig,
    weights: Map<string, tf.Tensor>,
    trainable = false,
  ) {
    const shapes = new Map(llamaParameterShapes(config));
    const problem = checkWeights(shapes, weights, config);
    if (problem) {
      for (const w of weights.values()) w.dispose();
      throw new CheckpointError(problem);
    }
    this.params = new Map();
    const id = instances++;
    for (const [name] of shapes)
      this.params.set(name, tf.variable(weights.get(name)!, trainable, `llama${id}/${name}`));
    for (const w of weights.values()) w.dispose();
  }

  /**
   * A model from stored tensors (any float dtype), checked by their headers first and then widened to f32 and moved
   * into the backend one at a time, so loading never holds a whole f32 copy of the model outside the backend.
   */
  static fromRawTensors(config: LlamaConfig, raw: RawTensor[], trainable = false): Llama {
    refuseMisshapen(config, raw);
    const weights = new Map<string, tf.Tensor>();
    try {
      for (const t of raw)
        if (!IGNORED.test(t.name)) weights.set(t.name, tf.tensor(widenTensor(t), t.shape, "float32"));
    } catch (e) {
      for (const w of weights.values()) w.dispose();
      throw e;
    }
    return new Llama(config, weights, trainable);
  }

  /**
   * A model from f32 tensors arriving one at a time (a checkpoint streamed from disk), their headers checked first:
   * each moves into the backend before the next is read. On any error nothing is kept.
   */
  static async fromStream(
    config: LlamaConfig,
    headers: TensorHeader[],
    tensors: AsyncIterable<{ name: string; shape: number[]; data: Float32Array }>,
    trainable = false,
  ): Promise<Llama> {
    refuseMisshapen(config, headers);
    const weights = new Map<string, tf.Tensor>();
    try {
      for await (const t of tensors) if (!IGNORED.test(t.name)) weights.set(t.name, tf.tensor(t.data, t.shape));
    } catch (e) {
      for (const w of weights.values()) w.dispose();
      throw e;
    }
    return new Llama(config, weights, trainable);
  }

  /** A model from f32 tensors by Hub key (as read from a checkpoint). */
  static fromTensors(config: LlamaConfig, tensors: Map<string, NamedTensor>, trainable = false): Llama {
    const weights = new Map<string, tf.Tensor>();
    for (const [name, t] of tensors) weights.set(name, tf.tensor(t.data, t.shape, "float32"));
    return new Llama(config, weights, trainable);
  }

  private p(name: string): tf.Variable {
    return this.params.get(name)!;
  }

  /** The longest sequence computed as the family defines it (the sliding window, where one applies). */
  get contextLength(): number {
    return Math.min(this.config.maxPositions, this.config.slidingWindow ?? Infinity);
  }

  /** Logits [B·T, vocab] for token ids [B, T], or of `rows` of them (CausalLM.forward). */
  forward(
    idx: tf.Tensor2D,
    lora: LoraAdapter | null = null,
    training = false,
    rows: tf.Tensor1D | null = null,
  ): tf.Tensor2D {
    const c = this.config;
    const [B, T] = idx.shape;
    if (c.slidingWindow !== null && T > c.slidingWindow) {
      throw new InvalidArgumentError(
        `sequence length ${T} exceeds the ${c.family} sliding window ${c.slidingWindow}, which this engine does not ` +
          "implement; use sequences of at most the window",
      );
    }
    const N = B * T;
    return tf.tidy(() => {
      let x = tf.gather(this.p("model.embed_tokens.weight"), tf.reshape(idx, [N])) as tf.Tensor2D; // [N, H]
      const recompute = training && lora !== null && this.recomputes(B, T);
      for (let i = 0; i < c.nLayer; i++) {
        // this layer's LoRA dropout masks come from one seed, so a recomputed layer draws the same ones again
        const seed = Math.floor(Math.random() * 2 ** 31);
        const layer = (xi: tf.Tensor2D) =>
          lora
            ? lora.withDropoutSeed(seed, () => this.layer(i, xi, B, T, lora, training))
            : this.layer(i, xi, B, T, null, training);
        x = recompute && lora ? recomputed(layer, x, lora.variablesUnder(`model.layers.${i}.`)) : layer(x);
      }
      const xf = this.rmsNorm(rows ? tf.gather(x, rows) : x, "model.norm.weight");
      const head = c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
      const logits = this.products.productT(xf, head, this.p(head)); // [N, V]
      return lora ? lora.apply(LM_HEAD, xf, logits, training) : logits;
    });
  }

  /** Decoder layer i on x [B·T, H]: x + attention(norm(x)), then + SwiGLU MLP(norm(·)). */
  private layer(i: number, x: tf.Tensor2D, B: number, T: number, lora: LoraAdapter | null, training: boolean) {
    const c = this.config;
    const N = B * T;
    const { cos, sin, mask } = this.positions(T);
    const p = `model.layers.${i}.`;
    const h = this.rmsNorm(x, p + "input_layernorm.weight");
    const heads = (t: tf.Tensor2D, n: number) =>
      tf.transpose(tf.reshape(t, [B, T, n, c.headDim]), [0, 2, 1, 3]) as tf.Tensor4D; // [B, n, T, D]
    const q = rotate(heads(this.linear(h, p + "self_attn.q_proj", lora, training), c.nHead), cos, sin);
    const k = repeatKv(rotate(heads(this.linear(h, p + "self_attn.k_proj", lora, training), c.nKvHead), cos, sin), c);
    const v = repeatKv(heads(this.linear(h, p + "self_attn.v_proj", lora, training), c.nKvHead), c);
    const flat = (t: tf.Tensor4D) => tf.reshape(t, [B * c.nHead, T, c.headDim]) as tf.Tensor3D;
    const y = causalAttention(flat(q), flat(k), flat(v), mask); // [B·nH, T, D]
    const merged = tf.reshape(tf.transpose(tf.reshape(y, [B, c.nHead, T, c.headDim]), [0, 2, 1, 3]), [
      N,
      c.nHead * c.headDim,
    ]) as tf.Tensor2D;
    const xa = tf.add(x, this.linear(merged, p + "self_attn.o_proj", lora, training)) as tf.Tensor2D;
    const h2 = this.rmsNorm(xa, p + "post_attention_layernorm.weight");
    const gate = this.linear(h2, p + "mlp.gate_proj", lora, training);
    const up = this.linear(h2, p + "mlp.up_proj", lora, training);
    const act = tf.mul(tf.mul(gate, tf.sigmoid(gate)), up) as tf.Tensor2D;
    return tf.add(xa, this.linear(act, p + "mlp.down_proj", lora, training)) as tf.Tensor2D;
  }

  /**
   * Whether a LoRA training step of [B, T] recomputes each layer in its backward pass (recompute.ts) rather than
   * keep every layer's activations: `recompute` true or false, or with "auto" when the kept activations would
   * exceed RECOMPUTE_ABOVE_BYTES by an estimate measured on SmolLM2-135M (about 100 floats per token, layer and
   * hidden unit of the wider of hidden and intermediate, counting tfjs's saved copies and their gradients).
   */
  recomputes(B: number, T: number): boolean {
    if (this.recompute !== "auto") return this.recompute;
    const c = this.config;
    const perTokenLayer = 4 * (60 * c.hiddenSize + 20 * c.intermediateSize + 6 * c.nHead * T);
    return B * T * c.nLayer * perTokenLayer > RECOMPUTE_ABOVE_BYTES;
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

  /** x·Wᵀ (+ b) for an nn.Linear weight W [out, in], plus the adapter's update where it targets `module`. */
  private linear(x: tf.Tensor2D, module: string, lora: LoraAdapter | null, training: boolean): tf.Tensor2D {
    const y = this.products.productT(x, module + ".weight", this.p(module + ".weight"));
    const b = this.params.get(module + ".bias");
    const out = b ? (tf.add(y, b) as tf.Tensor2D) : y;
    return lora ? lora.apply(module, x, out, training) : out;
  }

  /** RMSNorm in f32: x · rsqrt(mean(x²) + eps) · w. */
  private rmsNorm(x: tf.Tensor2D, weight: string): tf.Tensor2D {
    const ms = tf.mean(tf.mul(x, x), -1, true);
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(ms, this.config.rmsNormEps))), this.p(weight)) as tf.Tensor2D;
  }

  /** cos and sin [T, headDim] (HF's cat(freqs, freqs) layout) and the causal mask for length T, kept per T. */
  private positions(T: number) {
    let hit = this.rope.get(T);
    if (!hit) {
      const inv = ropeInverseFrequencies(this.config);
      const D = this.config.headDim;
      const cos = new Float32Array(T * D);
      const sin = new Float32Array(T * D);
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < D; i++) {
          const angle = t * inv[i % (D / 2)]!; // float64, then rounded once to f32
          cos[t * D + i] = Math.cos(angle);
          sin[t * D + i] = Math.sin(angle);
        }
      }
      const mask = tf.tidy(() => tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([T, T]), -1, 0)), -1e9) as tf.Tensor2D);
      // kept: a forward pass inside someone's tf.tidy must not dispose the cache with its scope
      hit = { cos: tf.keep(tf.tensor2d(cos, [T, D])), sin: tf.keep(tf.tensor2d(sin, [T, D])), mask: tf.keep(mask) };
      this.rope.set(T, hit);
    }
    return hit;
  }

  /** The weights as plain arrays, by Hub key. */
  async exportWeights(): Promise<Map<string, NamedTensor>> {
    const out = new Map<string, NamedTensor>();
    for (const [name, v] of this.params) out.set(name, { shape: [...v.shape], data: (await v.data()) as Float32Array });
    return out;
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    for (const r of this.rope.values()) tf.dispose([r.cos, r.sin, r.mask]);
    this.rope.clear();
    this.products.dispose();
  }
}

/** A CheckpointError naming the first tensor of `headers` missing, unexpected or misshapen for `config`. */
function refuseMisshapen(config: LlamaConfig, headers: { name: string; shape: number[] }[]): void {
  const given = new Map(headers.map((t) => [t.name, t.shape]));
  const problem = checkShapes(new Map(llamaParameterShapes(config)), given, config);
  if (problem) throw new CheckpointError(problem);
}

/** What is wrong with `weights` for `shapes`, or null. A tied model may carry lm_head (it is not used). */
function checkWeights(shapes: Map<string, number[]>, weights: Map<string, tf.Tensor>, c: LlamaConfig): string | null {
  return checkShapes(shapes, new Map([...weights].map(([name, w]) => [name, w.shape])), c);
}

/** What is wrong with the tensors `given` (name → shape) for `shapes`, or null. */
function checkShapes(shapes: Map<string, number[]>, given: Map<string, number[]>, c: LlamaConfig): string | null {
  for (const [name, shape] of shapes) {
    const w = given.get(name);
    if (!w) return `missing weight ${name}`;
    if (w.join() !== shape.join()) return `weight ${name} has shape [${w}], expected [${shape}]`;
  }
  for (const name of given.keys()) {
    if (shapes.has(name) || IGNORED.test(name) || (c.tieWordEmbeddings && name === "lm_head.weight")) continue;
    return `unexpected weight ${name} for a ${c.family} config`;
  }
  return null;
}

/** q or k [B, n, T, D] rotated: x·cos + rotate_half(x)·sin, rotate_half(x) = cat(−x₂, x₁). */
function rotate(x: tf.Tensor4D, cos: tf.Tensor2D, sin: tf.Tensor2D): tf.Tensor4D {
  const D = x.shape[3];
  const x1 = tf.slice(x, [0, 0, 0, 0], [-1, -1, -1, D / 2]);
  const x2 = tf.slice(x, [0, 0, 0, D / 2], [-1, -1, -1, D / 2]);
  const rotated = tf.concat([tf.neg(x2), x1], 3);
  return tf.add(tf.mul(x, cos), tf.mul(rotated, sin)) as tf.Tensor4D;
}

/** k or v [B, nKv, T, D] → [B, nHead, T, D]: head h reads kv head ⌊h / (nHead / nKv)⌋, as HF's repeat_kv. */
function repeatKv(x: tf.Tensor4D, c: LlamaConfig): tf.Tensor4D {
  const rep = c.nHead / c.nKvHead;
  if (rep === 1) return x;
  // a broadcast against ones (tfjs 4.22 has no gradient for a rank-5 tile, nor for a gather on axis 1 here)
  const [B, n, T, D] = x.shape;
  const spread = tf.mul(tf.reshape(x, [B, n, 1, T, D]), tf.ones([1, 1, rep, 1, 1]));
  return tf.reshape(spread, [B, n * rep, T, D]) as tf.Tensor4D;
}
