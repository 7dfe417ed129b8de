/**
 * Checkpoint folders as the Hugging Face Hub ships them: config.json, then model.safetensors or shards named by
 * model.safetensors.index.json (`weight_map`: tensor → file). Tensors in F32, F16 or BF16 come back as f32. A
 * missing file or shard, a tensor the index names but its shard lacks (or the reverse), a dtype the engine cannot
 * read and a NaN or Inf are each a CheckpointError naming the file and the tensor; nothing partial is returned.
 */
import { existsSync } from "node:fs";
import { open, readFile, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import {
  CheckpointError,
  rawSafetensorsHeader,
  readSafetensorsLocations,
  widenTensor,
  type DType,
  type NamedTensor,
  type TensorLocation,
} from "./safetensors.js";
import { Llama, parseLlamaConfig, type LlamaConfig } from "./llama.js";

export interface HubCheckpoint {
  /** config.json as parsed JSON. */
  config: Record<string, unknown>;
  /** Every tensor, widened to f32, by checkpoint key. */
  tensors: Map<string, NamedTensor>;
  /** The safetensors files read, in order. */
  files: string[];
}

const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);

/** Reads a Hub checkpoint folder's config and weights (widened to f32; a NaN or Inf names its file and tensor). */
export async function readHubCheckpoint(dir: string): Promise<HubCheckpoint> {
  const config = await readJson(dir, "config.json");
  const plan = await planHubBundle(dir);
  const tensors = new Map<string, NamedTensor>();
  for await (const t of readHubWeights(dir, plan))
    tensors.set(t.name, { shape: t.shape, data: t.data, dtype: t.dtype as DType });
  return { config, tensors, files: [...new Set(plan.tensors.map((t) => t.file))] };
}

/** The Hub files a base-model bundle carries beside the weights, each under `fok.<name without .json>`. */
const BUNDLED_JSON = ["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"] as const;

/** A tensor of a Hub folder: its header, the shard it is in and where in that file its bytes lie. */
export interface ShardTensor extends TensorLocation {
  file: string;
}

/**
 * A Hub folder's canonical bundle, planned from the JSON files and the shards' headers alone: the bundle's metadata
 * and header bytes, and its tensors in bundle order, each with where its bytes lie in its shard.
 */
export interface HubBundlePlan {
  metadata: Record<string, string>;
  header: Uint8Array;
  tensors: ShardTensor[];
  /** The bundle's size in bytes. */
  size: number;
}

/**
 * Plans the one canonical file for a Hub checkpoint folder, so that a sharded base has one digest and travels as
 * one blob: every tensor of model.safetensors or of the shards model.safetensors.index.json names, in its stored
 * dtype and bytes, sorted by name, with config.json, tokenizer.json, tokenizer_config.json and
 * generation_config.json (those present) as text in the metadata (`fok.config`, `fok.tokenizer`,
 * `fok.tokenizer_config`, `fok.generation_config`). The same folder content always gives the same bytes; the base
 * model's on-chain digest is their sha256. The shard layout is not part of it: re-sharding the same tensors gives
 * the same bundle. Each shard is checked (present, holding exactly what the index maps to it, float dtypes only)
 * from its header; no tensor is read.
 */
export async function planHubBundle(dir: string): Promise<HubBundlePlan> {
  const metadata: Record<string, string> = { format: "pt" };
  for (const file of BUNDLED_JSON) {
    const text = await readFile(join(dir, file), "utf8").catch((e) => {
      if ((e as { code?: string }).code === "ENOENT" && file !== "config.json") return null;
      throw new CheckpointError(`cannot read ${join(dir, file)}: ${(e as Error).message}`, { cause: e });
    });
    if (text !== null) metadata[`fok.${file.slice(0, -".json".length)}`] = text;
  }
  const located: ShardTensor[] = [];
  for (const shard of await shardsOf(dir)) {
    const path = join(dir, shard.file);
    if (!existsSync(path)) throw new CheckpointError(`missing checkpoint file ${path}`);
    const { tensors } = await inFile(shard.file, () => readSafetensorsLocations(path));
    checkShard(
      shard.file,
      tensors.map((t) => t.name),
      shard.names,
    );
    for (const t of tensors) {
      if (!FLOAT_DTYPES.has(t.dtype))
        throw new CheckpointError(`${shard.file}: tensor ${t.name}: dtype ${t.dtype} is not F32/F16/BF16`);
      located.push({ ...t, file: shard.file });
    }
  }
  const { header, sorted, dataLength } = rawSafetensorsHeader(located, metadata);
  return { metadata, header, tensors: sorted, size: header.length + dataLength };
}

/**
 * The bundle's bytes in order, read from the shards as they go: first its header (tensor null), then each tensor's
 * stored bytes. Only one tensor's bytes are held at a time. A shard that changed since it was planned (shorter
 * than its header says) is a CheckpointError naming it.
 */
