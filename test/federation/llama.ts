/**
 * A federation on a Llama-family base: a tiny llama checkpoint in the exact Hub layout (sharded, with its
 * tokenizer.json), bundled into the one blob a task commits to, two hospitals × two rounds of LoRA on q, v, o and
 * gate_proj, and `fok verify` passing on the result; the adapters are PEFT's Llama layout.
 */
import { expect } from "chai";
import { network } from "hardhat";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sha256Hex } from "../../node/digest.js";
import { initBackend, tf } from "../../node/model/backend.js";
import { loadBaseModel, parseBaseModel, readBaseBytes, workerBaseBytes } from "../../node/model/checkpoint.js";
import { parseLlamaConfig } from "../../node/model/llama.js";
import { buildTokenizerJson } from "../../node/model/tokenizer.js";
import { readSafetensorsHeader } from "../../node/model/safetensors.js";
import type { LoraConfig } from "../../node/model/lora.js";
import { startLocalFederation } from "../../node/federation/local.js";
import { verifyTask } from "../../node/provenance/verify.js";
import {
  randomWeights,
  sentencePieceTokenizerJson,
  tinyLlamaConfig,
  writeHubCheckpoint,
} from "../fixtures/tiny-llama.js";
import { CheckpointError, NonFiniteTensorError } from "../../node/model/safetensors.js";
import { rejection } from "../../node/testing/rejection.js";

const { ethers } = await network.create();

