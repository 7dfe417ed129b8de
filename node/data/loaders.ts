/**
 * Loaders for the data a hospital brings: JSONL (`{"text": ..., "label"?: ...}`) and folders of plain-text files
 * (PubMedQA has its own file, pubmedqa.ts). A malformed record is a DataFormatError naming file, line and field; with
 * `skipMalformed` it is skipped instead and counted in the result, never dropped silently.
 */
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import { DataFormatError } from "./errors.js";
import type { Document } from "./types.js";

export interface LoadOptions {
  /** Skip malformed records (counted in `skipped`) instead of failing on the first. Default false. */
  skipMalformed?: boolean;
}

export interface Loaded<T> {
  items: T[];
  skipped: DataFormatError[];
}

/** Loads JSONL: one `{"text": string, "label"?: string, "id"?: string}` per line; blank lines ignored. */
export async function loadJsonl(path: string, options: LoadOptions = {}): Promise<Loaded<Document>> {
  const lines = (await readFile(path, "utf8")).split("\n");
  const items: Document[] = [];
  const skipped: DataFormatError[] = [];
  lines.forEach((raw, i) => {
    const line = i + 1;
    if (raw.trim() === "") return;
    try {
      let rec: unknown;
      try {
        rec = JSON.parse(raw);
      } catch (e) {
        throw new DataFormatError(path, line, "(record)", `is not valid JSON: ${(e as Error).message}`);
      }
      if (!rec || typeof rec !== "object" || Array.isArray(rec))
        throw new DataFormatError(path, line, "(record)", "is not a JSON object");
      const r = rec as Record<string, unknown>;
      if (typeof r.text !== "string" || r.text.trim() === "")
        throw new DataFormatError(path, line, "text", "is missing or not a non-empty string");
      if (r.label !== undefined && typeof r.label !== "string")
        throw new DataFormatError(path, line, "label", "is not a string");
      if (r.id !== undefined && typeof r.id !== "string")
        throw new DataFormatError(path, line, "id", "is not a string");
      items.push({
        id: (r.id as string | undefined) ?? `${path}:${line}`,
        text: r.text,
        label: r.label as string | undefined,
      });
    } catch (e) {
      if (!(e instanceof DataFormatError) || !options.skipMalformed) throw e;
      skipped.push(e);
    }
  });
  return { items, skipped };
}

/**
 * Loads every `.txt` file under `dir` (recursively, sorted) as one document; the label is the first sub-folder
 * (e.g. `notes/cardiology/a.txt` → `cardiology`). Empty or non-UTF-8 files are malformed.
 */
export async function loadTextFolder(dir: string, options: LoadOptions = {}): Promise<Loaded<Document>> {
  const items: Document[] = [];
  const skipped: DataFormatError[] = [];
  const walk = async (d: string): Promise<string[]> => {
    const out: string[] = [];
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(d, e.name);
      if (e.isDirectory()) out.push(...(await walk(p)));
      else if (e.isFile() && e.name.endsWith(".txt")) out.push(p);
    }
    return out;
  };
  for (const file of await walk(dir)) {
    try {
      const bytes = await readFile(file);
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
        throw new DataFormatError(file, 0, "(file)", "is not valid UTF-8");
      }
      if (text.trim() === "") throw new DataFormatError(file, 0, "(file)", "is empty");
      const rel = relative(dir, file).split(/[\\/]/);
      items.push({ id: relative(dir, file), text, label: rel.length > 1 ? rel[0] : undefined });
    } catch (e) {
      if (!(e instanceof DataFormatError) || !options.skipMalformed) throw e;
      skipped.push(e);
    }
  }
  return { items, skipped };
}
