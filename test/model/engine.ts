import { expect } from "chai";
import { initBackend, tf } from "../../node/model/backend.js";
import { GPT, tokenLoss, type GPTConfig } from "../../node/model/gpt.js";
import { causalAttention } from "../../node/model/attention.js";
import { LoraAdapter, type LoraConfig } from "../../node/model/lora.js";
import { train } from "../../node/train/train.js";
import { evaluateLoss } from "../../node/train/evaluate.js";
import { rejection } from "../../node/testing/rejection.js";

async function expectRejection(p: Promise<unknown>, name: string, message: string): Promise<void> {
  const e = await rejection(p);
  expect(e.name).to.equal(name);
  expect(e.message).to.equal(message);
}

const TINY: GPTConfig = { nLayer: 2, nEmbd: 16, nHead: 2, blockSize: 8, vocabSize: 24, dropout: 0, layerNormEps: 1e-5 };
const ALL_TARGETS: LoraConfig = {
  r: 2,
  alpha: 4,
  dropout: 0,
  targetModules: ["q", "v", "attn.c_proj", "c_fc", "mlp.c_proj"],
};

function tokens2d(rows: number[][]): tf.Tensor2D {
  return tf.tensor2d(rows, [rows.length, rows[0]!.length], "int32");
}

/** B filled with small random values, so gradients reach A too. */
function randomizeB(lora: LoraAdapter, seed: number): void {
  let s = seed;
  for (const m of lora.modules.values()) tf.tidy(() => m.B.assign(tf.randomNormal(m.B.shape, 0, 0.1, "float32", s++)));
}

const BACKENDS = ["wasm", "cpu"];

