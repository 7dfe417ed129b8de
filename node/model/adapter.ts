/**
 * LoRA adapters as PEFT stores them: one safetensors file with `base_model.model.transformer.<module>.lora_A.weight`
 * [r, in] and `lora_B.weight` [out, r], plus adapter_config.json. The file also carries, in its metadata, the
 * adapter config and our provenance fields (task, round, base-model hash, identity), so the one blob in IPFS is
 * self-describing. Identical weights and metadata always give identical bytes.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  isLlamaConfig,
  LM_HEAD,
  loraLayout,
  resolveLlamaTargets,
  validateLoraConfig,
  type LoraConfig,
  type ModelConfig,
} from "./lora.js";
import {
  CheckpointError,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type NamedTensor,
  type TensorHeader,
} from "./safetensors.js";

/** An adapter's tensors or config differ from what the task expects. */
export class AdapterMismatchError extends CheckpointError {
  constructor(
    readonly tensor: string,
    readonly problem: string,
  ) {
    super(`adapter ${tensor}: ${problem}`);
  }
}

/** Provenance carried in the adapter file's metadata. */
export interface AdapterMetadata {
  /** init (round-1 start), update (a client's), global (an aggregate). */
  kind: "init" | "update" | "global";
  task?: number;
  round?: number;
  /** 0x sha256 of the base model's model.safetensors. */
  baseModelSha256: string;
  /** Identity token id of the submitting client (updates). */
  identity?: number;
  /** Strategy that made a global adapter. */
  strategy?: string;
  /** The client's metrics document (canonical JSON) for updates; its sha256 is the on-chain metricsDigest. */
  metrics?: string;
}

/** A's and B's per module, our orientation (A [in, r], B [r, chosen width]). */
export type LoraWeights = Map<string, { A: Float32Array; B: Float32Array }>;

export interface ParsedAdapter {
  weights: LoraWeights;
  config: LoraConfig;
  metadata: AdapterMetadata;
}

/**
 * PEFT's key of a module's tensors: GPT-2's blocks live under `transformer.`, the Llama family's paths are whole,
 * and either's output head is `lm_head` at the top.
 */
function peftModule(model: ModelConfig, module: string): string {
  if (module === LM_HEAD || isLlamaConfig(model)) return `base_model.model.${module}`;
  return `base_model.model.transformer.${module}`;
}

/** PEFT's keys of a module's lora_A and lora_B weights. */
function peftKeys(model: ModelConfig, module: string): { a: string; b: string } {
  const m = peftModule(model, module);
  return { a: `${m}.lora_A.weight`, b: `${m}.lora_B.weight` };
}

/** PEFT's adapter_config.json for our LoRA config on `model`'s family (fixed key order: same config, same bytes). */
export function peftConfig(lora: LoraConfig, model: ModelConfig, baseModel = ""): Record<string, unknown> {
  const llama = isLlamaConfig(model);
  return {
    base_model_name_or_path: baseModel,
    bias: "none",
    // GPT-2's Conv1D stores [in, out]; nn.Linear [out, in] (PEFT turns it off itself for GPT-2's Linear lm_head)
    fan_in_fan_out: !llama,
    inference_mode: true,
    init_lora_weights: true,
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    peft_type: "LORA",
    r: lora.r,
    target_modules: llama ? resolveLlamaTargets(lora.targetModules) : gptPeftModules(lora.targetModules),
    task_type: "CAUSAL_LM",
    // ours: the targets as given (for GPT-2, which of q/k/v the c_attn update may touch); PEFT ignores unknown keys
    fok_target_modules: [...lora.targetModules],
  };
}

/** GPT-2's PEFT module names for our targets: q, k and v are all c_attn. */
function gptPeftModules(targets: string[]): string[] {
  const modules = new Set<string>();
  for (const t of targets) {
    if (["q", "k", "v", "c_attn", "attn.c_attn"].includes(t)) modules.add("c_attn");
    else if (t === LM_HEAD) modules.add(LM_HEAD);
    else if (t === "o" || t === "attn.c_proj") modules.add("attn.c_proj");
    else if (t === "c_fc" || t === "mlp.c_fc") modules.add("c_fc");
    else modules.add("mlp.c_proj");
  }
  return [...modules].sort();
}

