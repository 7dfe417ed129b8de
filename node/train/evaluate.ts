/** Held-out evaluation: mean next-token loss and perplexity over non-overlapping windows, deterministic. */
import { tf } from "../model/backend.js";
import { tokenLoss } from "../model/gpt.js";
import type { CausalLM } from "../model/causal-lm.js";
import type { LoraAdapter } from "../model/lora.js";

export interface EvalResult {
  /** Mean next-token cross-entropy, nats. */
  meanLoss: number;
  /** exp(meanLoss). */
  perplexity: number;
  /** Tokens scored. */
  tokens: number;
}

export interface EvalOptions {
  seqLen: number;
  batchSize: number;
  /** Score at most this many windows (0 = all). */
  maxSequences?: number;
}

/** Scores `tokens` in consecutive windows of seqLen (+1 for the target); every predicted token counted once. */
export async function evaluateLoss(
  gpt: CausalLM,
  lora: LoraAdapter | null,
  tokens: Int32Array,
  o: EvalOptions,
): Promise<EvalResult> {
  const T = Math.min(o.seqLen, gpt.contextLength, tokens.length - 1);
  const windows: number[] = [];
  for (let s = 0; s + T + 1 <= tokens.length; s += T) windows.push(s);
  if (windows.length === 0) return { meanLoss: NaN, perplexity: NaN, tokens: 0 };
  const use = o.maxSequences ? windows.slice(0, o.maxSequences) : windows;
  let sum = 0;
  let count = 0;
  for (let i = 0; i < use.length; i += o.batchSize) {
    const batch = use.slice(i, i + o.batchSize);
    const x = new Int32Array(batch.length * T);
    const y = new Int32Array(batch.length * T);
    batch.forEach((s, b) => {
      x.set(tokens.subarray(s, s + T), b * T);
      y.set(tokens.subarray(s + 1, s + T + 1), b * T);
    });
    const losses = tf.tidy(() => {
      const xt = tf.tensor2d(x, [batch.length, T], "int32");
      const yt = tf.tensor2d(y, [batch.length, T], "int32");
      return tf.sum(tokenLoss(gpt.forward(xt, lora, false), yt));
    });
    sum += (await losses.data())[0]!;
    losses.dispose();
    count += batch.length * T;
  }
  const meanLoss = sum / count;
  return { meanLoss, perplexity: Math.exp(meanLoss), tokens: count };
}
