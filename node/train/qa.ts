/**
 * Yes/no/maybe accuracy for PubMedQA: each answer is scored by its log-likelihood after the prompt (the question and
 * as much of its context as fits the window: fitQaPrompt), and the most likely answer is the prediction.
 */
import { tf } from "../model/backend.js";
import type { CausalLM } from "../model/causal-lm.js";
import type { LoraAdapter } from "../model/lora.js";
import type { BPETokenizer } from "../model/tokenizer.js";
import { DECISIONS, type Decision, type QAItem } from "../data/pubmedqa.js";
import { paddedQaPrompt } from "../data/tokens.js";
import type { ProbeItem } from "../data/probe.js";

/** A multiple-choice evaluation: accuracy, counts, and the option predicted for each item. */
export interface ChoiceResult<P> {
  accuracy: number;
  correct: number;
  total: number;
  predictions: P[];
}

export type QAResult = ChoiceResult<Decision>;
/** Probe accuracy; the predictions are option indices. */
export type ProbeResult = ChoiceResult<number>;

/** One sequence to score: inputs, targets, and how many final targets are the candidate's tokens. */
interface Scored {
  input: number[];
  target: number[];
  candidateLength: number;
}

function sequenceFor(prompt: number[], cand: number[], T: number): Scored {
  const seq = [...prompt, ...cand].slice(-(T + 1)); // inputs are seq[0..n-2], targets seq[1..n-1]
  return { input: seq.slice(0, -1), target: seq.slice(1), candidateLength: cand.length };
}

/**
 * Sum of log p(candidate tokens | sequence) for each sequence. Sequences with the same inputs (one prompt, answers
 * of one token: " yes", " no", " maybe") share one forward row; rows are forwarded `batchSize` at a time, shortest
 * first, each batch right-padded to its longest row — exact, since a causal model's logits at a position never see
 * the positions after it. The log-probabilities are read at the candidate positions only.
 */
async function scoreSequences(
  gpt: CausalLM,
  lora: LoraAdapter | null,
  seqs: Scored[],
  batchSize = 32,
): Promise<number[]> {
  const rowOf = new Map<string, number>();
  const rows: number[][] = [];
  const seqRow = seqs.map((s) => {
    const key = s.input.join(",");
    let r = rowOf.get(key);
    if (r === undefined) rowOf.set(key, (r = rows.push(s.input) - 1));
    return r;
  });
  // for each row, the (position, token) pairs whose log-probability some sequence needs, each once
  const wanted = rows.map(() => new Map<string, [number, number]>());
  seqs.forEach((s, i) => {
    const L = s.input.length;
    for (let k = L - s.candidateLength; k < L; k++) wanted[seqRow[i]!]!.set(`${k},${s.target[k]}`, [k, s.target[k]!]);
  });
  const logp = rows.map(() => new Map<string, number>());
  const order = rows.map((_, r) => r).sort((a, b) => rows[a]!.length - rows[b]!.length);
  for (let o = 0; o < order.length; o += batchSize) {
    const batch = order.slice(o, o + batchSize);
    const L = rows[batch[batch.length - 1]!]!.length;
    const x = new Int32Array(batch.length * L); // right-padded with token 0
    const positions: number[] = []; // into the batch's B·L positions
    const picks: number[] = []; // (index into positions, token)
    batch.forEach((r, b) => {
      x.set(rows[r]!, b * L);
      for (const [k, t] of wanted[r]!.values()) picks.push(positions.push(b * L + k) - 1, t);
    });
    const picked = tf.tidy(() => {
      const at = tf.tensor1d(positions, "int32");
      const out = tf.logSoftmax(gpt.forward(tf.tensor2d(x, [batch.length, L], "int32"), lora, false, at), -1);
      return tf.gatherND(out, tf.tensor2d(picks, [picks.length / 2, 2], "int32"));
    });
    const values = (await picked.data()) as Float32Array;
    picked.dispose();
    let j = 0;
    for (const r of batch) for (const key of wanted[r]!.keys()) logp[r]!.set(key, values[j++]!);
  }
  return seqs.map((s, i) => {
    const L = s.input.length;
    let sum = 0;
    for (let k = L - s.candidateLength; k < L; k++) sum += logp[seqRow[i]!]!.get(`${k},${s.target[k]}`)!;
    return sum;
  });
}

