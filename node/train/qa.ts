/**
 * Yes/no/maybe accuracy for PubMedQA: each answer is scored by its log-likelihood after the prompt (question and
 * context, cut from the left to fit the context window), and the most likely answer is the prediction.
 */
import { tf } from "../model/backend.js";
import type { GPT } from "../model/gpt.js";
import type { LoraAdapter } from "../model/lora.js";
import type { BPETokenizer } from "../model/tokenizer.js";
import { DECISIONS, qaPrompt, type Decision, type QAItem } from "../data/loaders.js";

export interface QAResult {
  accuracy: number;
  correct: number;
  total: number;
  predictions: Decision[];
}

/** Sum of log p(candidate tokens | prompt) for each candidate, as one batch per distinct candidate length. */
export async function scoreCandidates(gpt: GPT, lora: LoraAdapter | null, prompt: number[], candidates: number[][]): Promise<number[]> {
  const T = gpt.config.blockSize;
  const scores: number[] = [];
  for (const cand of candidates) {
    const seq = [...prompt, ...cand].slice(-(T + 1)); // inputs are seq[0..n-2], targets seq[1..n-1]
    const input = seq.slice(0, -1);
    const target = seq.slice(1);
    const logp = tf.tidy(() => {
      const logits = gpt.forward(tf.tensor2d([input], [1, input.length], "int32"), lora);
      return tf.logSoftmax(logits, -1);
    });
    const lp = (await logp.array()) as number[][];
    logp.dispose();
    let s = 0;
    for (let k = 0; k < cand.length; k++) {
      const pos = target.length - cand.length + k;
      s += lp[pos]![target[pos]!]!;
    }
    scores.push(s);
  }
  return scores;
}

export async function qaAccuracy(gpt: GPT, lora: LoraAdapter | null, tokenizer: BPETokenizer, items: readonly QAItem[]): Promise<QAResult> {
  const candidates = await Promise.all(DECISIONS.map((d) => tokenizer.encode(` ${d}`)));
  const predictions: Decision[] = [];
  let correct = 0;
  for (const item of items) {
    const prompt = await tokenizer.encode(qaPrompt(item));
    const scores = await scoreCandidates(gpt, lora, prompt, candidates);
    const best = scores.indexOf(Math.max(...scores));
    const pred = DECISIONS[best]!;
    predictions.push(pred);
    if (pred === item.decision) correct++;
  }
  return { accuracy: items.length ? correct / items.length : NaN, correct, total: items.length, predictions };
}

/** Min, mean and harmonic mean of per-client values (H-mean is 0 when any value is 0). */
export function fairness(values: number[]): { min: number; mean: number; hmean: number } {
  if (values.length === 0) return { min: NaN, mean: NaN, hmean: NaN };
  const min = Math.min(...values);
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const hmean = min <= 0 ? 0 : values.length / values.reduce((a, v) => a + 1 / v, 0);
  return { min, mean, hmean };
}
