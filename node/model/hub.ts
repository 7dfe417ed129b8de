/**
 * Checkpoint folders as the Hugging Face Hub ships them: config.json, then model.safetensors or shards named by
 * model.safetensors.index.json (`weight_map`: tensor → file). Tensors in F32, F16 or BF16 come back as f32. A
 * missing file or shard, a tensor the index names but its shard lacks (or the reverse), a dtype the engine cannot
 * read and a NaN or Inf are each a CheckpointError naming the file and the tensor; nothing partial is returned.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { CheckpointError, readSafetensors, type NamedTensor } from "./safetensors.js";
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

/** Reads a Hub checkpoint folder's config and weights. */
export async function readHubCheckpoint(dir: string): Promise<HubCheckpoint> {
  const config = await readJson(dir, "config.json");
  const index = await readJson(dir, "model.safetensors.index.json").catch((e) => {
    if ((e as { code?: string }).code === "ENOENT") return null;
    throw e;
  });
  const tensors = new Map<string, NamedTensor>();
  if (!index) {
    for (const [k, t] of await readShard(dir, "model.safetensors")) tensors.set(k, t);
    return { config, tensors, files: ["model.safetensors"] };
  }
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
  for (const [file, names] of byFile) {
    const shard = await readShard(dir, file);
    for (const name of names) {
      const t = shard.get(name);
      if (!t) throw new CheckpointError(`${file}: lacks tensor ${name}, which model.safetensors.index.json maps to it`);
      tensors.set(name, t);
    }
    for (const name of shard.keys()) {
      if (!names.includes(name)) {
        throw new CheckpointError(
          `${file}: holds tensor ${name}, which model.safetensors.index.json does not map to it`,
        );
      }
    }
  }
  return { config, tensors, files: [...byFile.keys()] };
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

async function readShard(dir: string, file: string): Promise<Map<string, NamedTensor>> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, file));
  } catch (e) {
    throw new CheckpointError(`missing checkpoint file ${join(dir, file)}`, { cause: e });
  }
  try {
    return readSafetensors(bytes, {
      checkHeader: (_, headers) => {
        for (const h of headers) {
          if (!FLOAT_DTYPES.has(h.dtype))
            throw new CheckpointError(`tensor ${h.name}: dtype ${h.dtype} is not F32/F16/BF16`);
        }
      },
    }).tensors;
  } catch (e) {
    if (e instanceof CheckpointError) e.message = `${file}: ${e.message}`;
    throw e;
  }
}
