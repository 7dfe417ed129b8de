/**
 * The Llama family against an independent reference: scripts/reference_llama.py (PyTorch from Debian, nothing
 * else) implements Hugging Face's published formulas and reads the same tiny Hub-layout checkpoints written here.
 * Logits must agree within 1e-4 (max abs) on every tfjs backend present. Bad checkpoints get their typed errors.
 */
import { expect } from "chai";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { initBackend, tf } from "../../node/model/backend.js";
import { loadLlama, readHubCheckpoint } from "../../node/model/hub.js";
import {
  UnsupportedModelError,
  parseLlamaConfig,
  ropeInverseFrequencies,
  type LlamaConfig,
} from "../../node/model/llama.js";
import { CheckpointError, NonFiniteTensorError } from "../../node/model/safetensors.js";
import { InvalidArgumentError } from "../../node/errors.js";
import { rejection } from "../../node/testing/rejection.js";
import { LoraAdapter, type LoraConfig } from "../../node/model/lora.js";
import { exportPeftFolder, parseAdapter, serializeAdapter } from "../../node/model/adapter.js";
import { readSafetensorsHeader } from "../../node/model/safetensors.js";
import { mulberry32 } from "../../node/random.js";
import { randomWeights, safetensors, tinyLlamaConfig, writeHubCheckpoint, type Dtype } from "../fixtures/tiny-llama.js";

const run = promisify(execFile);
const PYTHON = "/usr/bin/python3";
const IDS = [
  [1, 5, 9, 33, 2, 63, 17, 8],
  [0, 12, 40, 40, 7, 3, 56, 21],
];

/** The checkpoints the issue names, each a config override, a dtype and a shard count. */
const CASES: [string, Record<string, unknown>, Dtype, number][] = [
  ["llama, GQA, tied head", {}, "F32", 1],
  [
    "llama, GQA, untied head, attention and MLP biases",
    { tie_word_embeddings: false, attention_bias: true, mlp_bias: true },
    "F32",
    1,
  ],
  ["llama, explicit head_dim 16 over hidden 32", { head_dim: 16 }, "F32", 1],
  [
    "llama with llama3 rope scaling",
    {
      head_dim: 8,
      num_attention_heads: 4,
      rope_scaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 64,
      },
    },
    "F32",
    1,
  ],
  ["llama with linear rope scaling", { rope_scaling: { type: "linear", factor: 4 } }, "F32", 1],
  [
    "qwen2 with q/k/v biases",
    { model_type: "qwen2", architectures: ["Qwen2ForCausalLM"], rope_theta: 1e6, use_sliding_window: false },
    "F32",
    1,
  ],
  ["mistral", { model_type: "mistral", architectures: ["MistralForCausalLM"], sliding_window: 16 }, "F32", 1],
  ["llama sharded in BF16", { tie_word_embeddings: false, torch_dtype: "bfloat16" }, "BF16", 3],
  ["llama in F16", {}, "F16", 1],
];

async function torchAvailable(): Promise<boolean> {
  if (!existsSync(PYTHON)) return false;
  return run(PYTHON, ["-c", "import torch"]).then(
    () => true,
    () => false,
  );
}

