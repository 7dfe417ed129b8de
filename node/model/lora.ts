/**
 * LoRA (Hu et al. 2021) on the GPT's projections: y = x·W + b + (alpha/r)·dropout(x)·A·B with A [in, r] random and
 * B [r, out] zero, so step 0 is the base model exactly. Targets are chosen by name:
 *
 *  - `c_attn` (the fused q,k,v projection, as PEFT names it for GPT-2), or any of `q`, `k`, `v`: a c_attn LoRA whose
 *    update touches only the chosen thirds of the output (one shared A; B holds only the chosen columns);
 *  - `attn.c_proj` (attention output; also `o`), `c_fc` (MLP in), `mlp.c_proj` (MLP out).
 *
 * In PEFT's files a q/v-only adapter is a c_attn adapter whose lora_B has zero rows for k: exactly the same update.
 *
 * On the Llama family the targets are nn.Linear projections named as PEFT names them: `q_proj`, `k_proj`, `v_proj`,
 * `o_proj` (also `q`, `k`, `v`, `o`), `gate_proj`, `up_proj`, `down_proj`, each with its own A and B.
 *
 * Either family also takes `lm_head`: an update on the output head (logits = x·Wᵀ + scale·x·A·B, B [r, vocab]),
 * which PEFT accepts as a target too; with a tied head the embedding stays as it is and only the head moves. It is
 * what lets a small adapter change which answer token is likely (a LoRA below a frozen tied head barely can).
 */
import { tf } from "./backend.js";
import { InvalidArgumentError } from "../errors.js";
import { sha256Hex } from "../digest.js";
import type { GPT, GPTConfig } from "./gpt.js";
import { llamaParameterShapes, type LlamaConfig } from "./llama.js";

/** Any model family's config: GPT-2's, or the Llama family's (which carries `family`). */
export type ModelConfig = GPTConfig | LlamaConfig;

export function isLlamaConfig(c: ModelConfig): c is LlamaConfig {
  return "family" in c;
}

/** The output head's module name, as PEFT names it in both families. */
export const LM_HEAD = "lm_head";

/** The Llama family's LoRA targets, PEFT's names, in layer order; aliases q, k, v, o. */
const LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;
const LLAMA_ALIASES: Record<string, string> = { q: "q_proj", k: "k_proj", v: "v_proj", o: "o_proj" };

export interface LoraConfig {
  /** Rank r of the update. */
  r: number;
  /** Scale numerator: the update is multiplied by alpha / r. */
  alpha: number;
  /** Dropout on the LoRA branch's input while training. */
  dropout: number;
  /** Modules to adapt: q, k, v, c_attn, attn.c_proj (o), c_fc, mlp.c_proj. */
  targetModules: string[];
}

export const DEFAULT_LORA_CONFIG: LoraConfig = { r: 8, alpha: 16, dropout: 0, targetModules: ["q", "v"] };

/** One adapted projection in one layer. */
export interface LoraModule {
  /** Module path, e.g. `h.0.attn.c_attn`. */
  module: string;
  /** [in, r] */
  A: tf.Variable;
  /** [r, width of the chosen sections] */
  B: tf.Variable;
  /** For c_attn: which of q, k, v (0, 1, 2) B covers, in order; otherwise [0] with one section of full width. */
  sections: number[];
  /** Width of one output section (C for c_attn thirds; the full output otherwise). */
  sectionWidth: number;
  /** Full output width of the projection. */
  outWidth: number;
  /** Input width of the projection (A's rows). */
  inWidth: number;
}

const KIND_ALIASES: Record<string, string> = {
  o: "attn.c_proj",
  "attn.c_proj": "attn.c_proj",
  c_fc: "mlp.c_fc",
  "mlp.c_fc": "mlp.c_fc",
  "mlp.c_proj": "mlp.c_proj",
};

/** Resolves target names to per-layer module suffixes and c_attn sections; rejects unknown names. */
export function resolveTargets(targets: string[]): { cAttnSections: number[]; others: string[]; head: boolean } {
  const sections = new Set<number>();
  const others = new Set<string>();
  let head = false;
  for (const t of targets) {
    if (t === LM_HEAD) head = true;
    else if (t === "c_attn" || t === "attn.c_attn") [0, 1, 2].forEach((s) => sections.add(s));
    else if (t === "q" || t === "k" || t === "v") sections.add("qkv".indexOf(t));
    else if (KIND_ALIASES[t]) others.add(KIND_ALIASES[t]!);
    else
      throw new InvalidArgumentError(
        `unknown LoRA target module ${JSON.stringify(t)}; use q, k, v, c_attn, attn.c_proj, c_fc, mlp.c_proj, lm_head`,
      );
  }
  if (sections.size === 0 && others.size === 0 && !head)
    throw new InvalidArgumentError("LoRA needs at least one target module");
  return {
    cAttnSections: [...sections].sort(),
    others: ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"].filter((o) => others.has(o)),
    head,
  };
}

