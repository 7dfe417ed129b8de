/** Turning documents into one token stream for training and evaluation. */
import type { BPETokenizer } from "../model/tokenizer.js";
import type { Document } from "./types.js";
import { qaPrompt, type QAItem } from "./pubmedqa.js";
import { InvalidArgumentError } from "../errors.js";

/** The parts one after another in one Int32Array. */
export function concatTokens(parts: readonly ArrayLike<number>[]): Int32Array {
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A token stream with the offsets where training windows start and per-token loss weights (see train.ts). */
export interface WindowedTokens {
  tokens: Int32Array;
  starts: Int32Array;
  weights: Float32Array;
}

/**
 * Supervised QA windows: per item, the prompt (question and context, as qaAccuracy scores it) followed by the
 * answer " yes" / " no" / " maybe", tokenized the way the scorer tokenizes them (prompt and answer separately), and
 * a training window (seqLen inputs, their seqLen next-token targets) whose last target is the answer. Items follow
 * each other in one stream, so a prompt shorter than the window is preceded by the previous item (or by
 * <|endoftext|> at the very start). Every target weighs 1 but the answer's tokens, which weigh `answerWeight`: with
 * seqLen − 1 the answer carries as much of the loss as the context it follows.
 */
export async function qaWindows(
  tokenizer: BPETokenizer,
  items: readonly QAItem[],
  seqLen: number,
  answerWeight = 1,
): Promise<WindowedTokens> {
  if (items.length === 0) throw new InvalidArgumentError("no QA items to build training windows from");
  const eot = tokenizer.endOfTextId;
  const parts: number[][] = [new Array(seqLen).fill(eot)];
  const ends: number[] = [];
  const answers: [number, number][] = [];
  let n = seqLen;
  for (const item of items) {
    const prompt = await tokenizer.encode(qaPrompt(item));
    const answer = await tokenizer.encode(` ${item.decision}`);
    parts.push([...prompt, ...answer, eot]);
    answers.push([n + prompt.length, n + prompt.length + answer.length]);
    n += prompt.length + answer.length + 1;
    ends.push(n - 2); // the window ends on the answer's last token, before <|endoftext|>
  }
  const tokens = concatTokens(parts);
  const weights = new Float32Array(n).fill(1);
  for (const [from, to] of answers) weights.fill(answerWeight, from, to);
  return { tokens, starts: Int32Array.from(ends, (e) => e - seqLen), weights };
}

/** Several windowed streams as one (for pooling clients' data). */
export function concatWindowed(parts: readonly WindowedTokens[]): WindowedTokens {
  const tokens = concatTokens(parts.map((p) => p.tokens));
  const weights = new Float32Array(tokens.length);
  const starts: number[] = [];
  let o = 0;
  for (const p of parts) {
    weights.set(p.weights, o);
    p.starts.forEach((s) => starts.push(s + o));
    o += p.tokens.length;
  }
  return { tokens, starts: Int32Array.from(starts), weights };
}

/** Concatenates the documents' tokens, each followed by <|endoftext|>. */
export async function tokenizeDocuments(tokenizer: BPETokenizer, docs: readonly Document[]): Promise<Int32Array> {
  const parts: number[][] = [];
  for (const d of docs) parts.push([...(await tokenizer.encode(d.text)), tokenizer.endOfTextId]);
  return concatTokens(parts);
}

/** Held-out perplexity of an add-one-smoothed unigram model fitted on `train`: the floor a language model must beat. */
export function unigramPerplexity(train: Int32Array, heldOut: Int32Array, vocabSize: number): number {
  const counts = new Float64Array(vocabSize).fill(1);
  for (const t of train) counts[t]! += 1;
  const total = train.length + vocabSize;
  let nll = 0;
  // the first token of the held-out stream has no context in the LM evaluation either; score the same targets
  for (let i = 1; i < heldOut.length; i++) nll -= Math.log(counts[heldOut[i]!]! / total);
  return Math.exp(nll / (heldOut.length - 1));
}
