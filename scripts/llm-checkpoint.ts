/**
 * Random checkpoints of real sizes for the benchmarks: the exact published configurations of SmolLM2-135M and
 * Qwen2.5-0.5B, written as BF16 safetensors in the Hub layout (2 shards, index, config.json, tokenizer.json).
 */
import { open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { llamaParameterShapes, parseLlamaConfig } from "../node/model/llama.js";
import { buildTokenizerJson } from "../node/model/tokenizer.js";
import { mulberry32 } from "../node/random.js";

/** The published configs (config.json as the Hub ships them). */
export const MODELS: Record<string, Record<string, unknown>> = {
  "smollm2-135m": {
    model_type: "llama",
    hidden_size: 576,
    intermediate_size: 1536,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    vocab_size: 49152,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-5,
    rope_theta: 100000,
    tie_word_embeddings: true,
    hidden_act: "silu",
  },
  "qwen2.5-0.5b": {
    model_type: "qwen2",
    hidden_size: 896,
    intermediate_size: 4864,
    num_hidden_layers: 24,
    num_attention_heads: 14,
    num_key_value_heads: 2,
    vocab_size: 151936,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: 1000000,
    tie_word_embeddings: true,
    use_sliding_window: false,
    hidden_act: "silu",
  },
};

/** Writes a random BF16 checkpoint of `config` in 2 shards, tensor by tensor (no whole-model array in memory). */
export async function writeRandomCheckpoint(dir: string, config: Record<string, unknown>): Promise<number> {
  const shapes = llamaParameterShapes(parseLlamaConfig(config));
  const rand = mulberry32(1);
  const half = Math.ceil(shapes.length / 2);
  const weightMap: Record<string, string> = {};
  let params = 0;
  for (const [s, part] of [shapes.slice(0, half), shapes.slice(half)].entries()) {
    const file = `model-0000${s + 1}-of-00002.safetensors`;
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const [name, shape] of part) {
      const n = shape.reduce((a, b) => a * b, 1);
      header[name] = { dtype: "BF16", shape, data_offsets: [offset, offset + 2 * n] };
      offset += 2 * n;
      weightMap[name] = file;
      params += n;
    }
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const fh = await open(join(dir, file), "w");
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    await fh.write(len);
    await fh.write(json);
    for (const [name, shape] of part) {
      const n = shape.reduce((a, b) => a * b, 1);
      const norm = name.endsWith("norm.weight");
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = norm ? 1 : 0.04 * (rand() - 0.5);
      const u = new Uint32Array(f.buffer);
      const bf = new Uint16Array(n);
      for (let i = 0; i < n; i++) bf[i] = u[i]! >>> 16;
      await fh.write(new Uint8Array(bf.buffer));
    }
    await fh.close();
  }
  await writeFile(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
  await writeFile(join(dir, "tokenizer.json"), buildTokenizerJson([]));
  await writeFile(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: 256 }));
  return params;
}
