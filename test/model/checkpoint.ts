import { expect } from "chai";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initBackend, tf } from "../../node/model/backend.js";
import { GPT, parameterShapes, type GPTConfig } from "../../node/model/gpt.js";
import { LoraAdapter, type LoraConfig } from "../../node/model/lora.js";
import { BPETokenizer } from "../../node/model/tokenizer.js";
import {
  AdapterMismatchError,
  adapterByteLimit,
  parseAdapter,
  serializeAdapter,
  type AdapterMetadata,
} from "../../node/model/adapter.js";
import {
  WeightMismatchError,
  loadBaseModel,
  parseBaseModel,
  saveBaseModel,
  serializeBaseModel,
} from "../../node/model/checkpoint.js";
import {
  NonFiniteTensorError,
  SafetensorsFormatError,
  readSafetensors,
  readSafetensorsHeader,
  writeSafetensors,
  type NamedTensor,
} from "../../node/model/safetensors.js";

const CFG: GPTConfig = { nLayer: 2, nEmbd: 16, nHead: 2, blockSize: 8, vocabSize: 300, dropout: 0, layerNormEps: 1e-5 };
const QV: LoraConfig = { r: 4, alpha: 8, dropout: 0, targetModules: ["q", "v"] };
const META: AdapterMetadata = {
  kind: "update",
  task: 3,
  round: 2,
  baseModelSha256: "0x" + "ab".repeat(32),
  identity: 7,
};

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error("expected an error");
}

async function trainedAdapter(seed = 3): Promise<LoraAdapter> {
  const lora = LoraAdapter.init(CFG, QV, seed);
  let s = seed * 100;
  for (const m of lora.modules.values()) tf.tidy(() => m.B.assign(tf.randomNormal(m.B.shape, 0, 0.1, "float32", s++)));
  return lora;
}

/** A safetensors header + data, with the header edited by `edit`. */
function withHeader(
  bytes: Uint8Array,
  edit: (
    h: Record<string, { dtype?: string; shape?: number[]; data_offsets?: number[] } & Record<string, unknown>>,
  ) => void,
): Uint8Array {
  const buf = Buffer.from(bytes);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString());
  edit(header);
  const json = Buffer.from(JSON.stringify(header));
  const out = Buffer.alloc(8 + json.length + (buf.length - 8 - n));
  out.writeBigUInt64LE(BigInt(json.length));
  json.copy(out, 8);
  buf.subarray(8 + n).copy(out, 8 + json.length);
  return out;
}

