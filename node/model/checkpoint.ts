/**
 * Base-model checkpoints in the Hugging Face GPT-2 layout: a folder with config.json, model.safetensors and
 * tokenizer.json. Ours also carry config and tokenizer inside model.safetensors' metadata, so the one file is the
 * whole base model: its sha256 is the base-model hash registered on-chain, and its CID is what clients fetch.
 * A Llama-family Hub folder (llama, qwen2, mistral; sharded or not) becomes the same kind of one file through
 * hub.ts's canonical bundle, so every layer above (tasks, workers, IPFS, verify) handles one blob per base.
 *
 * Loading validates everything before creating a single tensor: a bad file leaves no partial model behind.
 */
import { createHash } from "node:crypto";
import { sha256Hex } from "../digest.js";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tf } from "./backend.js";
import { GPT, parameterShapes, validateConfig, type GPTConfig } from "./gpt.js";
import { BPETokenizer, END_OF_TEXT } from "./tokenizer.js";
import type { CausalLM } from "./causal-lm.js";
import { LLAMA_FAMILIES, Llama, UnsupportedModelError, parseLlamaConfig, type LlamaConfig } from "./llama.js";
import { bundleHubCheckpoint, planHubBundle, readHubWeights } from "./hub.js";
import {
  CheckpointError,
  readSafetensors,
  readSafetensorsHeader,
  readSafetensorsRaw,
  writeSafetensors,
  type NamedTensor,
} from "./safetensors.js";

/** A weight is missing, unexpected, or has the wrong shape for the config. */
export class WeightMismatchError extends CheckpointError {
  constructor(
    readonly tensor: string,
    readonly problem: string,
  ) {
    super(`weight ${tensor}: ${problem}`);
  }
}

export interface BaseModel {
  model: CausalLM;
  tokenizer: BPETokenizer;
  /** sha256 (0x hex) of model.safetensors: the base-model hash. */
  sha256: string;
  /**
   * The exact bytes hashed (model.safetensors, or a Llama-family folder's bundle) where they were read whole; a
   * folder streamed by loadBaseModel has none (readBaseBytes reads them when they must travel).
   */
  bytes?: Uint8Array;
}

/** GPT-2's config.json for a config (the keys transformers reads). */
export function toHfConfig(c: GPTConfig, eosId: number): Record<string, unknown> {
  return {
    activation_function: "gelu_new",
    architectures: ["GPT2LMHeadModel"],
    attn_pdrop: c.dropout,
    bos_token_id: eosId,
    embd_pdrop: c.dropout,
    eos_token_id: eosId,
    layer_norm_epsilon: c.layerNormEps,
    model_type: "gpt2",
    n_ctx: c.blockSize,
    n_embd: c.nEmbd,
    n_head: c.nHead,
    n_layer: c.nLayer,
    n_positions: c.blockSize,
    resid_pdrop: c.dropout,
    tie_word_embeddings: true,
    vocab_size: c.vocabSize,
  };
}

/** Reads a GPT-2 config.json; typed error for anything we cannot run. */
export function fromHfConfig(json: unknown): GPTConfig {
  const j = json as Record<string, unknown>;
  if (!j || typeof j !== "object") throw new CheckpointError("config.json is not an object");
  if (j.model_type !== undefined && j.model_type !== "gpt2")
    throw new CheckpointError(`model_type ${String(j.model_type)} is not gpt2`);
  if (j.tie_word_embeddings === false) throw new CheckpointError("untied output heads are not supported");
  if (
    j.activation_function !== undefined &&
    j.activation_function !== "gelu_new" &&
    j.activation_function !== "gelu_pytorch_tanh"
  ) {
    throw new CheckpointError(`activation ${String(j.activation_function)} is not supported (gelu_new only)`);
  }
  const num = (k: string, d?: number) => {
    const v = j[k] ?? d;
    if (typeof v !== "number") throw new CheckpointError(`config.json: ${k} missing or not a number`);
    return v;
  };
  const c: GPTConfig = {
    nLayer: num("n_layer"),
    nEmbd: num("n_embd"),
    nHead: num("n_head"),
    blockSize: num("n_positions"),
    vocabSize: num("vocab_size"),
    dropout: 0,
    layerNormEps: num("layer_norm_epsilon", 1e-5),
  };
  try {
    validateConfig(c);
  } catch (e) {
    throw new CheckpointError(`config.json: ${(e as Error).message}`);
  }
  return c;
}