/** The Llama family's targets in canonical order; rejects names that are not Llama projections. */
export function resolveLlamaTargets(targets: string[]): string[] {
  const chosen = new Set<string>();
  for (const t of targets) {
    const name = LLAMA_ALIASES[t] ?? t;
    if (!isLlamaTarget(name)) {
      throw new InvalidArgumentError(
        `unknown LoRA target module ${JSON.stringify(t)} for a Llama-family model; ` +
          `use ${LLAMA_TARGETS.join(", ")}, ${LM_HEAD}`,
      );
    }
    chosen.add(name);
  }
  if (chosen.size === 0) throw new InvalidArgumentError("LoRA needs at least one target module");
  return [...LLAMA_TARGETS, LM_HEAD].filter((t) => chosen.has(t));
}

function isLlamaTarget(name: string): boolean {
  return name === LM_HEAD || (LLAMA_TARGETS as readonly string[]).includes(name);
}

/** r, alpha and dropout in range, and every target a known name of some family (the layout checks the family). */
export function validateLoraConfig(c: LoraConfig): void {
  if (!Number.isInteger(c.r) || c.r < 1)
    throw new InvalidArgumentError(`LoRA r must be a positive integer, got ${c.r}`);
  if (!(c.alpha > 0)) throw new InvalidArgumentError(`LoRA alpha must be positive, got ${c.alpha}`);
  if (!(c.dropout >= 0 && c.dropout < 1))
    throw new InvalidArgumentError(`LoRA dropout must be in [0, 1), got ${c.dropout}`);
  if (!Array.isArray(c.targetModules)) throw new InvalidArgumentError("LoRA target modules must be a list");
  const llama = c.targetModules.every((t) => isLlamaTarget(LLAMA_ALIASES[t] ?? t));
  if (!llama || c.targetModules.length === 0) resolveTargets(c.targetModules);
}

/** The module layout (names and shapes) a LoRA config gives on a model config, without creating tensors. */
export function loraLayout(model: ModelConfig, lora: LoraConfig): Omit<LoraModule, "A" | "B">[] {
  validateLoraConfig(lora);
  if (isLlamaConfig(model)) return llamaLayout(model, lora);
  const { cAttnSections, others, head } = resolveTargets(lora.targetModules);
  const C = model.nEmbd;
  const out: Omit<LoraModule, "A" | "B">[] = [];
  for (let i = 0; i < model.nLayer; i++) {
    if (cAttnSections.length > 0) {
      const module = `h.${i}.attn.c_attn`;
      out.push({ module, sections: cAttnSections, sectionWidth: C, outWidth: 3 * C, inWidth: C });
    }
    for (const o of others) {
      const width = o === "mlp.c_fc" ? 4 * C : C;
      const fanIn = o === "mlp.c_proj" ? 4 * C : C;
      out.push({ module: `h.${i}.${o}`, sections: [0], sectionWidth: width, outWidth: width, inWidth: fanIn });
    }
  }
  if (head) out.push(headModule(C, model.vocabSize));
  return out;
}

function headModule(inWidth: number, vocab: number): Omit<LoraModule, "A" | "B"> {
  return { module: LM_HEAD, sections: [0], sectionWidth: vocab, outWidth: vocab, inWidth };
}

function llamaLayout(c: LlamaConfig, lora: LoraConfig): Omit<LoraModule, "A" | "B">[] {
  const weights = new Map(llamaParameterShapes(c)); // nn.Linear weights: [out, in]
  const out: Omit<LoraModule, "A" | "B">[] = [];
  const targets = resolveLlamaTargets(lora.targetModules);
  for (let i = 0; i < c.nLayer; i++) {
    for (const t of targets.filter((t) => t !== LM_HEAD)) {
      const block = ["gate_proj", "up_proj", "down_proj"].includes(t) ? "mlp" : "self_attn";
      const module = `model.layers.${i}.${block}.${t}`;
      const [width, fanIn] = weights.get(`${module}.weight`)!;
      out.push({ module, sections: [0], sectionWidth: width!, outWidth: width!, inWidth: fanIn! });
    }
  }
  if (targets.includes(LM_HEAD)) out.push(headModule(c.hiddenSize, c.vocabSize));
  return out;
}

