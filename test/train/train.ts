import { expect } from "chai";
import { initBackend, tf } from "../../node/model/backend.js";
import { GPT, tokenLoss } from "../../node/model/gpt.js";
import { LoraAdapter } from "../../node/model/lora.js";
import { train } from "../../node/train/train.js";
import { evaluateLoss } from "../../node/train/evaluate.js";
import { rejection } from "../../node/testing/rejection.js";
import { ALL_TARGETS, TINY } from "../fixtures/tiny-gpt.js";

async function expectRejection(p: Promise<unknown>, name: string, message: string): Promise<void> {
  const e = await rejection(p);
  expect(e.name).to.equal(name);
  expect(e.message).to.equal(message);
}

describe("node/train train()", function () {
  this.timeout(120_000);
  before(async function () {
    await initBackend("wasm", true);
  });

  it("trains only the adapter: the base weights stay bit-identical", async function () {
    const gpt = GPT.init(TINY, 7);
    const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
    const before = await gpt.exportWeights();
    const stream = Int32Array.from({ length: 400 }, (_, i) => (i * 7) % 24);
    await train({
      gpt,
      lora,
      tokens: stream,
      config: { steps: 5, batchSize: 4, seqLen: 8, lr: 1e-2, warmupSteps: 1 },
    });
    const after = await gpt.exportWeights();
    for (const [name, w] of before) {
      expect(Buffer.compare(Buffer.from(w.data.buffer), Buffer.from(after.get(name)!.data.buffer)), name).to.equal(0);
    }
    const B = (await lora.modules.get("h.0.attn.c_attn")!.B.data()) as Float32Array;
    expect(B.some((v) => v !== 0)).to.equal(true);
    gpt.dispose();
    lora.dispose();
  });

  it("samples windows only at windowStarts and weighs targets by lossWeights", async function () {
    const gpt = GPT.init(TINY, 7);
    const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
    const stream = Int32Array.from({ length: 100 }, (_, i) => (i * 5) % 24);
    const weights = new Float32Array(100);
    weights[21] = 3; // window at 13: inputs 13..20, targets 14..21; only the last target (and 18, below) counts
    weights[18] = 1;
    const x = tf.tensor2d([[...stream.subarray(13, 21)]], [1, 8], "int32");
    const y = tf.tensor2d([[...stream.subarray(14, 22)]], [1, 8], "int32");
    const per = tokenLoss(gpt.forward(x, lora), y).arraySync() as number[];
    const expected = (3 * per[7]! + per[4]!) / 4;
    const r = await train({
      gpt,
      lora,
      tokens: stream,
      windowStarts: Int32Array.from([13]),
      lossWeights: weights,
      config: { steps: 1, batchSize: 2, seqLen: 8, lr: 1e-9, warmupSteps: 1 },
    });
    expect(Math.abs(r.finalLoss - expected), `${r.finalLoss} vs ${expected}`).to.be.below(1e-5);
    const run = (o: Partial<Parameters<typeof train>[0]>) =>
      train({ gpt, lora, tokens: stream, config: { steps: 1, batchSize: 2, seqLen: 8 }, ...o });
    await expectRejection(
      run({ windowStarts: Int32Array.from([92]) }),
      "InvalidArgumentError",
      "windowStarts[0] = 92 leaves fewer than seqLen + 1 = 9 of the 100 tokens",
    );
    await expectRejection(
      run({ windowStarts: new Int32Array(0) }),
      "InvalidArgumentError",
      "windowStarts is empty: no training window to sample",
    );
    await expectRejection(
      run({ lossWeights: new Float32Array(99) }),
      "InvalidArgumentError",
      "lossWeights has 99 entries for 100 tokens",
    );
    await expectRejection(
      run({ lossWeights: new Float32Array(100).fill(NaN) }),
      "InvalidArgumentError",
      "lossWeights[0] = NaN is not a finite non-negative number",
    );
    tf.dispose([x, y]);
    gpt.dispose();
    lora.dispose();
  });

  it("learns a repeated pattern: loss falls far below its start", async function () {
    const gpt = GPT.init(TINY, 7);
    // a random tiny base with GPT-2's 0.02 embeddings cannot express confident predictions through its frozen,
    // tied head; unit-scale embeddings stand in for a trained base
    const wte = gpt.params.get("wte.weight")!;
    tf.tidy(() => wte.assign(tf.randomNormal(wte.shape, 0, 1, "float32", 99)));
    const lora = LoraAdapter.init(
      TINY,
      { r: 8, alpha: 16, dropout: 0, targetModules: ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"] },
      3,
    );
    const pattern = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
    const stream = Int32Array.from({ length: 600 }, (_, i) => pattern[i % pattern.length]!);
    const start = await evaluateLoss(gpt, lora, stream, { seqLen: 8, batchSize: 8 });
    const r = await train({
      gpt,
      lora,
      tokens: stream,
      evalTokens: stream,
      config: { steps: 150, batchSize: 8, seqLen: 8, lr: 5e-2, warmupSteps: 5 },
    });
    const end = r.evals[r.evals.length - 1]!.result;
    expect(start.meanLoss).to.be.above(5);
    expect(end.meanLoss).to.be.below(1);
    expect(end.meanLoss).to.be.below(start.meanLoss / 10);
    gpt.dispose();
    lora.dispose();
  });

  it("keeps tensor memory flat across steps", async function () {
    const gpt = GPT.init(TINY, 7);
    const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
    const stream = Int32Array.from({ length: 400 }, (_, i) => (i * 5) % 24);
    const counts: number[] = [];
    await train({
      gpt,
      lora,
      tokens: stream,
      config: { steps: 12, batchSize: 4, seqLen: 8, lr: 1e-2, warmupSteps: 1, gradAccum: 2, proxMu: 0.1 },
      onStep: () => counts.push(tf.memory().numTensors),
    });
    expect(counts.length).to.equal(12);
    expect(new Set(counts.slice(1)).size, `tensor counts ${counts}`).to.equal(1);
    gpt.dispose();
    lora.dispose();
  });

  it("is deterministic: the same seed gives bit-identical adapters", async function () {
    const run = async () => {
      const gpt = GPT.init(TINY, 7);
      const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
      const stream = Int32Array.from({ length: 400 }, (_, i) => (i * 7) % 24);
      await train({
        gpt,
        lora,
        tokens: stream,
        config: { steps: 4, batchSize: 4, seqLen: 8, lr: 1e-2, warmupSteps: 1, seed: 9 },
      });
      const w = await lora.exportWeights();
      gpt.dispose();
      lora.dispose();
      return [...w.values()].map((m) => Buffer.concat([Buffer.from(m.A.buffer), Buffer.from(m.B.buffer)]));
    };
    const [a, b] = [await run(), await run()];
    expect(Buffer.concat(a).equals(Buffer.concat(b))).to.equal(true);
  });
});