async function referenceLogits(dir: string): Promise<Float32Array> {
  const { stdout } = await run(PYTHON, ["scripts/reference_llama.py", dir, JSON.stringify(IDS)], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return Float32Array.from(JSON.parse(stdout).logits as number[]);
}

describe("node/model Llama family (llama, qwen2, mistral)", function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fok-llama-"));
  });
  after(async () => {
    await initBackend("wasm", true); // the other tests' backend
    await rm(dir, { recursive: true, force: true });
  });

  describe("logits match the independent PyTorch reference within 1e-4", function () {
    for (const [name, overrides, dtype, shards] of CASES) {
      it(name, async function () {
        if (!(await torchAvailable())) this.skip(); // .ci/run installs python3-torch
        const config = tinyLlamaConfig(overrides);
        const path = join(dir, name.replace(/[^a-z0-9]+/gi, "-"));
        await writeHubCheckpoint(path, config, randomWeights(config), { dtype, shards });
        const expected = await referenceLogits(path);
        for (const backend of ["wasm", "cpu"]) {
          await initBackend(backend, true);
          const { model } = await loadLlama(path);
          const logits = tf.tidy(() => model.forward(tf.tensor2d(IDS, [2, 8], "int32")));
          const got = (await logits.data()) as Float32Array;
          logits.dispose();
          model.dispose();
          expect(got.length).to.equal(expected.length);
          let worst = 0;
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - expected[i]!));
          expect(worst, `${backend}: max abs difference`).to.be.below(1e-4);
        }
      });
    }
  });

  describe("LoRA on q, k, v, o, gate, up, down: PEFT layout, logits and gradients match the reference", function () {
    for (const [name, overrides, head] of [
      ["llama, GQA, untied", { tie_word_embeddings: false }, false],
      ["qwen2 with q/k/v biases", { model_type: "qwen2" }, false],
      ["llama with llama3 rope scaling and head_dim 8", CASES[3]![1], false],
      ["mistral", { model_type: "mistral", sliding_window: 16 }, false],
      ["llama, tied head, and lm_head as a target too", {}, true],
    ] as const) {
      it(name, async function () {
        if (!(await torchAvailable())) this.skip();
        await initBackend("wasm", true);
        const config = tinyLlamaConfig(overrides);
        const path = join(dir, `lora-${name.replace(/[^a-z0-9]+/gi, "-")}`);
        await writeHubCheckpoint(path, config, randomWeights(config, 11));
        const { model, config: parsed } = await loadLlama(path);
        const lora: LoraConfig = {
          r: 4,
          alpha: 8,
          dropout: 0,
          targetModules: ["q", "k", "v", "o", "gate_proj", "up_proj", "down_proj", ...(head ? ["lm_head"] : [])],
        };
        // A as initialised, B random (a zero B would leave A without a gradient)
        const adapter = LoraAdapter.init(parsed, lora, 3);
        const weights = await adapter.exportWeights();
        const rand = mulberry32(5);
        for (const w of weights.values()) for (let i = 0; i < w.B.length; i++) w.B[i] = 0.1 * (rand() - 0.5);
        adapter.assign(weights);
        const bytes = serializeAdapter(parsed, lora, weights, { kind: "update", baseModelSha256: "0x00" });
        const peft = join(path, "adapter");
        await exportPeftFolder(peft, bytes);
        // the PEFT layout, read from the files alone
        const cfg = JSON.parse(await readFile(join(peft, "adapter_config.json"), "utf8"));
        expect([cfg.peft_type, cfg.task_type, cfg.r, cfg.lora_alpha, cfg.fan_in_fan_out]).to.deep.equal([
          "LORA",
          "CAUSAL_LM",
          4,
          8,
          false,
        ]);
        expect(cfg.target_modules).to.deep.equal([
          "q_proj",
          "k_proj",
          "v_proj",
          "o_proj",
          "gate_proj",
          "up_proj",
          "down_proj",
          ...(head ? ["lm_head"] : []),
        ]);
        const header = readSafetensorsHeader(await readFile(join(peft, "adapter_model.safetensors")));
        const shapes = Object.fromEntries(header.tensors.map((t) => [t.name, t.shape]));
        expect(shapes["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"]).to.deep.equal([4, 32]);
        expect(shapes["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]).to.deep.equal([16, 4]);
        expect(shapes["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]).to.deep.equal([4, 48]);
        expect(header.tensors).to.have.length(2 * 7 * 2 + (head ? 2 : 0));
        if (head) expect(shapes["base_model.model.lm_head.lora_B.weight"]).to.deep.equal([config.vocab_size, 4]);
        // parse back: the same weights
        expect(parseAdapter(bytes, parsed, lora).weights.get("model.layers.0.self_attn.o_proj")!.B).to.deep.equal(
          weights.get("model.layers.0.self_attn.o_proj")!.B,
        );
        const ref = JSON.parse(
          (
            await run(PYTHON, ["scripts/reference_llama.py", path, JSON.stringify(IDS), peft], {
              maxBuffer: 64 * 1024 * 1024,
            })
          ).stdout,
        ) as { logits: number[]; loss: number; grads: Record<string, number[]> };
        adapter.dispose();
        model.dispose();
        for (const backend of ["wasm", "cpu"]) {
          await initBackend(backend, true);
          await compareWithReference(path, parsed, lora, weights, ref, backend);
        }
      });
    }
  });

  it("a recomputed layer draws the same LoRA dropout masks: gradients equal kept activations", async function () {
    await initBackend("wasm", true);
    const config = tinyLlamaConfig({});
    const path = join(dir, "recompute-dropout");
    await writeHubCheckpoint(path, config, randomWeights(config, 13));
    const { model, config: parsed } = await loadLlama(path);
    expect([model.recomputes(2, 8), model.recomputes(8192, 64)]).to.deep.equal([false, true]); // "auto"
    const ids = tf.tensor2d(IDS, [2, 8], "int32");
    const targets = tf.tensor2d(
      IDS.map((r) => [...r.slice(1), 0]),
      [2, 8],
      "int32",
    );
    const gradsWith = async (dropout: number, recompute: boolean) => {
      const adapter = LoraAdapter.init(parsed, { r: 4, alpha: 8, dropout, targetModules: ["q", "v", "up_proj"] }, 3);
      const weights = await adapter.exportWeights();
      for (const w of weights.values()) w.B.fill(0.05);
      adapter.assign(weights);
      model.recompute = recompute;
      const random = Math.random;
      let k = 0;
      Math.random = () => ((k++ * 0.618034) % 1) * 0.999; // the same layer seeds on every run
      try {
        const { value, grads } = tf.variableGrads(() => model.loss(ids, targets, adapter, true), adapter.variables());
        const flat = await tf.concat(adapter.variables().map((v) => tf.reshape(grads[v.name]!, [-1]))).data();
        tf.dispose([value, ...Object.values(grads)]);
        return Float32Array.from(flat);
      } finally {
        Math.random = random;
        adapter.dispose();
      }
    };
    const kept = await gradsWith(0.5, false);
    const again = await gradsWith(0.5, true);
    const none = await gradsWith(0, false);
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
    expect(maxDiff(kept, again)).to.be.below(1e-6);
    expect(maxDiff(kept, none)).to.be.above(1e-3); // dropout did act
    tf.dispose([ids, targets]);
    model.dispose();
  });

  it("forward with rows gives those rows of the full logits, a LoRA on lm_head included", async function () {
    await initBackend("wasm", true);
    const config = tinyLlamaConfig({ tie_word_embeddings: false });
    const path = join(dir, "rows");
    await writeHubCheckpoint(path, config, randomWeights(config, 17));
    const { model, config: parsed } = await loadLlama(path);
    const adapter = LoraAdapter.init(parsed, { r: 4, alpha: 8, dropout: 0, targetModules: ["q", "lm_head"] }, 5);
    const weights = await adapter.exportWeights();
    for (const w of weights.values()) w.B.fill(0.05);
    adapter.assign(weights);
    const ids = tf.tensor2d(IDS, [2, 8], "int32");
    const rows = [15, 0, 7, 8];
    const [full, some] = tf.tidy(() => [
      tf.gather(model.forward(ids, adapter), rows).arraySync() as number[][],
      model.forward(ids, adapter, false, tf.tensor1d(rows, "int32")).arraySync() as number[][],
    ]);
    expect(some.length).to.equal(4);
    const diff = Math.max(...full.flatMap((r, i) => r.map((v, j) => Math.abs(v - some[i]![j]!))));
    expect(diff).to.be.below(1e-5);
    tf.dispose(ids);
    adapter.dispose();
    model.dispose();
  });

  it("llama3 rope scaling keeps short wavelengths, divides long ones by the factor, ramps between", function () {
    const c = parseLlamaConfig(tinyLlamaConfig(CASES[3]![1]));
    const inv = ropeInverseFrequencies(c);
    // head_dim 8, theta 1e4: base frequencies 1, 0.1, 0.01, 0.001 (wavelengths 6.3, 63, 628, 6283 against 16 and 64)
    expect(inv[0]).to.equal(1);
    // (the hardhat chai plugin's closeTo takes bigints only: compare differences)
    const smooth = (64 / (2 * Math.PI * 10) - 1) / 3; // (old context / wavelength − low) / (high − low)
    expect(Math.abs(inv[1]! - ((1 - smooth) * 0.1) / 8 - smooth * 0.1)).to.be.below(1e-15);
    expect(Math.abs(inv[2]! - 0.01 / 8)).to.be.below(1e-18);
    expect(Math.abs(inv[3]! - 0.001 / 8)).to.be.below(1e-18);
  });

  describe("typed errors, naming the field, file or tensor", function () {
    it("refuses an unknown model_type and every config field the engine does not implement", function () {
      const bad: [Record<string, unknown>, string][] = [
        [{ model_type: "gemma" }, 'config.json model_type = "gemma": supported: gpt2, llama, qwen2, mistral'],
        [{ hidden_act: "gelu" }, 'config.json hidden_act = "gelu": only silu (SwiGLU) is implemented'],
        [{ rope_scaling: { rope_type: "yarn", factor: 4 } }, 'rope_scaling.rope_type = "yarn": implemented: none'],
        [{ rope_scaling: { rope_type: "llama3", factor: 8 } }, "rope_scaling.low_freq_factor = undefined"],
        [{ num_key_value_heads: 3 }, "num_key_value_heads = 3: must divide num_attention_heads 4"],
        [{ partial_rotary_factor: 0.5 }, "partial_rotary_factor = 0.5: only full rotary is implemented"],
        [{ hidden_size: 0 }, "hidden_size = 0: must be a positive integer"],
      ];
      for (const [o, message] of bad) {
        let err: unknown = null;
        try {
          parseLlamaConfig(tinyLlamaConfig(o));
        } catch (e) {
          err = e;
        }
        expect(err, message).to.be.instanceOf(UnsupportedModelError);
        expect((err as Error).message).to.contain(message);
      }
    });

    it("refuses a missing shard, a missing or misshapen tensor, a foreign dtype and NaN, naming it", async function () {
      await initBackend("wasm", true);
      const config = tinyLlamaConfig({ tie_word_embeddings: false });
      const weights = randomWeights(config);
      const base = join(dir, "bad");
      const fresh = async (name: string, opts: { shards?: number } = {}) => {
        const p = join(base, name);
        await writeHubCheckpoint(p, config, weights, opts);
        return p;
      };
      // a shard the index names is not there
      const sharded = await fresh("sharded", { shards: 2 });
      await unlink(join(sharded, "model-00002-of-00002.safetensors"));
      let err = await rejection(readHubCheckpoint(sharded));
      expect(err).to.be.instanceOf(CheckpointError);
      expect(err.message).to.equal(`missing checkpoint file ${join(sharded, "model-00002-of-00002.safetensors")}`);
      // a tensor missing, and one of the wrong shape
      const missing = await fresh("missing");
      const without = new Map(weights);
      without.delete("model.layers.1.mlp.up_proj.weight");
      await writeFile(join(missing, "model.safetensors"), safetensors([...without.keys()], without, "F32"));
      err = await rejection(loadLlama(missing));
      expect(err.message).to.equal("missing weight model.layers.1.mlp.up_proj.weight");
      const misshapen = await fresh("misshapen");
      const wrong = new Map(weights).set("model.norm.weight", { shape: [31], data: new Float32Array(31) });
      await writeFile(join(misshapen, "model.safetensors"), safetensors([...wrong.keys()], wrong, "F32"));
      err = await rejection(loadLlama(misshapen));
      expect(err.message).to.equal("weight model.norm.weight has shape [31], expected [32]");
      // a dtype the engine does not read as weights
      const ints = await fresh("ints");
      const bytes = Buffer.from(safetensors([...weights.keys()], weights, "F32"));
      const n = Number(bytes.readBigUInt64LE(0));
      const header = bytes
        .subarray(8, 8 + n)
        .toString()
        .replace('"dtype":"F32"', '"dtype":"I32"');
      await writeFile(
        join(ints, "model.safetensors"),
        Buffer.concat([bytes.subarray(0, 8), Buffer.from(header), bytes.subarray(8 + n)]),
      );
      err = await rejection(readHubCheckpoint(ints));
      expect(err.message).to.equal(
        "model.safetensors: tensor model.embed_tokens.weight: dtype I32 is not F32/F16/BF16",
      );
      // a NaN
      const nan = await fresh("nan");
      const poisoned = new Map(weights);
      const data = Float32Array.from(weights.get("model.layers.0.self_attn.k_proj.weight")!.data);
      data[5] = NaN;
      poisoned.set("model.layers.0.self_attn.k_proj.weight", { shape: [16, 32], data });
      await writeFile(join(nan, "model.safetensors"), safetensors([...poisoned.keys()], poisoned, "F32"));
      err = await rejection(readHubCheckpoint(nan));
      expect(err).to.be.instanceOf(NonFiniteTensorError);
      expect(err.message).to.match(/^model\.safetensors: .*model\.layers\.0\.self_attn\.k_proj\.weight/);
      // no config at all
      err = await rejection(readHubCheckpoint(join(base, "nowhere")));
      expect(err.message).to.match(/^cannot read .*nowhere\/config\.json/);
    });

    it("mistral refuses a sequence longer than its sliding window rather than compute other things", async function () {
      await initBackend("wasm", true);
      const config = tinyLlamaConfig({ model_type: "mistral", sliding_window: 4 });
      const path = join(dir, "mistral-window");
      await writeHubCheckpoint(path, config, randomWeights(config));
      const { model } = await loadLlama(path);
      let err: unknown = null;
      try {
        model.forward(tf.tensor2d(IDS, [2, 8], "int32"));
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(InvalidArgumentError);
      expect((err as Error).message).to.contain("sequence length 8 exceeds the mistral sliding window 4");
      model.dispose();
    });
  });
});

/** The adapted model's logits, loss and every LoRA gradient on the current backend against the reference's. */
async function compareWithReference(
  path: string,
  parsed: LlamaConfig,
  lora: LoraConfig,
  weights: Map<string, { A: Float32Array; B: Float32Array }>,
  ref: { logits: number[]; loss: number; grads: Record<string, number[]> },
  backend: string,
): Promise<void> {
  const { model } = await loadLlama(path);
  const adapter = LoraAdapter.init(parsed, lora, 3);
  adapter.assign(weights);
  const logits = tf.tidy(() => model.forward(tf.tensor2d(IDS, [2, 8], "int32"), adapter));
  const got = (await logits.data()) as Float32Array;
  logits.dispose();
  expect(Math.max(...got.map((x, i) => Math.abs(x - ref.logits[i]!))), `${backend} logits`).to.be.below(1e-4);
  const inputs = tf.tensor2d(
    IDS.map((r) => r.slice(0, -1)),
    [2, 7],
    "int32",
  );
  const targets = tf.tensor2d(
    IDS.map((r) => r.slice(1)),
    [2, 7],
    "int32",
  );
  // every layer's activations kept, then every layer recomputed in the backward pass (activation checkpointing)
  for (const recompute of [false, true]) {
    model.recompute = recompute;
    const { value, grads } = tf.variableGrads(() => model.loss(inputs, targets, adapter, true), adapter.variables());
    const label = `${backend}${recompute ? ", recomputed" : ""}`;
    expect(Math.abs((await value.data())[0]! - ref.loss), `${label} loss`).to.be.below(1e-5);
    for (const [module, m] of adapter.modules) {
      for (const [part, v, peftShape] of [
        ["lora_A", m.A, [lora.r, m.inWidth]],
        ["lora_B", m.B, [m.outWidth, lora.r]],
      ] as const) {
        // ours are A [in, r] and B [r, out]: PEFT's transposed
        const g = (await tf.transpose(grads[v.name]!).data()) as Float32Array;
        const want = ref.grads[`base_model.model.${module}.${part}.weight`]!;
        expect(g.length).to.equal(peftShape[0] * peftShape[1]);
        const scale = Math.max(...want.map(Math.abs));
        const diff = Math.max(...g.map((x, i) => Math.abs(x - want[i]!)));
        expect(diff / scale, `${label} ${module}.${part}`).to.be.below(1e-3);
      }
    }
    tf.dispose([value, ...Object.values(grads)]);
  }
  tf.dispose([inputs, targets]);
  adapter.dispose();
  model.dispose();
}