/** Serializes a base model to model.safetensors bytes (config and tokenizer in its metadata). */
export async function serializeBaseModel(gpt: GPT, tokenizer: BPETokenizer): Promise<Uint8Array> {
  const weights = await gpt.exportWeights();
  return writeSafetensors(weights, {
    format: "pt",
    "fok.config": JSON.stringify(toHfConfig(gpt.config, tokenizer.endOfTextId)),
    "fok.tokenizer": tokenizer.json,
  });
}

/** Writes the folder (config.json, model.safetensors, tokenizer.json); returns the base-model sha256. */
export async function saveBaseModel(dir: string, gpt: GPT, tokenizer: BPETokenizer): Promise<string> {
  await mkdir(dir, { recursive: true });
  const bytes = await serializeBaseModel(gpt, tokenizer);
  await writeFile(join(dir, "model.safetensors"), bytes);
  await writeFile(
    join(dir, "config.json"),
    JSON.stringify(toHfConfig(gpt.config, tokenizer.endOfTextId), null, 2) + "\n",
  );
  await writeFile(join(dir, "tokenizer.json"), tokenizer.json);
  return sha256Hex(bytes);
}

/** The model config carried in model.safetensors' metadata, read from the header alone (no weights are read). */
export function baseModelConfig(bytes: Uint8Array): GPTConfig {
  const text = readSafetensorsHeader(bytes).metadata["fok.config"];
  if (text === undefined) throw new CheckpointError("no config: model.safetensors carries none");
  try {
    return fromHfConfig(JSON.parse(text));
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`config is not valid JSON: ${(e as Error).message}`);
  }
}

/**
 * Loads a base model from model.safetensors bytes (or a Llama-family bundle) that carry config and tokenizer in
 * their metadata; the config's `model_type` picks the family.
 */
export function parseBaseModel(bytes: Uint8Array, overrides: { config?: unknown; tokenizer?: string } = {}): BaseModel {
  const family = familyOf(overrides.config ?? readSafetensorsHeader(bytes).metadata["fok.config"]);
  if (family) return parseLlamaBase(bytes);
  const file = readSafetensors(bytes);
  const cfgText = overrides.config ?? file.metadata["fok.config"];
  const tokText = overrides.tokenizer ?? file.metadata["fok.tokenizer"];
  if (cfgText === undefined)
    throw new CheckpointError("no config: model.safetensors carries none and no config.json was given");
  if (tokText === undefined)
    throw new CheckpointError("no tokenizer: model.safetensors carries none and no tokenizer.json was given");
  let cfgJson: unknown;
  try {
    cfgJson = typeof cfgText === "string" ? JSON.parse(cfgText) : cfgText;
  } catch (e) {
    throw new CheckpointError(`config is not valid JSON: ${(e as Error).message}`);
  }
  const config = fromHfConfig(cfgJson);
  const tokenizer = BPETokenizer.fromJSON(tokText);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new CheckpointError(
      `tokenizer has ${tokenizer.vocabSize} tokens, more than the model's vocab_size ${config.vocabSize}`,
    );
  }
  const weights = matchWeights(file.tensors, config);
  const gpt = new GPT(config, new Map([...weights].map(([k, t]) => [k, tf.tensor(t.data, t.shape)])));
  return { model: gpt, tokenizer, sha256: sha256Hex(bytes), bytes };
}

