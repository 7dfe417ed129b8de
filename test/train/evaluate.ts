import { expect } from "chai";
import { initBackend, tf } from "../../node/model/backend.js";
import { GPT } from "../../node/model/gpt.js";
import { evaluateLoss } from "../../node/train/evaluate.js";
import { fairness, scoreCandidates } from "../../node/train/qa.js";

describe("node/train evaluation", function () {
  this.timeout(120_000);
  before(async function () {
    await initBackend("wasm", true);
  });

  // (no chai closeTo here: with the ethers chai matchers loaded it only takes integers)
  it("equals a hand-computed value on a tiny model whose output is uniform", async function () {
    // all-zero weights and LayerNorm gains: every logit is 0, so each token costs ln(V) nats, perplexity V
    const cfg = { nLayer: 1, nEmbd: 8, nHead: 2, blockSize: 4, vocabSize: 10, dropout: 0, layerNormEps: 1e-5 };
    const gpt = GPT.init(cfg, 1);
    for (const v of gpt.params.values()) tf.tidy(() => v.assign(tf.zerosLike(v)));
    const tokens = Int32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const r = await evaluateLoss(gpt, null, tokens, { seqLen: 4, batchSize: 2 });
    expect(r.tokens).to.equal(8); // two windows of 4 predictions
    expect(Math.abs(r.meanLoss - Math.log(10))).to.be.below(1e-6);
    expect(Math.abs(r.perplexity - 10)).to.be.below(1e-5);
    const scores = await scoreCandidates(gpt, null, [1, 2], [[3], [4, 5]]);
    expect(Math.abs(scores[0] - -Math.log(10))).to.be.below(1e-6);
    expect(Math.abs(scores[1] - -2 * Math.log(10))).to.be.below(1e-6);
    gpt.dispose();
  });

  // long prompts cut from the left; one-token candidates share a row; short rows right-padded in one batch
  for (const [name, prompt, candidates] of [
    ["a long prompt", [1, 2, 3, 4, 5, 6, 7, 8], [[9], [10, 11], [3]]],
    ["a short prompt", [1, 2], [[9], [10, 11, 4], [3], [5, 6]]],
  ] as const) {
    it(`scores candidates after ${name} in batches as one pass each would`, async function () {
      await expectOnePassScores(prompt, candidates);
    });
  }

  async function expectOnePassScores(prompt: readonly number[], candidates: readonly (readonly number[])[]) {
    const cfg = { nLayer: 1, nEmbd: 8, nHead: 2, blockSize: 6, vocabSize: 12, dropout: 0, layerNormEps: 1e-5 };
    const gpt = GPT.init(cfg, 3);
    const scores = await scoreCandidates(
      gpt,
      null,
      [...prompt],
      candidates.map((c) => [...c]),
    );
    for (const [c, cand] of candidates.entries()) {
      const seq = [...prompt, ...cand].slice(-(cfg.blockSize + 1));
      const logp = tf.tidy(
        () =>
          tf
            .logSoftmax(gpt.forward(tf.tensor2d([seq.slice(0, -1)], [1, seq.length - 1], "int32")), -1)
            .arraySync() as number[][],
      );
      let expected = 0;
      for (let k = 0; k < cand.length; k++) expected += logp[seq.length - 1 - cand.length + k]![cand[k]!]!;
      expect(Math.abs(scores[c]! - expected), `candidate ${c}`).to.be.below(1e-5);
    }
    gpt.dispose();
  }

  it("reports Min, mean and harmonic mean of client accuracies", function () {
    const f = fairness([0.5, 0.25, 1]);
    expect(f.min).to.equal(0.25);
    expect(Math.abs(f.mean - 0.5833333)).to.be.below(1e-6);
    expect(Math.abs(f.hmean - 3 / (2 + 4 + 1))).to.be.below(1e-12);
    expect(fairness([0.5, 0]).hmean).to.equal(0);
  });
});
