/** Turning documents into one token stream for training and evaluation. */
import type { BPETokenizer } from "../model/tokenizer.js";
import type { Document } from "./types.js";
import type { QAItem } from "./pubmedqa.js";
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
 * The prompt tokens of a QA item that fit `budget` tokens: "Question: …\nContext:", the context, "\nAnswer:", each
 * tokenized on its own, the context cut at its end when the whole would not fit. A question and the start of its
 * context always make it into the window (cutting from the left, as a plain sliding window does, drops the question
 * first). The head alone longer than the budget is cut from the left.
 */
export async function fitQaPrompt(tokenizer: BPETokenizer, item: QAItem, budget: number): Promise<number[]> {
  const head = await tokenizer.encode(`Question: ${item.question}\nContext:`);
  const tail = await tokenizer.encode("\nAnswer:");
  const context = await tokenizer.encode(` ${item.contexts.join(" ")}`);
  const room = Math.max(0, budget - head.length - tail.length);
  return [...head, ...context.slice(0, room), ...tail].slice(-budget);
}

/**
 * A QA window's tokens before its answer of `answerLength` tokens: `pad` <|endoftext|> tokens, then fitQaPrompt's
 * prompt, so that pad + prompt + answer are exactly seqLen + 1 tokens (the window's inputs and its last target).
 * Training windows (qaWindows) and scoring (qaAccuracy) both lay out the answer this way.
 */
export async function paddedQaPrompt(
  tokenizer: BPETokenizer,
  item: QAItem,
  answerLength: number,
  seqLen: number,
): Promise<{ pad: number; prompt: number[] }> {
  const prompt = await fitQaPrompt(tokenizer, item, seqLen - answerLength);
  return { pad: seqLen + 1 - prompt.length - answerLength, prompt };
}

/**
 * Supervised QA windows: per item, the prompt (question and the start of its context: fitQaPrompt) followed by the
 * answer " yes" / " no" / " maybe", tokenized the way the scorer tokenizes them (prompt and answer separately), and
 * a training window (seqLen inputs, their seqLen next-token targets) whose last target is the answer. A prompt
 * shorter than the window is left-padded with <|endoftext|>, as qaAccuracy pads it, so the answer sits at the same
 * positions in training and in scoring and no window sees another item. Padding targets weigh 0, the prompt's 1 and
 * the answer's tokens `answerWeight` (with seqLen − 1 the answer carries as much of the loss as its context).
 */
export async function qaWindows(
  tokenizer: BPETokenizer,
  items: readonly QAItem[],
  seqLen: number,
  answerWeight = 1,
): Promise<WindowedTokens> {
  if (items.length === 0) throw new InvalidArgumentError("no QA items to build training windows from");
  const eot = tokenizer.endOfTextId;
  const parts: number[][] = [];
  const weights: number[] = [];
  const ends: number[] = [];
  let n = 0;
  for (const item of items) {
    const answer = await tokenizer.encode(` ${item.decision}`);
    const { pad, prompt } = await paddedQaPrompt(tokenizer, item, answer.length, seqLen);
    parts.push([...new Array<number>(pad).fill(eot), ...prompt, ...answer, eot]);
    weights.push(
      ...new Array<number>(pad).fill(0),
      ...prompt.map(() => 1),
      ...answer.map(() => answerWeight),
      0, // the <|endoftext|> after the answer is never a target of its window
    );
    n += pad + prompt.length + answer.length + 1;
    ends.push(n - 2); // the window ends on the answer's last token, before <|endoftext|>
  }
  return {
    tokens: concatTokens(parts),
    starts: Int32Array.from(ends, (e) => e - seqLen),
    weights: Float32Array.from(weights),
  };
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