let instances = 0;

export class LoraAdapter {
  readonly modules: Map<string, LoraModule>;
  readonly scale: number;

  /**
   * A fresh adapter: A ~ U(-1/sqrt(in), 1/sqrt(in)) (PEFT's kaiming-uniform with a = sqrt(5)), B = 0; seeded.
   */
  static init(model: ModelConfig, config: LoraConfig, seed = 42): LoraAdapter {
    const weights = new Map<string, { A: tf.Tensor2D; B: tf.Tensor2D }>();
    let s = seed;
    for (const m of loraLayout(model, config)) {
      const fanIn = m.inWidth;
      const bound = 1 / Math.sqrt(fanIn);
      weights.set(m.module, {
        A: tf.randomUniform([fanIn, config.r], -bound, bound, "float32", s++) as tf.Tensor2D,
        B: tf.zeros([config.r, m.sections.length * m.sectionWidth]) as tf.Tensor2D,
      });
    }
    return new LoraAdapter(model, config, weights);
  }

  /** Wraps given A/B tensors (our orientation: A [in, r], B [r, width]); takes ownership. */
  constructor(
    readonly model: ModelConfig,
    readonly config: LoraConfig,
    weights: Map<string, { A: tf.Tensor2D; B: tf.Tensor2D }>,
  ) {
    this.scale = config.alpha / config.r;
    this.modules = new Map();
    const id = instances++; // tfjs variable names are global
    for (const m of loraLayout(model, config)) {
      const w = weights.get(m.module);
      if (!w) throw new InvalidArgumentError(`LoRA weights for ${m.module} are missing`);
      const wantA = [m.inWidth, config.r];
      const wantB = [config.r, m.sections.length * m.sectionWidth];
      if (w.A.shape.join() !== wantA.join())
        throw new InvalidArgumentError(`LoRA A of ${m.module} has shape [${w.A.shape}], expected [${wantA}]`);
      if (w.B.shape.join() !== wantB.join())
        throw new InvalidArgumentError(`LoRA B of ${m.module} has shape [${w.B.shape}], expected [${wantB}]`);
      this.modules.set(m.module, {
        ...m,
        A: tf.variable(w.A, true, `lora${id}/${m.module}/A`),
        B: tf.variable(w.B, true, `lora${id}/${m.module}/B`),
      });
      w.A.dispose();
      w.B.dispose();
    }
  }

  /** Every trainable variable, in layout order (A then B per module); with "B", the B's only (FFA-LoRA). */
  variables(which: "all" | "B" = "all"): tf.Variable[] {
    return [...this.modules.values()].flatMap((m) => (which === "B" ? [m.B] : [m.A, m.B]));
  }

  /** The variables of the modules whose name starts with `prefix` (one layer's: "model.layers.3."). */
  variablesUnder(prefix: string): tf.Variable[] {
    return [...this.modules.values()].filter((m) => m.module.startsWith(prefix)).flatMap((m) => [m.A, m.B]);
  }

  /**
   * f() with this adapter's dropout masks drawn from seeds seed, seed + 1, … in call order, so that running the same
   * computation again (a recomputed layer's backward pass) draws the same masks.
   */
  withDropoutSeed<T>(seed: number, f: () => T): T {
    const outer = this.dropoutSeed;
    this.dropoutSeed = { next: seed };
    try {
      return f();
    } finally {
      this.dropoutSeed = outer;
    }
  }

  private dropoutSeed: { next: number } | null = null;

  private dropout(x: tf.Tensor2D, training: boolean): tf.Tensor2D {
    if (!training || this.config.dropout === 0) return x;
    return tf.dropout(
      x,
      this.config.dropout,
      undefined,
      this.dropoutSeed ? this.dropoutSeed.next++ : undefined,
    ) as tf.Tensor2D;
  }

  /** Adds this adapter's update to projection `module`'s output y (= x·W + b). */
  apply(module: string, x: tf.Tensor2D, y: tf.Tensor2D, training: boolean): tf.Tensor2D {
    const m = this.modules.get(module);
    if (!m) return y;
    const xin = this.dropout(x, training);
    const delta = tf.mul(tf.matMul(tf.matMul(xin, m.A), m.B), this.scale) as tf.Tensor2D; // [N, width]
    return tf.add(y, this.expand(m, delta)) as tf.Tensor2D;
  }

