/**
 * Byte-level BPE tokenizer, trained and run by Hugging Face's `tokenizers` (the Rust library, through its official
 * Node binding), saved and loaded as a standard `tokenizer.json`.
 *
 * The binding's `train` uses the BPE trainer's defaults (vocabulary up to 30k, alphabet = bytes seen). We train with
 * it and keep the first `vocabSize - 257` merges: BPE learns merges greedily in order, so the first K merges are what
 * a trainer capped at that size would learn. The vocabulary is then the full 256-symbol byte alphabet (so any byte
 * can be encoded), the merged tokens in merge order, and `<|endoftext|>` last.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import { InvalidArgumentError } from "../errors.js";
import { CheckpointError } from "./safetensors.js";

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const hf = require("tokenizers") as any;

export const END_OF_TEXT = "<|endoftext|>";

/** A loaded tokenizer. Encoding is synchronous-looking through the binding's promise API. */
export class BPETokenizer {
  private constructor(
    private readonly inner: {
      encode(s: string, p: null, o: unknown): Promise<{ getIds(): number[] }>;
      decode(ids: number[], skip: boolean): Promise<string>;
      getVocabSize(added?: boolean): number;
      tokenToId(t: string): number | null;
    },
    /** The exact tokenizer.json text (hashed into the base model's content hash). */
    readonly json: string,
    /** The end-of-sequence token's id. */
    readonly endOfTextId: number,
  ) {}

  /**
   * Loads a Hugging Face tokenizer.json through the `tokenizers` library: byte-level BPE (GPT-2, Llama 3, Qwen2.5,
   * SmolLM2) or SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama, Mistral). `eos` names the
   * end-of-sequence token (ours: <|endoftext|>); a tokenizer without it is a CheckpointError.
   */
  static fromJSON(json: string, eos: string | number = END_OF_TEXT): BPETokenizer {
    let inner;
    try {
      inner = hf.Tokenizer.fromString(json);
    } catch (e) {
      throw new CheckpointError(`tokenizer.json could not be loaded: ${(e as Error).message}`, { cause: e });
    }
    const id = typeof eos === "number" ? eos : inner.tokenToId(eos);
    if (id === null || id === undefined || !(id >= 0 && id < inner.getVocabSize(true))) {
      throw new CheckpointError(`tokenizer.json has no end-of-sequence token ${JSON.stringify(eos)}`);
    }
    return new BPETokenizer(inner, json, id);
  }

  /** Trains a byte-level BPE of `vocabSize` tokens (including 256 bytes and <|endoftext|>) on `texts`. */
  static async train(texts: Iterable<string>, vocabSize: number): Promise<BPETokenizer> {
    if (!Number.isInteger(vocabSize) || vocabSize < 258)
      throw new InvalidArgumentError(`vocabSize must be an integer >= 258, got ${vocabSize}`);
    const dir = await mkdtemp(join(tmpdir(), "fok-bpe-"));
    try {
      const file = join(dir, "corpus.txt");
      await writeFile(file, [...texts].join("\n"));
      const t = new hf.Tokenizer(hf.BPE.empty());
      t.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
      t.train([file]);
      const out = join(dir, "trained.json");
      t.save(out);
      const trained = JSON.parse(await (await import("node:fs/promises")).readFile(out, "utf8"));
      const merges: [string, string][] = trained.model.merges.map((m: string | [string, string]) =>
        typeof m === "string" ? (m.split(" ") as [string, string]) : m,
      );
      return BPETokenizer.fromJSON(buildTokenizerJson(merges.slice(0, vocabSize - 257)));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  get vocabSize(): number {
    return this.inner.getVocabSize(true);
  }

  async encode(text: string): Promise<number[]> {
    return (await this.inner.encode(text, null, { addSpecialTokens: false })).getIds();
  }

  async decode(ids: number[]): Promise<string> {
    return this.inner.decode(ids, false);
  }
}

/** A GPT-2-style tokenizer.json from an ordered merge list. Deterministic text for the same merges. */
export function buildTokenizerJson(merges: [string, string][]): string {
  const alphabet: string[] = hf.byteLevelAlphabet();
  alphabet.sort((a, b) => byteOf(a) - byteOf(b));
  const vocab: Record<string, number> = {};
  let next = 0;
  for (const ch of alphabet) vocab[ch] = next++;
  for (const [a, b] of merges) {
    if (!(a in vocab) || !(b in vocab))
      throw new CheckpointError(`merge ${a} ${b} uses a token not yet in the vocabulary`);
    if (!(a + b in vocab)) vocab[a + b] = next++;
  }
  const eot = next;
  vocab[END_OF_TEXT] = eot;
  return JSON.stringify({
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      {
        id: eot,
        content: END_OF_TEXT,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: true,
        special: true,
      },
    ],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  });
}

/** GPT-2's byte-to-unicode map, inverted: the byte a byte-level symbol stands for. */
function byteOf(symbol: string): number {
  const cp = symbol.codePointAt(0)!;
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (printable(cp)) return cp;
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!printable(b)) {
      if (256 + n === cp) return b;
      n++;
    }
  }
  throw new CheckpointError(`not a byte-level symbol: ${symbol}`);
}