/** The Llama family a config (JSON text or value) names, or null for anything else (GPT-2). */
function familyOf(config: unknown): string | null {
  let json = config;
  if (typeof config === "string") {
    try {
      json = JSON.parse(config);
    } catch {
      return null; // the GPT-2 path says what is wrong with it
    }
  }
  const type = (json as { model_type?: unknown } | null)?.model_type;
  return typeof type === "string" && (LLAMA_FAMILIES as readonly string[]).includes(type) ? type : null;
}

/** A Llama-family bundle: config, tokenizer (with its end-of-sequence token) and weights, all checked first. */
function parseLlamaBase(bytes: Uint8Array): BaseModel {
  const file = readSafetensorsRaw(bytes); // widened tensor by tensor into the backend (Llama.fromRawTensors)
  const { config, tokenizer } = llamaParts(file.metadata);
  return { model: Llama.fromRawTensors(config, file.tensors), tokenizer, sha256: sha256Hex(bytes), bytes };
}

/**
 * A Llama-family Hub folder streamed into the backend: the bundle (see planHubBundle) is hashed as its tensors are
 * read from the shards, one at a time, each widened to f32 and moved into the backend before the next is read, so
 * neither the bundle nor an f32 copy of the model is ever held outside the backend. Config, tokenizer and every
 * tensor's name, shape and dtype are checked from the headers before any weight is read.
 */
async function loadLlamaFolder(dir: string): Promise<BaseModel> {
  const plan = await planHubBundle(dir);
  const { config, tokenizer } = llamaParts(plan.metadata);
  const hash = createHash("sha256");
  const model = await Llama.fromStream(
    config,
    plan.tensors,
    readHubWeights(dir, plan, (b) => hash.update(b)),
  );
  return { model, tokenizer, sha256: "0x" + hash.digest("hex") };
}

/** A Llama-family bundle's config and tokenizer (with its end-of-sequence token), checked against each other. */
function llamaParts(md: Record<string, string>): { config: LlamaConfig; tokenizer: BPETokenizer } {
  const config = parseLlamaConfig(JSON.parse(md["fok.config"]!));
  if (md["fok.tokenizer"] === undefined) throw new CheckpointError("no tokenizer: the checkpoint lacks tokenizer.json");
  const tokenizer = BPETokenizer.fromJSON(md["fok.tokenizer"], endOfSequence(md));
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new CheckpointError(
      `tokenizer.json has ${tokenizer.vocabSize} tokens, more than the embedding's vocab_size ${config.vocabSize}`,
    );
  }
  return { config, tokenizer };
}

/** The end-of-sequence token: tokenizer_config.json's eos_token, else generation_config.json's eos_token_id. */
function endOfSequence(md: Record<string, string>): string | number {
  const parse = (k: string) => {
    try {
      return md[k] === undefined ? null : JSON.parse(md[k]!);
    } catch {
      throw new CheckpointError(`${k.slice(4)}.json is not valid JSON`);
    }
  };
  const eos = parse("fok.tokenizer_config")?.eos_token;
  if (typeof eos === "string") return eos;
  if (typeof eos?.content === "string") return eos.content;
  const id = parse("fok.generation_config")?.eos_token_id;
  if (Number.isInteger(id)) return id;
  if (Array.isArray(id) && Number.isInteger(id[0])) return id[0];
  throw new CheckpointError(
    "no end-of-sequence token: tokenizer_config.json has no eos_token and generation_config.json no eos_token_id",
  );
}

/**
 * The one blob a base-model folder is on-chain and in IPFS: a Llama-family Hub folder's canonical bundle, or the
 * folder's model.safetensors (ours carries config and tokenizer in its metadata). `shared`: a bundle is built in a
 * SharedArrayBuffer, for worker threads to read without a copy each.
 */
export async function readBaseBytes(dir: string, options: { shared?: boolean } = {}): Promise<Uint8Array> {
  if (await isHubFamilyFolder(dir)) return bundleHubCheckpoint(dir, options);
  return readFile(join(dir, "model.safetensors"));
}

