import { expect } from "chai";
import { initBackend, tf } from "../../node/model/backend.js";
import { GPT, tokenLoss } from "../../node/model/gpt.js";
import { causalAttention } from "../../node/model/attention.js";
import { LoraAdapter } from "../../node/model/lora.js";
import { ALL_TARGETS, TINY } from "../fixtures/tiny-gpt.js";

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
          // every projection, and the (tied) output head
          const targets = [...ALL_TARGETS.targetModules, "lm_head"];
          const lora = LoraAdapter.init(TINY, { ...ALL_TARGETS, targetModules: targets }, 3);
          expect(lora.modules.get("lm_head")!.B.shape).to.deep.equal([ALL_TARGETS.r, TINY.vocabSize]);
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
        // an lm_head update is refused: merging it into the tied head would change the embedding too
        const head = LoraAdapter.init(TINY, { ...ALL_TARGETS, targetModules: ["q", "lm_head"] }, 3);
        expect(() => head.merge(gpt)).to.throw("an lm_head update cannot be merged into GPT-2's head, which is tied");
        head.dispose();
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
});