/** Sum of log p(candidate tokens | prompt) for each candidate (the prompt cut from the left to fit the context). */
export async function scoreCandidates(
  gpt: CausalLM,
  lora: LoraAdapter | null,
  prompt: number[],
  candidates: number[][],
): Promise<number[]> {
  return scoreSequences(
    gpt,
    lora,
    candidates.map((c) => sequenceFor(prompt, c, gpt.contextLength)),
  );
}

export async function qaAccuracy(
  gpt: CausalLM,
  lora: LoraAdapter | null,
  tokenizer: BPETokenizer,
  items: readonly QAItem[],
): Promise<QAResult> {
  const candidates = await Promise.all(DECISIONS.map((d) => tokenizer.encode(` ${d}`)));
  const seqs: Scored[] = [];
  const T = gpt.contextLength;
  for (const item of items) {
    // laid out as qaWindows lays out training windows: the answer at the same positions (one prompt per length)
    const prompts = new Map<number, number[]>();
    for (const c of candidates) {
      let padded = prompts.get(c.length);
      if (!padded) {
        const { pad, prompt } = await paddedQaPrompt(tokenizer, item, c.length, T);
        prompts.set(c.length, (padded = [...new Array<number>(pad).fill(tokenizer.endOfTextId), ...prompt]));
      }
      seqs.push(sequenceFor(padded, c, T));
    }
  }
  const scores = await scoreSequences(gpt, lora, seqs);
  const predictions: Decision[] = [];
  let correct = 0;
  items.forEach((item, i) => {
    const mine = scores.slice(i * candidates.length, (i + 1) * candidates.length);
    const pred = DECISIONS[mine.indexOf(Math.max(...mine))]!;
    predictions.push(pred);
    if (pred === item.decision) correct++;
  });
  return { accuracy: items.length ? correct / items.length : NaN, correct, total: items.length, predictions };
}

/**
 * Knowledge-flow probe accuracy (node/data/probe.ts): each option scored by its length-normalised log-likelihood
 * after the prompt (the mean log p per token of the option, so longer words are not penalised), the best one
 * picked. Chance is 1 / options.
 */
export async function probeAccuracy(
  model: CausalLM,
  lora: LoraAdapter | null,
  tokenizer: BPETokenizer,
  items: readonly ProbeItem[],
): Promise<ProbeResult> {
  const seqs: Scored[] = [];
  for (const item of items) {
    const prompt = await tokenizer.encode(item.prompt);
    for (const option of item.options)
      seqs.push(sequenceFor(prompt, await tokenizer.encode(option), model.contextLength));
  }
  const scores = await scoreSequences(model, lora, seqs);
  const predictions: number[] = [];
  let correct = 0;
  let k = 0;
  for (const item of items) {
    const mine = item.options.map(() => scores[k]! / seqs[k++]!.candidateLength);
    const pick = mine.indexOf(Math.max(...mine));
    predictions.push(pick);
    if (pick === item.answer) correct++;
  }
  return { accuracy: items.length ? correct / items.length : NaN, correct, total: items.length, predictions };
}

/** Min, mean and harmonic mean over hospitals. */
export interface Fairness {
  min: number;
  mean: number;
  hmean: number;
}

/** Min, mean and harmonic mean of per-client values (H-mean is 0 when any value is 0). */
export function fairness(values: number[]): Fairness {
  if (values.length === 0) return { min: NaN, mean: NaN, hmean: NaN };
  const min = Math.min(...values);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const hmean = min <= 0 ? 0 : values.length / values.reduce((a, v) => a + 1 / v, 0);
  return { min, mean, hmean };
}
