/**
 * PubMedQA (PQA-L, `ori_pqal.json`): the loader, and the text format a model trains on and is scored in. A malformed
 * record is a DataFormatError naming file, line and field; with `skipMalformed` it is skipped and counted instead.
 */
import { readFile } from "node:fs/promises";
import { DataFormatError } from "./errors.js";
import type { LoadOptions, Loaded } from "./loaders.js";
import { specialtyOf } from "./specialties.js";
import type { Document } from "./types.js";

export type Decision = "yes" | "no" | "maybe";
export const DECISIONS: readonly Decision[] = ["yes", "no", "maybe"];

/** One PubMedQA item. */
export interface QAItem {
  id: string;
  question: string;
  contexts: string[];
  longAnswer: string;
  decision: Decision;
  meshes: string[];
  year: string;
  /** From the MeSH table in specialties.ts. */
  specialty: string;
}

/** Loads PubMedQA PQA-L (`ori_pqal.json`: an object of PMID → record). */
export async function loadPubMedQA(path: string, options: LoadOptions = {}): Promise<Loaded<QAItem>> {
  const text = await readFile(path, "utf8");
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new DataFormatError(path, 0, "(file)", `is not valid JSON: ${(e as Error).message}`);
  }
  if (!data || typeof data !== "object" || Array.isArray(data))
    throw new DataFormatError(path, 0, "(file)", "is not an object of PMID → record");
  // line numbers: where each record's key appears in the file
  const lineOf = indexKeyLines(text);
  const items: QAItem[] = [];
  const skipped: DataFormatError[] = [];
  for (const [id, rec] of Object.entries(data as Record<string, Record<string, unknown>>)) {
    const line = lineOf.get(id) ?? 0;
    try {
      const str = (field: string) => {
        const v = rec?.[field];
        if (typeof v !== "string" || v.trim() === "")
          throw new DataFormatError(path, line, field, "is missing or not a non-empty string");
        return v;
      };
      const list = (field: string, required: boolean) => {
        const v = rec?.[field];
        if (v === undefined && !required) return [];
        if (!Array.isArray(v) || !v.every((x) => typeof x === "string"))
          throw new DataFormatError(path, line, field, "is not a list of strings");
        return v as string[];
      };
      const decision = str("final_decision");
      if (!DECISIONS.includes(decision as Decision))
        throw new DataFormatError(path, line, "final_decision", `is ${JSON.stringify(decision)}, not yes/no/maybe`);
      const meshes = list("MESHES", false);
      items.push({
        id,
        question: str("QUESTION"),
        contexts: list("CONTEXTS", true),
        longAnswer: str("LONG_ANSWER"),
        decision: decision as Decision,
        meshes,
        year: typeof rec.YEAR === "string" ? rec.YEAR : "",
        specialty: specialtyOf(meshes),
      });
    } catch (e) {
      if (!(e instanceof DataFormatError) || !options.skipMalformed) throw e;
      skipped.push(e);
    }
  }
  return { items, skipped };
}

/** The text a language model trains on for one QA item: question, context, decision and long answer. */
export function qaText(item: QAItem): string {
  return `${qaPrompt(item)} ${item.decision}. ${item.longAnswer}`;
}

/** The prompt the decision is scored after (qaText up to "Answer:"). */
export function qaPrompt(item: QAItem): string {
  return `Question: ${item.question}\nContext: ${item.contexts.join(" ")}\nAnswer:`;
}

/** PubMedQA items as documents labelled by specialty. */
export function qaDocuments(items: readonly QAItem[]): Document[] {
  return items.map((q) => ({ id: `pubmedqa/${q.id}`, text: qaText(q), label: q.specialty }));
}

function indexKeyLines(text: string): Map<string, number> {
  const out = new Map<string, number>();
  const re = /^\s*"([^"]+)"\s*:\s*\{/gm;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) {
    if (!out.has(m[1]!)) out.set(m[1]!, text.slice(0, m.index).split("\n").length + (m[0].startsWith("\n") ? 1 : 0));
  }
  return out;
}