/**
 * The bytes of `base` for worker threads that parse it themselves (data-parallel training): the bytes it holds, or
 * for a folder it streamed, `dir` read again into shared memory and held to the digest `base` was loaded with — a
 * folder changed since is refused rather than giving the workers other weights than this thread's.
 */
export async function workerBaseBytes(base: BaseModel, dir: string): Promise<Uint8Array> {
  if (base.bytes) return base.bytes;
  const bytes = await readBaseBytes(dir, { shared: true });
  const digest = sha256Hex(bytes);
  if (digest !== base.sha256)
    throw new CheckpointError(`${dir} changed after it was loaded: its bytes hash to ${digest}, not ${base.sha256}`);
  return bytes;
}

/**
 * Whether `dir`'s config.json names a Llama-family model; false without a config.json or for GPT-2 (ours carry
 * their config inside model.safetensors). Any other `model_type` is an UnsupportedModelError naming it.
 */
async function isHubFamilyFolder(dir: string): Promise<boolean> {
  const text = await readFile(join(dir, "config.json"), "utf8").catch(() => null);
  if (text === null) return false;
  if (familyOf(text)) return true;
  let type: unknown;
  try {
    type = (JSON.parse(text) as { model_type?: unknown } | null)?.model_type;
  } catch {
    return false; // the GPT-2 path reports what is wrong with the file
  }
  if (type !== undefined && type !== "gpt2") {
    throw new UnsupportedModelError("model_type", type, `supported: gpt2, ${LLAMA_FAMILIES.join(", ")}`);
  }
  return false;
}

/**
 * Loads a base-model folder: a Llama-family Hub checkpoint (config.json `model_type` llama, qwen2 or mistral) as
 * its canonical bundle, or the Hugging Face GPT-2 layout (ours, or a GPT-2-family checkpoint).
 */
export async function loadBaseModel(dir: string): Promise<BaseModel> {
  if (await isHubFamilyFolder(dir)) return loadLlamaFolder(dir);
  const bytes = await readFile(join(dir, "model.safetensors"));
  const meta = readSafetensors(bytes).metadata;
  const config = meta["fok.config"] ?? (await readJsonFile(join(dir, "config.json")));
  const tokenizer = meta["fok.tokenizer"] ?? (await readFile(join(dir, "tokenizer.json"), "utf8"));
  return parseBaseModel(bytes, { config, tokenizer });
}

/**
 * Checkpoint tensors keyed as our parameters: `transformer.` prefixes stripped, GPT-2's buffers and tied head
 * dropped.
 */
function matchWeights(tensors: Map<string, NamedTensor>, config: GPTConfig): Map<string, NamedTensor> {
  const byName = new Map<string, NamedTensor>();
  for (const [raw, t] of tensors) {
    const name = raw.startsWith("transformer.") ? raw.slice("transformer.".length) : raw;
    if (/^h\.\d+\.attn\.(masked_)?bias$/.test(name)) continue; // GPT-2's causal-mask buffers
    if (name === "lm_head.weight") continue; // tied to wte
    byName.set(name, t);
  }
  const expected = parameterShapes(config);
  for (const [name, shape] of expected) {
    const t = byName.get(name);
    if (!t) throw new WeightMismatchError(name, "missing");
    if (t.shape.join(",") !== shape.join(","))
      throw new WeightMismatchError(name, `shape [${t.shape}], expected [${shape}]`);
    if (t.dtype && !["F32", "F16", "BF16"].includes(t.dtype))
      throw new WeightMismatchError(name, `dtype ${t.dtype}, expected a float type (F32, F16, BF16)`);
  }
  const known = new Set(expected.map(([n]) => n));
  for (const name of byName.keys())
    if (!known.has(name)) throw new WeightMismatchError(name, "unexpected for this config");
  return byName;
}

async function readJsonFile(path: string): Promise<unknown> {
  try {
    return JSON.parse(await readFile(path, "utf8"));
  } catch (e) {
    throw new CheckpointError(`${path}: ${(e as Error).message}`);
  }
}

export { END_OF_TEXT };
