/** Turning documents into one token stream for training and evaluation. */
import type { BPETokenizer } from "../model/tokenizer.js";
import type { Document } from "./types.js";

/** Concatenates the documents' tokens, each followed by <|endoftext|>. */
export async function tokenizeDocuments(tokenizer: BPETokenizer, docs: readonly Document[]): Promise<Int32Array> {
  const eot = tokenizer.endOfTextId;
  const parts: number[][] = [];
  let n = 0;
  for (const d of docs) {
    const ids = await tokenizer.encode(d.text);
    ids.push(eot);
    parts.push(ids);
    n += ids.length;
  }
  const out = new Int32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
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