describe("node/model engine", function () {
  this.timeout(120_000);
  after(async function () {
    await initBackend("wasm", true);
  });

  for (const backend of BACKENDS) {
    describe(`on ${backend}`, function () {
      before(async function () {
        await initBackend(backend, true);
      });

      for (const base of ["frozen", "trainable"])
        it(`LoRA gradients agree with finite differences (rel. error < 1e-3), ${base} base`, async function () {
          const frozen = base === "frozen";
          const gpt = GPT.init(TINY, 7);
          // frozen is how train() runs LoRA (GPT then keeps derived weights and uses its own product gradient)
          if (frozen) gpt.params.forEach((v) => (v.trainable = false));
          const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
          randomizeB(lora, 11);
          const x = tokens2d([
            [1, 5, 7, 2, 9, 3, 4, 8],
            [6, 6, 2, 1, 0, 11, 17, 3],
          ]);
          const y = tokens2d([
            [5, 7, 2, 9, 3, 4, 8, 1],
            [6, 2, 1, 0, 11, 17, 3, 22],
          ]);
          const lossSum = () => tf.tidy(() => tf.mul(gpt.loss(x, y, lora), 16) as tf.Scalar);
          const { grads } = tf.variableGrads(lossSum, lora.variables());
          let checked = 0;
          for (const v of lora.variables()) {
            const g = (await grads[v.name]!.data()) as Float32Array;
            const base = (await v.data()) as Float32Array;
            // directional derivative along u = g/|g| (analytic: |g|): far better conditioned in float32 than single
            // entries; Richardson extrapolation over two step sizes cancels the h² term
            const norm = Math.sqrt(g.reduce((a, x) => a + x * x, 0));
            const at = (delta: number) => {
              const w = base.map((x, i) => x + (delta * g[i]!) / norm);
              tf.tidy(() => v.assign(tf.tensor(w, v.shape)));
              return lossSum().dataSync()[0]!;
            };
            const central = (h: number) => (at(h) - at(-h)) / (2 * h);
            const numeric = (4 * central(2e-2) - central(4e-2)) / 3;
            tf.tidy(() => v.assign(tf.tensor(base, v.shape)));
            const rel = Math.abs(numeric - norm) / norm;
            expect(rel, `${v.name}: analytic ${norm} numeric ${numeric}`).to.be.below(1e-3);
            checked++;
          }
          expect(checked).to.equal(lora.variables().length);
          Object.values(grads).forEach((t) => t.dispose());
          gpt.dispose();
          lora.dispose();
          x.dispose();
          y.dispose();
        });

      it("a fresh adapter (B = 0) reproduces the base model exactly", async function () {
        const gpt = GPT.init(TINY, 7);
        const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
        const x = tokens2d([[1, 2, 3, 4, 5, 6, 7, 8]]);
        const base = (await gpt.forward(x).data()) as Float32Array;
        const adapted = (await gpt.forward(x, lora).data()) as Float32Array;
        expect(Buffer.compare(Buffer.from(base.buffer), Buffer.from(adapted.buffer))).to.equal(0);
        gpt.dispose();
        lora.dispose();
      });

      it("merged LoRA forward equals the unmerged forward, and unmerge restores the weights", async function () {
        const gpt = GPT.init(TINY, 7);
        gpt.params.forEach((v) => (v.trainable = false)); // a frozen base: GPT caches tensors derived from it
        const lora = LoraAdapter.init(TINY, ALL_TARGETS, 3);
        randomizeB(lora, 5);
        const x = tokens2d([[1, 2, 3, 4, 5, 6, 7, 8]]);
        const before = (await gpt.params.get("h.0.attn.c_attn.weight")!.data()) as Float32Array;
        const plain = (await gpt.forward(x).data()) as Float32Array;
        const unmerged = (await gpt.forward(x, lora).data()) as Float32Array;
        lora.merge(gpt);
        const merged = (await gpt.forward(x).data()) as Float32Array;
        let maxDiff = 0;
        for (let i = 0; i < merged.length; i++) maxDiff = Math.max(maxDiff, Math.abs(merged[i]! - unmerged[i]!));
        expect(maxDiff).to.be.below(1e-4);
        lora.unmerge(gpt);
        const after = (await gpt.params.get("h.0.attn.c_attn.weight")!.data()) as Float32Array;
        let maxW = 0;
        for (let i = 0; i < after.length; i++) maxW = Math.max(maxW, Math.abs(after[i]! - before[i]!));
        expect(maxW).to.be.below(1e-6);
        const again = (await gpt.forward(x).data()) as Float32Array;
        expect(Math.max(...again.map((v, i) => Math.abs(v - plain[i]!)))).to.be.below(1e-5);
        gpt.dispose();
        lora.dispose();
      });

      it("the attention op (own gradient; per-slice products on wasm) matches composed tfjs ops", function () {
        const [n, T, D] = [6, 8, 4];
        const mask = tf.mul(tf.sub(1, tf.linalg.bandPart(tf.ones([T, T]), -1, 0)), -1e9) as tf.Tensor2D;
        const [q, k, v, w] = [1, 2, 3, 4].map((s) => tf.randomNormal([n, T, D], 0, 1, "float32", s)) as tf.Tensor3D[];
        const composed = (a: tf.Tensor3D, b: tf.Tensor3D, c: tf.Tensor3D) =>
          tf.matMul(
            tf.softmax(tf.add(tf.mul(tf.matMul(a, tf.transpose(b, [0, 2, 1])), 1 / Math.sqrt(D)), mask), -1),
            c,
          );
        const objective = (f: typeof composed) =>
          tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
            tf.sum(tf.mul(f(a as tf.Tensor3D, b as tf.Tensor3D, c as tf.Tensor3D), w!)),
          );
        const maxAbs = (a: tf.Tensor, b: tf.Tensor) => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!;
        expect(maxAbs(causalAttention(q!, k!, v!, mask), composed(q!, k!, v!))).to.be.below(1e-5);
        const ours = objective((a, b, c) => causalAttention(a, b, c, mask))([q!, k!, v!]);
        const ref = objective(composed)([q!, k!, v!]);
        ours.forEach((g, i) => expect(maxAbs(g, ref[i]!), `gradient ${"qkv"[i]}`).to.be.below(1e-5));
        tf.dispose([mask, q!, k!, v!, w!, ...ours, ...ref]);
      });

      it("the fused loss matches logSoftmax cross-entropy in value and gradient, extreme logits too", function () {
        const V = 24;
        const logits = tf.concat([
          tf.randomNormal([14, V], 0, 3, "float32", 9),
          tf.tensor2d([Array.from({ length: V }, (_, i) => (i === 3 ? 200 : -200 + i))]),
        ]) as tf.Tensor2D;
        const targets = tf.tensor2d([Array.from({ length: 15 }, (_, i) => (i * 7) % V)], [1, 15], "int32");
        const ref = (x: tf.Tensor) =>
          tf.neg(tf.sum(tf.mul(tf.logSoftmax(x, -1), tf.oneHot(tf.reshape(targets, [-1]) as tf.Tensor1D, V)), -1));
        const ours = (x: tf.Tensor) => tokenLoss(x as tf.Tensor2D, targets);
        const a = ours(logits).arraySync() as number[];
        const b = ref(logits).arraySync() as number[];
        a.forEach((v, i) =>
          expect(Math.abs(v - b[i]!), `token ${i}: ${v} vs ${b[i]}`).to.be.below(1e-4 * Math.max(1, Math.abs(b[i]!))),
        );
        expect(a[14]).to.be.above(390); // target 14 % 24 = 14 sits 386 + 14 below the winner: no underflow to Infinity
        const w = tf.randomNormal([15], 0, 1, "float32", 10);
        const ga = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(ours(x), w)))(logits);
        const gb = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(ref(x), w)))(logits);
        expect(tf.max(tf.abs(tf.sub(ga, gb))).dataSync()[0]).to.be.below(1e-5);
        const short = tf.tensor2d([[1, 2, 3]], [1, 3], "int32");
        expect(() => tokenLoss(logits, short))
          .to.throw("targets have 3 tokens, logits 15 rows")
          .with.property("name", "InvalidArgumentError");
        tf.dispose([logits, targets, w, ga, gb, short]);
      });

      it("a q,v adapter changes only the q and v thirds of c_attn", async function () {
        const gpt = GPT.init(TINY, 7);
        const lora = LoraAdapter.init(TINY, { r: 2, alpha: 4, dropout: 0, targetModules: ["q", "v"] }, 3);
        randomizeB(lora, 5);
        const delta = (await lora.deltaWeight("h.0.attn.c_attn").array()) as number[][];
        const C = TINY.nEmbd;
        const colAbs = (from: number) =>
          delta.reduce((s, row) => s + row.slice(from, from + C).reduce((a, b) => a + Math.abs(b), 0), 0);
        expect(colAbs(0)).to.be.above(0);
        expect(colAbs(C)).to.equal(0);
        expect(colAbs(2 * C)).to.be.above(0);
        expect([...lora.modules.keys()]).to.deep.equal(["h.0.attn.c_attn", "h.1.attn.c_attn"]);
        gpt.dispose();
        lora.dispose();
      });
    });
  }

  describe("training", function () {
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
});