/** Serializes adapter weights to PEFT safetensors bytes. */
export function serializeAdapter(
  model: ModelConfig,
  lora: LoraConfig,
  weights: LoraWeights,
  meta: AdapterMetadata,
): Uint8Array {
  const tensors = new Map<string, NamedTensor>();
  for (const m of loraLayout(model, lora)) {
    const w = weights.get(m.module);
    if (!w) throw new AdapterMismatchError(m.module, "weights missing");
    const fanIn = m.inWidth;
    const r = lora.r;
    const width = m.sections.length * m.sectionWidth;
    if (w.A.length !== fanIn * r || w.B.length !== r * width)
      throw new AdapterMismatchError(m.module, "weights have the wrong size");
    // PEFT: lora_A.weight [r, in] = A^T; lora_B.weight [out, r] = B^T expanded with zero rows for untouched sections
    const A = new Float32Array(r * fanIn);
    for (let i = 0; i < fanIn; i++) for (let j = 0; j < r; j++) A[j * fanIn + i] = w.A[i * r + j]!;
    const B = new Float32Array(m.outWidth * r);
    m.sections.forEach((s, k) => {
      for (let c = 0; c < m.sectionWidth; c++) {
        for (let j = 0; j < r; j++) B[(s * m.sectionWidth + c) * r + j] = w.B[j * width + k * m.sectionWidth + c]!;
      }
    });
    const keys = peftKeys(model, m.module);
    tensors.set(keys.a, { shape: [r, fanIn], data: A });
    tensors.set(keys.b, { shape: [m.outWidth, r], data: B });
  }
  const md: Record<string, string> = {
    format: "pt",
    adapter_config: JSON.stringify(peftConfig(lora, model)),
    "fok.kind": meta.kind,
    "fok.base_model_sha256": meta.baseModelSha256,
  };
  if (meta.task !== undefined) md["fok.task"] = String(meta.task);
  if (meta.round !== undefined) md["fok.round"] = String(meta.round);
  if (meta.identity !== undefined) md["fok.identity"] = String(meta.identity);
  if (meta.strategy !== undefined) md["fok.strategy"] = meta.strategy;
  if (meta.metrics !== undefined) md["fok.metrics"] = meta.metrics;
  return writeSafetensors(tensors, md);
}

/**
 * Parses adapter bytes and checks them against the model and (when given) the task's LoRA config: every tensor
 * name, shape and value (finite; exactly zero where the config leaves a section alone). Nothing partial is returned.
 */
export function parseAdapter(bytes: Uint8Array, model: ModelConfig, expected?: LoraConfig): ParsedAdapter {
  let lora: LoraConfig | undefined;
  // names, dtypes and shapes are checked from the header before any tensor is read or widened
  const file = readSafetensors(bytes, {
    checkHeader: (metadata, tensors) => {
      lora = adapterConfig(metadata, expected);
      checkAdapterHeader(model, lora, tensors);
    },
  });
  const weights: LoraWeights = new Map();
  for (const m of loraLayout(model, lora!)) {
    const keys = peftKeys(model, m.module);
    weights.set(m.module, moduleWeights(file.tensors, lora!, m, keys.a, keys.b));
  }
  return { weights, config: lora!, metadata: adapterMetadata(file.metadata) };
}

/** The tensors the layout of `model` and `lora` needs: name → expected shape (all F32). */
function expectedTensors(model: ModelConfig, lora: LoraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const m of loraLayout(model, lora)) {
    const keys = peftKeys(model, m.module);
    out.set(keys.a, [lora.r, m.inWidth]);
    out.set(keys.b, [m.outWidth, lora.r]);
  }
  return out;
}

/** Every tensor in the header is one the layout needs, F32, of its shape; none is missing. */
function checkAdapterHeader(model: ModelConfig, lora: LoraConfig, tensors: TensorHeader[]): void {
  const expected = expectedTensors(model, lora);
  for (const t of tensors) {
    const shape = expected.get(t.name);
    if (!shape) throw new AdapterMismatchError(t.name, "unexpected tensor");
    if (t.dtype !== "F32") throw new AdapterMismatchError(t.name, `dtype ${t.dtype}, expected F32`);
    if (t.shape.join() !== shape.join())
      throw new AdapterMismatchError(t.name, `shape [${t.shape}], expected [${shape}]`);
  }
  const present = new Set(tensors.map((t) => t.name));
  for (const name of expected.keys()) if (!present.has(name)) throw new AdapterMismatchError(name, "missing");
}

/** Room an adapter's header may take beyond its tensors' data: names, offsets, the config and our metadata. */
const ADAPTER_HEADER_ALLOWANCE = 256 * 1024;

/**
 * The largest an adapter file of this model and LoRA config can honestly be: its F32 tensors plus 256 KiB of
 * header. Stores refuse larger blobs of this kind before reading them whole (see AdapterStore.get's `maxBytes`).
 */
export function adapterByteLimit(model: ModelConfig, lora: LoraConfig): number {
  let values = 0;
  for (const shape of expectedTensors(model, lora).values()) values += shape[0]! * shape[1]!;
  return 4 * values + ADAPTER_HEADER_ALLOWANCE;
}