describe("federation on a Llama-family base (tiny llama, in-process chain, embedded store)", function () {
  this.timeout(300_000);
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "fok-llama-fed-"));
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it("a sharded checkpoint has one digest: its canonical bundle, the same however it is sharded", async function () {
    await initBackend("wasm", true);
    const config = tinyLlamaConfig({ vocab_size: 260 });
    const weights = randomWeights(config, 3);
    const digests = [];
    for (const shards of [1, 2, 3]) {
      const path = join(dir, `shards-${shards}`);
      await writeHubCheckpoint(path, config, weights, { dtype: "BF16", shards });
      await writeFile(join(path, "tokenizer.json"), buildTokenizerJson([]));
      await writeFile(join(path, "generation_config.json"), JSON.stringify({ eos_token_id: 256 }));
      digests.push(sha256Hex(await readBaseBytes(path)));
    }
    expect(new Set(digests).size).to.equal(1);
    const bytes = await readBaseBytes(join(dir, "shards-3"));
    // built in shared memory for data-parallel workers: the same bytes
    const shared = await readBaseBytes(join(dir, "shards-3"), { shared: true });
    expect([shared.buffer instanceof SharedArrayBuffer, sha256Hex(shared)]).to.deep.equal([true, digests[0]]);
    const header = readSafetensorsHeader(bytes);
    expect(Object.keys(header.metadata).sort()).to.deep.equal([
      "fok.config",
      "fok.generation_config",
      "fok.tokenizer",
      "format",
    ]);
    expect(new Set(header.tensors.map((t) => t.dtype))).to.deep.equal(new Set(["BF16"]));
    const base = parseBaseModel(bytes);
    expect([base.tokenizer.endOfTextId, base.tokenizer.vocabSize, base.model.contextLength]).to.deep.equal([
      256, 257, 128,
    ]);
    base.model.dispose();
  });

  it("Hub tokenizers: SentencePiece BPE with byte fallback; one larger than the embedding refused", async function () {
    await initBackend("wasm", true);
    const path = join(dir, "sentencepiece");
    const config = tinyLlamaConfig({ vocab_size: 272 });
    await writeHubCheckpoint(path, config, randomWeights(config, 4));
    await writeFile(join(path, "tokenizer.json"), sentencePieceTokenizerJson());
    await writeFile(join(path, "tokenizer_config.json"), JSON.stringify({ eos_token: { content: "</s>" } }));
    const base = parseBaseModel(await readBaseBytes(path));
    // "▁the", "▁heart", "▁", then é as its two UTF-8 bytes <0xC3> <0xA9>
    const ids = await base.tokenizer.encode("the heart é");
    expect(ids).to.deep.equal([267, 271, 259, 3 + 0xc3, 3 + 0xa9]);
    expect(await base.tokenizer.decode(ids)).to.equal("the heart é");
    expect(base.tokenizer.endOfTextId).to.equal(2);
    base.model.dispose();
    // the same tokenizer on an embedding of 64 rows: refused, naming both sizes
    const small = join(dir, "small-embedding");
    const smallConfig = tinyLlamaConfig({ vocab_size: 64 });
    await writeHubCheckpoint(small, smallConfig, randomWeights(smallConfig, 4));
    await writeFile(join(small, "tokenizer.json"), sentencePieceTokenizerJson());
    await writeFile(join(small, "generation_config.json"), JSON.stringify({ eos_token_id: [2] }));
    const err = await rejection(readBaseBytes(small).then((b) => parseBaseModel(b)));
    expect(err).to.be.instanceOf(CheckpointError);
    expect(err.message).to.equal("tokenizer.json has 272 tokens, more than the embedding's vocab_size 64");
    // and without any end-of-sequence token
    await rm(join(small, "generation_config.json"));
    const noEos = await rejection(readBaseBytes(small).then((b) => parseBaseModel(b)));
    expect(noEos.message).to.match(/^no end-of-sequence token: tokenizer_config\.json has no eos_token/);
  });

  it("a NaN in a bundled base is refused naming the tensor, leaving no tensor behind", async function () {
    await initBackend("wasm", true);
    const config = tinyLlamaConfig({ vocab_size: 260 });
    const weights = randomWeights(config, 6);
    weights.get("model.layers.1.mlp.down_proj.weight")!.data[7] = NaN;
    const path = join(dir, "nan-base");
    await writeHubCheckpoint(path, config, weights, { dtype: "BF16" });
    await writeFile(join(path, "tokenizer.json"), buildTokenizerJson([]));
    await writeFile(join(path, "generation_config.json"), JSON.stringify({ eos_token_id: 256 }));
    const before = tf.memory().numTensors;
    const err = await rejection(readBaseBytes(path).then((b) => parseBaseModel(b)));
    expect(err).to.be.instanceOf(NonFiniteTensorError);
    expect(err.message).to.contain("model.layers.1.mlp.down_proj.weight");
    expect(tf.memory().numTensors).to.equal(before);
    // streamed from the folder: the same refusal, naming the shard too, and nothing left behind
    const streamed = await rejection(loadBaseModel(path));
    expect(streamed).to.be.instanceOf(NonFiniteTensorError);
    expect(streamed.message).to.equal(
      "model.safetensors: tensor model.layers.1.mlp.down_proj.weight holds a non-finite value at flat index 7",
    );
    expect(tf.memory().numTensors).to.equal(before);
  });

  it("a folder streamed into the backend has the bundle's digest and computes the same logits", async function () {
    await initBackend("wasm", true);
    const path = join(dir, "shards-3");
    const bytes = await readBaseBytes(path);
    const whole = parseBaseModel(bytes);
    const streamed = await loadBaseModel(path);
    expect(streamed.sha256).to.equal(sha256Hex(bytes));
    expect(streamed.bytes).to.equal(undefined); // never held whole
    expect(streamed.model.config).to.deep.equal(whole.model.config);
    const ids = tf.tensor2d([[1, 5, 9, 33, 2, 63, 17, 8]], [1, 8], "int32");
    const [a, b] = [whole, streamed].map((m) => tf.tidy(() => m.model.forward(ids)).dataSync());
    expect(Math.max(...a!.map((x, i) => Math.abs(x - b![i]!)))).to.equal(0);
    tf.dispose(ids);
    // data-parallel workers get the folder's bytes again, in shared memory, held to the digest it was loaded with
    const forWorkers = await workerBaseBytes(streamed, path);
    expect([forWorkers.buffer instanceof SharedArrayBuffer, sha256Hex(forWorkers)]).to.deep.equal([
      true,
      sha256Hex(bytes),
    ]);
    expect(await workerBaseBytes(whole, path)).to.equal(whole.bytes); // held whole: those very bytes
    const moved = { ...streamed, sha256: "0x" + "ab".repeat(32) }; // as if the folder had changed since
    const err = await rejection(workerBaseBytes(moved, path));
    expect([err.name, err.message]).to.deep.equal([
      "CheckpointError",
      `${path} changed after it was loaded: its bytes hash to ${sha256Hex(bytes)}, not 0x${"ab".repeat(32)}`,
    ]);
    whole.model.dispose();
    streamed.model.dispose();
  });

  it("2 hospitals × 2 rounds of LoRA on a llama base end in fok verify passing", async function () {
    await initBackend("wasm", true);
    const raw = tinyLlamaConfig({ vocab_size: 260 });
    const path = join(dir, "base");
    await writeHubCheckpoint(path, raw, randomWeights(raw, 9), { shards: 2 });
    await writeFile(join(path, "tokenizer.json"), buildTokenizerJson([]));
    await writeFile(join(path, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|endoftext|>" }));
    const baseBytes = await readBaseBytes(path);
    const base = parseBaseModel(baseBytes);
    const texts = ["the heart pumps blood through the body. ", "the infection was treated with antibiotics. "];
    const hospitals = [];
    for (const [i, t] of texts.entries()) {
      const tokens = Int32Array.from(await base.tokenizer.encode(t.repeat(8)));
      hospitals.push({
        name: `hospital-${i}`,
        data: { trainTokens: tokens, heldOutTokens: tokens.subarray(0, 40), numExamples: 10 + 10 * i },
      });
    }
    base.model.dispose();
    const model = parseLlamaConfig(raw);
    const lora: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ["q", "v", "o", "gate_proj"] };
    const fed = await startLocalFederation({
      signers: await ethers.getSigners(),
      baseBytes,
      baseModelSha256: sha256Hex(baseBytes),
      model,
      lora,
      hospitals,
      strategy: "fedavg",
      rounds: 2,
      minUpdates: 2,
      expectedUpdates: 2,
      train: { steps: 2, batchSize: 2, seqLen: 16, lr: 1e-2, warmupSteps: 1 },
      workers: false,
      pollMs: 50,
    });
    try {
      await fed.aggregator.openFirstRound();
      for (let round = 1; round <= 2; round++) {
        expect(await Promise.all(fed.clients.map((c) => c.participate(round)))).to.deep.equal([
          "submitted",
          "submitted",
        ]);
        expect((await fed.aggregator.finalize(round))!.contributors).to.deep.equal([1, 2]);
      }
      const report = await verifyTask(fed.ledger, fed.store, fed.task, { model, lora });
      expect(report.checks.filter((c) => !c.ok)).to.deep.equal([]);
      expect(report.ok).to.equal(true);
      // the global adapter in PEFT's Llama layout, read from its header alone
      const h = await fed.ledger.readTaskHistory(fed.task);
      const global = readSafetensorsHeader(await fed.store.get(h.rounds[1]!.finalized!.globalCid));
      const config = JSON.parse(global.metadata.adapter_config!);
      expect([config.fan_in_fan_out, config.target_modules]).to.deep.equal([
        false,
        ["q_proj", "v_proj", "o_proj", "gate_proj"],
      ]);
      const names = global.tensors.map((t) => t.name);
      expect(names).to.include("base_model.model.model.layers.1.mlp.gate_proj.lora_B.weight");
      expect(
        global.tensors.find((t) => t.name.endsWith("layers.0.self_attn.v_proj.lora_B.weight"))!.shape,
      ).to.deep.equal([16, 2]);
      expect(names).to.have.length(2 * 4 * 2);
    } finally {
      await fed.close();
      await fed.store.close();
    }
  });
});
