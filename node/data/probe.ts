/**
 * The knowledge-flow probe: can knowledge that lives only in hospital A's text reach hospital B's model? Built
 * deterministically from one hospital's own training documents and nothing else: multiple-choice cloze items, each
 * a sentence of one of its documents cut before a content word, with that word and three distractor words drawn
 * from the same hospital's documents as the four options (chance 25%). Each option is scored by its length-
 * normalised log-likelihood after the prompt (scoreProbe). A model that learned hospital A's text picks A's words;
 * one that never saw it is left with what the base knows.
 *
 * Items come one per document (the documents in a seeded order), and the correct option's position cycles through
 * 0, 1, 2, 3, so it is balanced to within one item whatever the words.
 */
import { mulberry32, shuffle } from "../random.js";
import { InvalidArgumentError } from "../errors.js";
import type { Document } from "./types.js";

export interface ProbeItem {
  /** The hospital whose documents the item comes from. */
  hospital: string;
  /** The id of the one document the prompt and the answer come from. */
  sourceId: string;
  /** The start of the sentence, up to the word asked for (no trailing space). */
  prompt: string;
  /** Four words, each preceded by a space as it follows the prompt; options[answer] is the document's. */
  options: string[];
  answer: number;
}

export interface ProbeOptions {
  /** Items per hospital at most (fewer when too few documents have a usable sentence). */
  items: number;
  seed: number;
}

/** Options per item. */
export const PROBE_OPTIONS = 4;

/** A content word the probe asks for: lower-case letters (a hyphen inside allowed), 6 to 20 of them. */
const WORD = /^[a-z][a-z-]{4,18}[a-z]$/;
/** The fewest words a prompt must have before the word asked for. */
const MIN_PREFIX_WORDS = 6;

/**
 * Up to `items` probe items from `docs`, the training documents of `hospital`, and nothing else: prompts, answers
 * and distractors all come from these documents. The same documents and seed give the same items.
 */
export function buildProbe(hospital: string, docs: readonly Document[], o: ProbeOptions): ProbeItem[] {
  if (!(Number.isInteger(o.items) && o.items >= 0))
    throw new InvalidArgumentError(`probe items must be a non-negative integer, got ${o.items}`);
  const rand = mulberry32((o.seed ^ hashString(hospital)) >>> 0);
  // the hospital's vocabulary of content words, in first-seen order (deterministic), by length
  const vocabulary = new Map<number, string[]>();
  const seen = new Set<string>();
  for (const d of docs) {
    for (const w of d.text.split(/\s+/)) {
      if (!WORD.test(w) || seen.has(w)) continue;
      seen.add(w);
      const list = vocabulary.get(w.length) ?? [];
      list.push(w);
      vocabulary.set(w.length, list);
    }
  }
  const items: ProbeItem[] = [];
  for (const d of shuffle([...docs], rand)) {
    if (items.length >= o.items) break;
    const item = itemFrom(d, hospital, vocabulary, rand, items.length % PROBE_OPTIONS);
    if (item) items.push(item);
  }
  return items;
}

/** One item from document d with the answer at `position`, or null when no sentence of it will do. */
function itemFrom(
  d: Document,
  hospital: string,
  vocabulary: Map<number, string[]>,
  rand: () => number,
  position: number,
): ProbeItem | null {
  const sentences = d.text.split(/(?<=[.!?])\s+/).filter((s) => s.split(/\s+/).length > MIN_PREFIX_WORDS + 1);
  for (const sentence of shuffle(sentences, rand)) {
    const words = sentence.split(/\s+/);
    const at = words.findIndex((w, i) => i >= MIN_PREFIX_WORDS && WORD.test(w) && distractorsFor(w, vocabulary));
    if (at < 0) continue;
    const answer = words[at]!;
    const inSentence = new Set(words.map((w) => w.replace(/[^A-Za-z-]/g, "").toLowerCase()));
    const pool = distractorsFor(answer, vocabulary)!.filter((w) => !inSentence.has(w));
    if (pool.length < PROBE_OPTIONS - 1) continue;
    const distractors = shuffle([...pool], rand).slice(0, PROBE_OPTIONS - 1);
    const options = [...distractors];
    options.splice(position, 0, answer);
    return {
      hospital,
      sourceId: d.id,
      prompt: words.slice(0, at).join(" "),
      options: options.map((w) => ` ${w}`),
      answer: position,
    };
  }
  return null;
}

/** The hospital's words within 1 letter of `word`'s length, other than it, when there are enough to choose from. */
function distractorsFor(word: string, vocabulary: Map<number, string[]>): string[] | null {
  const pool = [-1, 0, 1].flatMap((k) => vocabulary.get(word.length + k) ?? []).filter((w) => w !== word);
  return pool.length >= 3 * PROBE_OPTIONS ? pool : null;
}

/** FNV-1a of a string: the hospital's share of the probe's seed. */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}