/** The LoRA config an adapter file declares, read from its header alone (valid, or AdapterMismatchError). */
export function adapterLoraConfig(bytes: Uint8Array): LoraConfig {
  return adapterConfig(readSafetensorsHeader(bytes).metadata);
}

/** The LoRA config in the header, valid and (when given) the task's. */
function adapterConfig(metadata: Record<string, string>, expected?: LoraConfig): LoraConfig {
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(metadata.adapter_config ?? "null");
  } catch {
    throw new AdapterMismatchError("adapter_config", "metadata is not valid JSON");
  }
  if (!cfg) throw new AdapterMismatchError("adapter_config", "missing from the file's metadata");
  const lora: LoraConfig = {
    r: cfg.r as number,
    alpha: cfg.lora_alpha as number,
    dropout: (cfg.lora_dropout as number) ?? 0,
    targetModules: (cfg.fok_target_modules ?? cfg.target_modules) as string[],
  };
  try {
    validateLoraConfig(lora);
  } catch (e) {
    throw new AdapterMismatchError("adapter_config", (e as Error).message);
  }
  if (expected) {
    if (lora.r !== expected.r)
      throw new AdapterMismatchError("adapter_config", `r ${lora.r}, task expects ${expected.r}`);
    if (lora.alpha !== expected.alpha)
      throw new AdapterMismatchError("adapter_config", `lora_alpha ${lora.alpha}, task expects ${expected.alpha}`);
    if ([...lora.targetModules].sort().join() !== [...expected.targetModules].sort().join()) {
      throw new AdapterMismatchError(
        "adapter_config",
        `target_modules ${lora.targetModules}, task expects ${expected.targetModules}`,
      );
    }
  }
  return lora;
}

/** One module's A [in, r] and B [r, width] from PEFT's lora_A [r, in] and lora_B [out, r], checked. */
function moduleWeights(
  tensors: ReturnType<typeof readSafetensors>["tensors"],
  lora: LoraConfig,
  m: ReturnType<typeof loraLayout>[number],
  aName: string,
  bName: string,
): { A: Float32Array; B: Float32Array } {
  const fanIn = m.inWidth;
  const r = lora.r;
  const width = m.sections.length * m.sectionWidth;
  const a = tensors.get(aName);
  const b = tensors.get(bName);
  if (!a) throw new AdapterMismatchError(aName, "missing");
  if (!b) throw new AdapterMismatchError(bName, "missing");
  for (const [n, t] of [
    [aName, a],
    [bName, b],
  ] as const) {
    if (t.dtype && t.dtype !== "F32") throw new AdapterMismatchError(n, `dtype ${t.dtype}, expected F32`);
  }
  if (a.shape.join() !== [r, fanIn].join())
    throw new AdapterMismatchError(aName, `shape [${a.shape}], expected [${r},${fanIn}]`);
  if (b.shape.join() !== [m.outWidth, r].join())
    throw new AdapterMismatchError(bName, `shape [${b.shape}], expected [${m.outWidth},${r}]`);
  const A = new Float32Array(fanIn * r);
  for (let i = 0; i < fanIn; i++) for (let j = 0; j < r; j++) A[i * r + j] = a.data[j * fanIn + i]!;
  const B = new Float32Array(r * width);
  for (let s = 0; s < m.outWidth / m.sectionWidth; s++) {
    const k = m.sections.indexOf(s);
    for (let c = 0; c < m.sectionWidth; c++) {
      for (let j = 0; j < r; j++) {
        const v = b.data[(s * m.sectionWidth + c) * r + j]!;
        if (k >= 0) B[j * width + k * m.sectionWidth + c] = v;
        else if (v !== 0)
          throw new AdapterMismatchError(
            bName,
            `non-zero update in section ${"qkv"[s]}, which target_modules leave alone`,
          );
      }
    }
  }
  return { A, B };
}

function adapterMetadata(md: Record<string, string>): ParsedAdapter["metadata"] {
  const kind = md["fok.kind"];
  const num = (k: string) => (md[k] === undefined ? undefined : Number(md[k]));
  return {
    kind: kind === "init" || kind === "global" ? kind : "update",
    baseModelSha256: md["fok.base_model_sha256"] ?? "",
    task: num("fok.task"),
    round: num("fok.round"),
    identity: num("fok.identity"),
    strategy: md["fok.strategy"],
    metrics: md["fok.metrics"],
  };
}

/** Writes a PEFT folder (adapter_model.safetensors + adapter_config.json) from adapter bytes. */
export async function exportPeftFolder(dir: string, bytes: Uint8Array): Promise<void> {
  const { metadata } = readSafetensors(bytes);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "adapter_model.safetensors"), bytes);
  await writeFile(
    join(dir, "adapter_config.json"),
    JSON.stringify(JSON.parse(metadata.adapter_config ?? "{}"), null, 2) + "\n",
  );
}