describe("node/model checkpoints and adapters", function () {
  this.timeout(60_000);
  let tokenizer: BPETokenizer;
  before(async function () {
    await initBackend("wasm", true);
    tokenizer = await BPETokenizer.train(
      ["the patient was admitted with chest pain and shortness of breath. ".repeat(50)],
      300,
    );
  });

  describe("tokenizer", function () {
    it("is a byte-level BPE that round-trips any text and reloads from its tokenizer.json", async function () {
      expect(tokenizer.vocabSize).to.equal(300);
      expect(tokenizer.endOfTextId).to.equal(299);
      const text = "the patient — ünïcode 🩺 and shortness";
      const ids = await tokenizer.encode(text);
      expect(await tokenizer.decode(ids)).to.equal(text);
      const again = BPETokenizer.fromJSON(tokenizer.json);
      expect(await again.encode(text)).to.deep.equal(ids);
      const hf = JSON.parse(tokenizer.json);
      expect(hf.model.type).to.equal("BPE");
      expect(hf.pre_tokenizer.type).to.equal("ByteLevel");
      expect(hf.model.merges.length).to.equal(300 - 257);
    });
  });

  describe("adapters (PEFT format)", function () {
    it("round-trips bit-exactly, with PEFT names, shapes and adapter_config", async function () {
      const lora = await trainedAdapter();
      const weights = await lora.exportWeights();
      const bytes = serializeAdapter(CFG, QV, weights, META);
      const file = readSafetensors(bytes);
      expect([...file.tensors.keys()]).to.deep.equal([
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
        "base_model.model.transformer.h.1.attn.c_attn.lora_A.weight",
        "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight",
      ]);
      expect(file.tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")!.shape).to.deep.equal([
        4, 16,
      ]);
      expect(file.tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")!.shape).to.deep.equal([
        48, 4,
      ]);
      const cfg = JSON.parse(file.metadata.adapter_config!);
      expect([cfg.r, cfg.lora_alpha, cfg.target_modules, cfg.fan_in_fan_out, cfg.peft_type]).to.deep.equal([
        4,
        8,
        ["c_attn"],
        true,
        "LORA",
      ]);
      const parsed = parseAdapter(bytes, CFG, QV);
      expect(parsed.metadata).to.deep.equal({ ...META, strategy: undefined, metrics: undefined });
      for (const [m, w] of weights) {
        expect(Buffer.from(parsed.weights.get(m)!.A.buffer).equals(Buffer.from(w.A.buffer))).to.equal(true);
        expect(Buffer.from(parsed.weights.get(m)!.B.buffer).equals(Buffer.from(w.B.buffer))).to.equal(true);
      }
      expect(Buffer.from(serializeAdapter(CFG, QV, parsed.weights, META)).equals(Buffer.from(bytes))).to.equal(true);
      lora.dispose();
    });

    it("gives identical bytes for identical weights, different bytes for other metadata", async function () {
      const a = await trainedAdapter(5);
      const b = await trainedAdapter(5);
      const wa = serializeAdapter(CFG, QV, await a.exportWeights(), META);
      const wb = serializeAdapter(CFG, QV, await b.exportWeights(), META);
      expect(Buffer.from(wa).equals(Buffer.from(wb))).to.equal(true);
      const other = serializeAdapter(CFG, QV, await a.exportWeights(), { ...META, round: 3 });
      expect(Buffer.from(wa).equals(Buffer.from(other))).to.equal(false);
      a.dispose();
      b.dispose();
    });

    it("refuses a wrong shape, a missing or extra tensor, another rank, a k update for q,v", async function () {
      const lora = await trainedAdapter();
      const bytes = serializeAdapter(CFG, QV, await lora.exportWeights(), META);
      const file = readSafetensors(bytes);
      const rebuild = (edit: (t: Map<string, NamedTensor>) => void, meta = file.metadata) => {
        const t = new Map(file.tensors);
        edit(t);
        return writeSafetensors(t, meta);
      };
      const A0 = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight";
      const B0 = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight";
      let err = thrown(() =>
        parseAdapter(
          rebuild((t) => t.set(A0, { shape: [4, 8], data: new Float32Array(32) })),
          CFG,
          QV,
        ),
      );
      expect(err).to.be.instanceOf(AdapterMismatchError);
      expect(err.message).to.equal(`adapter ${A0}: shape [4,8], expected [4,16]`);
      err = thrown(() =>
        parseAdapter(
          rebuild((t) => t.delete(B0)),
          CFG,
          QV,
        ),
      );
      expect(err.message).to.equal(`adapter ${B0}: missing`);
      err = thrown(() =>
        parseAdapter(
          rebuild((t) =>
            t.set("base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight", { shape: [1], data: new Float32Array(1) }),
          ),
          CFG,
          QV,
        ),
      );
      expect(err.message).to.equal(
        "adapter base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight: unexpected tensor",
      );
      err = thrown(() => parseAdapter(bytes, CFG, { ...QV, r: 8 }));
      expect(err.message).to.equal("adapter adapter_config: r 4, task expects 8");
      const kRow = rebuild((t) => {
        const b = t.get(B0)!;
        const data = Float32Array.from(b.data);
        data[16 * 4] = 0.5; // first row of the k section
        t.set(B0, { shape: b.shape, data });
      });
      err = thrown(() => parseAdapter(kRow, CFG, QV));
      expect(err.message).to.equal(`adapter ${B0}: non-zero update in section k, which target_modules leave alone`);
      lora.dispose();
    });

    it("safetensors widened to f32 before names are checked: header checked first, no tensor read", async function () {
      const lora = await trainedAdapter();
      const file = readSafetensors(serializeAdapter(CFG, QV, await lora.exportWeights(), META));
      // an extra 16 MiB tensor the layout does not have, holding a NaN: reading it would fail on the NaN (and cost
      // 16 MiB of widening); the header check names it first
      const extra = "base_model.model.transformer.h.0.mlp.c_fc.lora_A.weight";
      const big = new Float32Array(4 * 1024 * 1024);
      big[big.length - 1] = NaN;
      const tensors = new Map(file.tensors).set(extra, { shape: [big.length], data: big });
      const err = thrown(() => parseAdapter(writeSafetensors(tensors, file.metadata), CFG, QV));
      expect(err).to.be.instanceOf(AdapterMismatchError);
      expect(err.message).to.equal(`adapter ${extra}: unexpected tensor`);
      // the same for a tensor of the right name in another dtype, read as header only
      const asF16 = withHeader(serializeAdapter(CFG, QV, await lora.exportWeights(), META), (h) => {
        const key = Object.keys(h).find((k) => k.endsWith("c_attn.lora_A.weight"))!;
        h[key]!.dtype = "F16";
        h[key]!.shape = [h[key]!.shape![0]!, h[key]!.shape![1]! * 2];
      });
      expect(thrown(() => parseAdapter(asF16, CFG, QV)).message).to.match(/lora_A\.weight: dtype F16, expected F32$/);
      expect(readSafetensorsHeader(asF16).tensors.map((t) => t.dtype)).to.include("F16");
      // what an adapter of this model and config may weigh: its F32 tensors (2 layers of A [4, 16] and B [48, 4])
      // plus 256 KiB of header
      expect(adapterByteLimit(CFG, QV)).to.equal(4 * 2 * (4 * 16 + 48 * 4) + 256 * 1024);
      lora.dispose();
    });
  });

  describe("safetensors validation", function () {
    const good = () =>
      writeSafetensors(
        new Map([
          ["a", { shape: [2, 2], data: Float32Array.from([1, 2, 3, 4]) }],
          ["b", { shape: [3], data: Float32Array.from([5, 6, 7]) }],
        ]),
      );

    it("writes header and data as the format says (u64 length, JSON padded to 8, little-endian F32)", function () {
      const bytes = Buffer.from(good());
      const n = Number(bytes.readBigUInt64LE(0));
      expect((8 + n) % 8).to.equal(0);
      const header = JSON.parse(bytes.subarray(8, 8 + n).toString());
      expect(header.a).to.deep.equal({ dtype: "F32", shape: [2, 2], data_offsets: [0, 16] });
      expect(header.b).to.deep.equal({ dtype: "F32", shape: [3], data_offsets: [16, 28] });
      expect(bytes.readFloatLE(8 + n + 16)).to.equal(5);
    });

    it("refuses truncated files, a corrupt header, lying offsets and NaN/Inf, each with its error", function () {
      const bytes = good();
      const cases: [string, Uint8Array, string, RegExp][] = [
        ["short", bytes.subarray(0, 5), "SafetensorsFormatError", /shorter than the 8-byte header length/],
        [
          "truncated data",
          bytes.subarray(0, bytes.length - 4),
          "SafetensorsFormatError",
          /data_offsets end 28 past the 24 data bytes/,
        ],
        [
          "header length past the end",
          (() => {
            const b = Buffer.from(bytes);
            b.writeBigUInt64LE(10_000n);
            return b;
          })(),
          "SafetensorsFormatError",
          /runs past the end/,
        ],
        [
          "corrupt header",
          (() => {
            const b = Buffer.from(bytes);
            b[9] = 0x7b;
            b[10] = 0x7b;
            return b;
          })(),
          "SafetensorsFormatError",
          /header is not valid JSON/,
        ],
        [
          "overlapping offsets",
          withHeader(bytes, (h) => (h.b.data_offsets = [12, 24])),
          "SafetensorsFormatError",
          /data starts at 12, expected 16/,
        ],
        [
          "size disagrees with shape",
          withHeader(bytes, (h) => (h.b.shape = [4])),
          "SafetensorsFormatError",
          /F32 \[4\] needs 16 bytes, offsets give 12/,
        ],
        [
          "unknown dtype",
          withHeader(bytes, (h) => (h.b.dtype = "F8_E4M3")),
          "SafetensorsFormatError",
          /unsupported dtype F8_E4M3/,
        ],
        [
          "NaN",
          writeSafetensors(new Map([["w", { shape: [2], data: Float32Array.from([1, NaN]) }]])),
          "NonFiniteTensorError",
          /tensor w holds a non-finite value at flat index 1/,
        ],
        [
          "Inf",
          writeSafetensors(new Map([["w", { shape: [1], data: Float32Array.from([Infinity]) }]])),
          "NonFiniteTensorError",
          /tensor w holds a non-finite value at flat index 0/,
        ],
      ];
      for (const [what, input, name, message] of cases) {
        const err = thrown(() => readSafetensors(input));
        expect(err.name, what).to.equal(name);
        expect(err.message, what).to.match(message);
      }
      expect(thrown(() => readSafetensors(bytes.subarray(0, 5)))).to.be.instanceOf(SafetensorsFormatError);
      expect(
        thrown(() =>
          readSafetensors(writeSafetensors(new Map([["w", { shape: [1], data: Float32Array.from([NaN]) }]]))),
        ),
      ).to.be.instanceOf(NonFiniteTensorError);
    });
  });

  describe("base model", function () {
    it("saves and reloads bit-exactly, with one sha256 for the one file", async function () {
      const dir = await mkdtemp(join(tmpdir(), "fok-base-"));
      const gpt = GPT.init(CFG, 1);
      const sha = await saveBaseModel(dir, gpt, tokenizer);
      const loaded = await loadBaseModel(dir);
      expect(loaded.sha256).to.equal(sha);
      expect(
        Buffer.from(await serializeBaseModel(loaded.model as GPT, loaded.tokenizer)).equals(
          Buffer.from(await readFile(join(dir, "model.safetensors"))),
        ),
      ).to.equal(true);
      const cfg = JSON.parse(await readFile(join(dir, "config.json"), "utf8"));
      expect([cfg.model_type, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, cfg.vocab_size]).to.deep.equal([
        "gpt2",
        2,
        16,
        2,
        8,
        300,
      ]);
      gpt.dispose();
      (loaded.model as GPT).dispose();
      await rm(dir, { recursive: true });
    });

    it("loads a Hugging Face GPT-2 folder (transformer. prefix, attn.bias buffers, lm_head)", async function () {
      const dir = await mkdtemp(join(tmpdir(), "fok-hf-"));
      // a tiny random checkpoint written exactly as transformers' GPT2LMHeadModel.save_pretrained lays it out
      const tensors = new Map<string, NamedTensor>();
      let seed = 1;
      for (const [name, shape] of parameterShapes(CFG)) {
        const n = shape.reduce((a, b) => a * b, 1);
        tensors.set(`transformer.${name}`, {
          shape,
          data: Float32Array.from({ length: n }, () => Math.sin(seed++) * 0.05),
        });
      }
      for (let i = 0; i < CFG.nLayer; i++)
        tensors.set(`transformer.h.${i}.attn.bias`, { shape: [1, 1, 8, 8], data: new Float32Array(64).fill(1) });
      tensors.set("lm_head.weight", tensors.get("transformer.wte.weight")!);
      await writeFile(join(dir, "model.safetensors"), writeSafetensors(tensors, { format: "pt" }));
      await writeFile(
        join(dir, "config.json"),
        JSON.stringify({
          model_type: "gpt2",
          architectures: ["GPT2LMHeadModel"],
          n_layer: 2,
          n_embd: 16,
          n_head: 2,
          n_positions: 8,
          n_ctx: 8,
          vocab_size: 300,
          layer_norm_epsilon: 1e-5,
          activation_function: "gelu_new",
          tie_word_embeddings: true,
        }),
      );
      await writeFile(join(dir, "tokenizer.json"), tokenizer.json);
      const base = await loadBaseModel(dir);
      expect(base.model.config).to.deep.equal(CFG);
      const wte = (await base.model.params.get("wte.weight")!.data()) as Float32Array;
      expect(Buffer.from(wte.buffer).equals(Buffer.from(tensors.get("transformer.wte.weight")!.data.buffer))).to.equal(
        true,
      );
      // LoRA on the loaded base trains like on ours
      const lora = LoraAdapter.init(base.model.config, QV, 1);
      const logits = base.model.forward(tf.tensor2d([[1, 2, 3, 4]], [1, 4], "int32"), lora);
      expect(logits.shape).to.deep.equal([4, 300]);
      logits.dispose();
      lora.dispose();
      base.model.dispose();
      await rm(dir, { recursive: true });
    });

    it("refuses a wrong shape, a wrong dtype, a missing weight and NaN, creating nothing", async function () {
      const gpt = GPT.init(CFG, 1);
      const bytes = await serializeBaseModel(gpt, tokenizer);
      const file = readSafetensors(bytes);
      const variablesBefore = tf.memory().numTensors;
      const rebuild = (edit: (t: Map<string, NamedTensor>) => void) => {
        const t = new Map(file.tensors);
        edit(t);
        return writeSafetensors(t, file.metadata);
      };
      let err = thrown(() =>
        parseBaseModel(rebuild((t) => t.set("ln_f.bias", { shape: [15], data: new Float32Array(15) }))),
      );
      expect(err).to.be.instanceOf(WeightMismatchError);
      expect(err.message).to.equal("weight ln_f.bias: shape [15], expected [16]");
      err = thrown(() => parseBaseModel(rebuild((t) => t.delete("h.1.mlp.c_fc.weight"))));
      expect(err.message).to.equal("weight h.1.mlp.c_fc.weight: missing");
      err = thrown(() => parseBaseModel(withHeader(bytes, (h) => (h["ln_f.bias"].dtype = "I32"))));
      expect(err.message).to.equal("weight ln_f.bias: dtype I32, expected a float type (F32, F16, BF16)");
      err = thrown(() =>
        parseBaseModel(rebuild((t) => t.set("ln_f.bias", { shape: [16], data: new Float32Array(16).fill(NaN) }))),
      );
      expect(err).to.be.instanceOf(NonFiniteTensorError);
      expect(tf.memory().numTensors).to.equal(variablesBefore);
      gpt.dispose();
    });
  });
});