  /**
   * The update of each output section of `module` for input x: an array indexed by section (q, k, v for c_attn)
   * holding [N, sectionWidth] tensors, or undefined where the adapter leaves that section alone.
   */
  sectionDeltas(module: string, x: tf.Tensor2D, training: boolean): (tf.Tensor2D | undefined)[] | null {
    const m = this.modules.get(module);
    if (!m) return null;
    const xin = this.dropout(x, training);
    const xa = tf.mul(tf.matMul(xin, m.A), this.scale) as tf.Tensor2D; // [N, r]
    const out: (tf.Tensor2D | undefined)[] = [];
    m.sections.forEach((s, k) => {
      const Bs =
        m.sections.length === 1 ? m.B : tf.slice(m.B, [0, k * m.sectionWidth], [this.config.r, m.sectionWidth]);
      out[s] = tf.matMul(xa, Bs) as tf.Tensor2D;
    });
    return out;
  }

  /** Places a [.., sections·width] update into the projection's full output width (zeros elsewhere). */
  private expand(m: LoraModule, delta: tf.Tensor2D): tf.Tensor2D {
    if (m.sections.length * m.sectionWidth === m.outWidth) return delta;
    const rows = delta.shape[0];
    const parts: tf.Tensor2D[] = [];
    let k = 0;
    for (let s = 0; s < m.outWidth / m.sectionWidth; s++) {
      if (m.sections.includes(s)) parts.push(tf.slice(delta, [0, k++ * m.sectionWidth], [rows, m.sectionWidth]));
      else parts.push(tf.zeros([rows, m.sectionWidth]));
    }
    return tf.concat(parts, 1);
  }

  /** The dense update ΔW = scale·A·B of one module, in the projection's full [in, out] shape. */
  deltaWeight(module: string): tf.Tensor2D {
    const m = this.modules.get(module)!;
    return tf.tidy(() => this.expand(m, tf.mul(tf.matMul(m.A, m.B), this.scale) as tf.Tensor2D));
  }

  /**
   * Adds ΔW into the GPT's weights (inference without the extra branch; GPT-2's [in, out] layout). An lm_head
   * update cannot be merged: the head is tied to the embedding, which would change too.
   */
  merge(gpt: GPT): void {
    if (this.modules.has(LM_HEAD))
      throw new InvalidArgumentError("an lm_head update cannot be merged into GPT-2's head, which is tied");
    for (const module of this.modules.keys()) {
      const w = gpt.params.get(module + ".weight")!;
      tf.tidy(() => w.assign(tf.add(w, this.deltaWeight(module))));
    }
  }

  /** Subtracts ΔW again (restores the base weights up to float rounding). */
  unmerge(gpt: GPT): void {
    for (const module of this.modules.keys()) {
      const w = gpt.params.get(module + ".weight")!;
      tf.tidy(() => w.assign(tf.sub(w, this.deltaWeight(module))));
    }
  }

  /** Replaces every A and B with given values (e.g. a downloaded global adapter); shapes must match. */
  assign(weights: Map<string, { A: Float32Array; B: Float32Array }>): void {
    for (const [module, m] of this.modules) {
      const w = weights.get(module);
      if (!w) throw new InvalidArgumentError(`LoRA weights for ${module} are missing`);
      if (w.A.length !== m.A.size || w.B.length !== m.B.size)
        throw new InvalidArgumentError(`LoRA weights for ${module} have the wrong size`);
      tf.tidy(() => {
        m.A.assign(tf.tensor2d(w.A, m.A.shape as [number, number]));
        m.B.assign(tf.tensor2d(w.B, m.B.shape as [number, number]));
      });
    }
  }

  /** A and B of every module as plain arrays (our orientation). */
  async exportWeights(): Promise<Map<string, { A: Float32Array; B: Float32Array }>> {
    const out = new Map<string, { A: Float32Array; B: Float32Array }>();
    for (const [module, m] of this.modules) {
      out.set(module, { A: (await m.A.data()) as Float32Array, B: (await m.B.data()) as Float32Array });
    }
    return out;
  }

  dispose(): void {
    for (const m of this.modules.values()) {
      m.A.dispose();
      m.B.dispose();
    }
  }
}

/** sha256 (0x hex) of the LoRA config's canonical JSON (PEFT key names, targets sorted). */
export function loraConfigHash(lora: LoraConfig): string {
  const canonical = JSON.stringify({
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    r: lora.r,
    target_modules: [...lora.targetModules].sort(),
  });
  return sha256Hex(canonical);
}
