/**
 * The QA path can change answers: a tiny frozen model with LoRA on every projection and the output head, tuned on
 * supervised windows that end on the answer (qaWindows), scored by answer log-likelihood (qaAccuracy), on a toy set
 * whose answer is learnable (the colour in the context decides it), must end well above its majority class.
 */
import { expect } from "chai";
import { initBackend } from "../../node/model/backend.js";
import { GPT } from "../../node/model/gpt.js";
import { LoraAdapter } from "../../node/model/lora.js";
import { BPETokenizer, buildTokenizerJson } from "../../node/model/tokenizer.js";
import { qaWindows } from "../../node/data/tokens.js";
import { qaAccuracy } from "../../node/train/qa.js";
import { train } from "../../node/train/train.js";
import type { Decision, QAItem } from "../../node/data/pubmedqa.js";

/** yes for red (half the items), no for blue, maybe for green; the subject varies. */
function toyItems(n: number, offset: number): QAItem[] {
  const subjects = ["lesion", "culture", "biopsy", "stain", "sample", "slide", "swab", "smear", "tissue", "scan"];
  return Array.from({ length: n }, (_, i) => {
    const k = i + offset;
    const [colour, decision]: [string, Decision] =
      k % 10 < 5 ? ["red", "yes"] : k % 10 < 8 ? ["blue", "no"] : ["green", "maybe"];
    return {
      id: String(k),
      question: `Is the ${subjects[k % subjects.length]} ${k} positive?`,
      contexts: [`It was ${colour}.`],
      longAnswer: "",
      decision,
      meshes: [],
      year: "2020",
      specialty: "toy",
    };
  });
}

describe("node/train QA fine-tuning moves answers", function () {
  this.timeout(300_000);

  it("LoRA on every projection and lm_head: a toy set from one answer to >= 80% (majority 50%)", async function () {
    await initBackend("wasm", true);
    const tokenizer = BPETokenizer.fromJSON(buildTokenizerJson([]), "<|endoftext|>");
    const config = { nLayer: 2, nEmbd: 32, nHead: 2, blockSize: 96, vocabSize: 257, dropout: 0, layerNormEps: 1e-5 };
    const gpt = GPT.init(config, 5);
    gpt.params.forEach((v) => (v.trainable = false));
    const lora = LoraAdapter.init(
      config,
      { r: 8, alpha: 16, dropout: 0, targetModules: ["c_attn", "o", "c_fc", "mlp.c_proj", "lm_head"] },
      1,
    );
    const trainItems = toyItems(60, 0);
    const heldOut = toyItems(40, 1000);
    const before = await qaAccuracy(gpt, lora, tokenizer, heldOut);
    const w = await qaWindows(tokenizer, trainItems, 96, 8);
    await train({
      gpt,
      lora,
      tokens: w.tokens,
      windowStarts: w.starts,
      lossWeights: w.weights,
      config: { steps: 300, batchSize: 16, seqLen: 96, lr: 2e-2, warmupSteps: 5, seed: 3 },
    });
    const after = await qaAccuracy(gpt, lora, tokenizer, heldOut);
    const majority = heldOut.filter((q) => q.decision === "yes").length / heldOut.length;
    expect(majority).to.equal(0.5);
    // before: one answer for every question (the 30% "no" of this set); after: answers that follow the colour.
    // 300 steps at lr 2e-2 amplify float summation order: on wasm's own products this ends at 87.5% with all three
    // answers, on OpenBLAS's (native.ts) at 80% with yes and no, "maybe" (10%) still answered yes
    expect([before.accuracy, [...new Set(before.predictions)]]).to.deep.equal([0.3, ["no"]]);
    expect(after.accuracy, `predictions ${after.predictions}`).to.be.at.least(0.8);
    expect(after.predictions, "both yes and no answered").to.include.members(["yes", "no"]);
    gpt.dispose();
    lora.dispose();
  });
});