export async function* readHubBundle(
  dir: string,
  plan: HubBundlePlan,
): AsyncGenerator<{ tensor: ShardTensor | null; bytes: Uint8Array }> {
  yield { tensor: null, bytes: plan.header };
  const handles = new Map<string, FileHandle>();
  try {
    for (const t of plan.tensors) {
      let fh = handles.get(t.file);
      if (!fh) handles.set(t.file, (fh = await open(join(dir, t.file), "r")));
      const bytes = Buffer.allocUnsafe(t.length);
      const { bytesRead } = await fh.read(bytes, 0, t.length, t.offset);
      if (bytesRead !== t.length) throw new CheckpointError(`${t.file}: tensor ${t.name}: file ends early (changed?)`);
      yield { tensor: t, bytes };
    }
  } finally {
    for (const fh of handles.values()) await fh.close();
  }
}

/**
 * The bundle's tensors widened to f32 one at a time (see readHubBundle); `onBytes` sees every byte of the bundle in
 * order (its header too), for a digest. A NaN or Inf is a CheckpointError naming the shard and the tensor.
 */
export async function* readHubWeights(
  dir: string,
  plan: HubBundlePlan,
  onBytes: (bytes: Uint8Array) => void = () => {},
): AsyncGenerator<{ name: string; dtype: string; shape: number[]; data: Float32Array }> {
  for await (const { tensor, bytes } of readHubBundle(dir, plan)) {
    onBytes(bytes);
    if (!tensor) continue;
    const data = await inFile(tensor.file, () => widenTensor({ ...tensor, bytes }));
    yield { name: tensor.name, dtype: tensor.dtype, shape: tensor.shape, data };
  }
}

/** The canonical bundle of a Hub folder (see planHubBundle) as one buffer. */
export async function bundleHubCheckpoint(dir: string, options: { shared?: boolean } = {}): Promise<Uint8Array> {
  const plan = await planHubBundle(dir);
  const out = options.shared ? new Uint8Array(new SharedArrayBuffer(plan.size)) : Buffer.allocUnsafe(plan.size);
  let pos = 0;
  for await (const { bytes } of readHubBundle(dir, plan)) {
    out.set(bytes, pos);
    pos += bytes.length;
  }
  return out;
}

/** The safetensors files of a folder and the tensors the index maps to each (null: a single file, unchecked). */
async function shardsOf(dir: string): Promise<{ file: string; names: string[] | null }[]> {
  const index = await readJson(dir, "model.safetensors.index.json").catch((e) => {
    if ((e as { code?: string }).code === "ENOENT") return null;
    throw e;
  });
  if (!index) return [{ file: "model.safetensors", names: null }];
  const map = index.weight_map;
  if (!map || typeof map !== "object" || Array.isArray(map)) {
    throw new CheckpointError(`${join(dir, "model.safetensors.index.json")}: no weight_map object`);
  }
  const byFile = new Map<string, string[]>();
  for (const [tensor, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== "string" || file.includes("/") || file.includes("\\") || !file.endsWith(".safetensors")) {
      throw new CheckpointError(`model.safetensors.index.json: tensor ${tensor} maps to ${JSON.stringify(file)}`);
    }
    byFile.set(file, [...(byFile.get(file) ?? []), tensor]);
  }
  return [...byFile].map(([file, names]) => ({ file, names }));
}

/** A shard holds exactly the tensors the index maps to it. */
function checkShard(file: string, held: string[], mapped: string[] | null): void {
  if (!mapped) return;
  const have = new Set(held);
  for (const name of mapped) {
    if (!have.has(name))
      throw new CheckpointError(`${file}: lacks tensor ${name}, which model.safetensors.index.json maps to it`);
  }
  const want = new Set(mapped);
  for (const name of held) {
    if (!want.has(name)) {
      throw new CheckpointError(`${file}: holds tensor ${name}, which model.safetensors.index.json does not map to it`);
    }
  }
}

/** A Llama-family model from a Hub folder (config.json `model_type` llama, qwen2 or mistral). */
export async function loadLlama(dir: string, trainable = false): Promise<{ model: Llama; config: LlamaConfig }> {
  const ckpt = await readHubCheckpoint(dir);
  const config = parseLlamaConfig(ckpt.config);
  return { model: Llama.fromTensors(config, ckpt.tensors, trainable), config };
}

async function readJson(dir: string, file: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(join(dir, file), "utf8");
  } catch (e) {
    if ((e as { code?: string }).code === "ENOENT" && file !== "config.json") throw e;
    throw new CheckpointError(`cannot read ${join(dir, file)}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const json = JSON.parse(text);
    if (!json || typeof json !== "object" || Array.isArray(json)) throw new Error("not a JSON object");
    return json;
  } catch (e) {
    throw new CheckpointError(`${join(dir, file)} is not a JSON object: ${(e as Error).message}`);
  }
}

/** `fn()` (awaited), with a CheckpointError's message prefixed by the file it is about. */
async function inFile<T>(file: string, fn: () => T | Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CheckpointError) e.message = `${file}: ${e.message}`;
    throw e;
  }
}
