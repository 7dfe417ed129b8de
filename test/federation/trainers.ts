import { expect } from "chai";
import { initBackend } from "../../node/model/backend.js";
import { GPT, type GPTConfig } from "../../node/model/gpt.js";
import { BPETokenizer } from "../../node/model/tokenizer.js";
import { serializeBaseModel } from "../../node/model/checkpoint.js";
import { LoraAdapter, type LoraConfig } from "../../node/model/lora.js";
import { serializeAdapter } from "../../node/model/adapter.js";
import { sha256Hex } from "../../node/digest.js";
import { InlineTrainer, limitConcurrency, type RoundTrainer } from "../../node/federation/trainer-pool.js";
import type { RoundJob, RoundOutput } from "../../node/federation/local-trainer.js";
import { rejection } from "../../node/testing/rejection.js";

const TINY: GPTConfig = {
  nLayer: 1,
  nEmbd: 16,
  nHead: 2,
  blockSize: 8,
  vocabSize: 300,
  dropout: 0,
  layerNormEps: 1e-5,
};
const LORA: LoraConfig = { r: 2, alpha: 4, dropout: 0, targetModules: ["q", "v"] };

describe("trainers", function () {
  it("limitConcurrency runs at most `slots` rounds at once and all of them, in call order", async function () {
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    const fake = (i: number): RoundTrainer => ({
      async trainRound(): Promise<RoundOutput> {
        started.push(i);
        running++;
        peak = Math.max(peak, running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        return { adapter: new Uint8Array([i]), metrics: {} as RoundOutput["metrics"], tokensPerSec: 0 };
      },
      close: async () => undefined,
    });
    const limited = limitConcurrency([0, 1, 2, 3, 4].map(fake), 2);
    const outs = await Promise.all(limited.map((t) => t.trainRound({} as RoundJob)));
    expect(outs.map((o) => o.adapter[0])).to.deep.equal([0, 1, 2, 3, 4]);
    expect(peak).to.equal(2);
    expect(started).to.deep.equal([0, 1, 2, 3, 4]);
    expect(() => limitConcurrency([], 0)).to.throw(RangeError, "slots must be a positive integer, got 0");
  });

  it("a client's supervised windows and loss weights reach its training (bad starts refused)", async function () {
    await initBackend("wasm", true);
    const tokenizer = await BPETokenizer.train(["the patient was admitted with chest pain. ".repeat(40)], 300);
    const gpt = GPT.init(TINY, 1);
    const baseBytes = await serializeBaseModel(gpt, tokenizer);
    const init = LoraAdapter.init(TINY, LORA, 1);
    const startAdapter = serializeAdapter(TINY, LORA, await init.exportWeights(), {
      kind: "init",
      task: 1,
      round: 0,
      baseModelSha256: sha256Hex(baseBytes),
    });
    init.dispose();
    gpt.dispose();
    const tokens = Int32Array.from(await tokenizer.encode("the patient was admitted with chest pain. ".repeat(20)));
    const job: RoundJob = {
      task: 1,
      round: 1,
      identity: 1,
      startAdapter,
      train: { steps: 2, batchSize: 2, seqLen: 8 },
    };
    const bad = await InlineTrainer.create(baseBytes, LORA, {
      trainTokens: tokens,
      trainWindowStarts: Int32Array.from([tokens.length - 3]),
      numExamples: 1,
    });
    const e = await rejection(bad.trainRound(job));
    expect(e.name).to.equal("InvalidArgumentError");
    expect(e.message).to.equal(
      `windowStarts[0] = ${tokens.length - 3} leaves fewer than seqLen + 1 = 9 of the ${tokens.length} tokens`,
    );
    // all weight on one target of one window, or the same window with every target weighed: different updates
    const weights = new Float32Array(tokens.length);
    weights[8] = 1;
    const one = await InlineTrainer.create(baseBytes, LORA, {
      trainTokens: tokens,
      trainWindowStarts: Int32Array.from([0]),
      trainLossWeights: weights,
      numExamples: 1,
    });
    const all = await InlineTrainer.create(baseBytes, LORA, {
      trainTokens: tokens,
      trainWindowStarts: Int32Array.from([0]),
      numExamples: 1,
    });
    const [a, b] = [await one.trainRound(job), await all.trainRound(job)];
    expect(sha256Hex(a.adapter)).to.not.equal(sha256Hex(b.adapter));
    expect(a.metrics.trainLossEnd).to.not.equal(b.metrics.trainLossEnd);
  });
});
