/** What a partition looks like: sizes, label histograms and how much the clients differ (Jensen–Shannon). */
import type { ClientData } from "./partition.js";

export interface ClientSummary {
  name: string;
  trainDocs: number;
  heldOutDocs: number;
  trainTokens: number;
  heldOutTokens: number;
  labels: Record<string, number>;
}

export interface PartitionSummary {
  clients: ClientSummary[];
  /** Mean pairwise Jensen–Shannon divergence (base 2, 0..1) between clients' label distributions. */
  labelJs: number;
  /** The same over token unigram distributions of the training text. */
  unigramJs: number;
  /** Records skipped as malformed while loading (0 when strict). */
  skippedRecords: number;
}

/** Jensen–Shannon divergence in bits between two distributions given as counts over the same keys. */
export function jensenShannon(p: Map<string | number, number>, q: Map<string | number, number>): number {
  const sp = [...p.values()].reduce((a, b) => a + b, 0);
  const sq = [...q.values()].reduce((a, b) => a + b, 0);
  if (sp === 0 || sq === 0) return 0;
  const keys = new Set([...p.keys(), ...q.keys()]);
  let js = 0;
  for (const k of keys) {
    const a = (p.get(k) ?? 0) / sp;
    const b = (q.get(k) ?? 0) / sq;
    const m = (a + b) / 2;
    if (a > 0) js += 0.5 * a * Math.log2(a / m);
    if (b > 0) js += 0.5 * b * Math.log2(b / m);
  }
  return js;
}

function meanPairwise(dists: Map<string | number, number>[]): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < dists.length; i++) {
    for (let j = i + 1; j < dists.length; j++) {
      sum += jensenShannon(dists[i]!, dists[j]!);
      n++;
    }
  }
  return n ? sum / n : 0;
}

/** Summarises clients; `tokenize` gives token ids of a text (the model's tokenizer, or a word splitter). */
export async function summarizePartition(
  clients: ClientData[],
  tokenize: (text: string) => Promise<number[]> | number[],
  skippedRecords = 0,
): Promise<PartitionSummary> {
  const labelDists: Map<string | number, number>[] = [];
  const unigramDists: Map<string | number, number>[] = [];
  const rows: ClientSummary[] = [];
  for (const c of clients) {
    const labels = new Map<string | number, number>();
    const unigrams = new Map<string | number, number>();
    let trainTokens = 0;
    let heldOutTokens = 0;
    for (const d of c.train) {
      labels.set(d.label ?? "unlabelled", (labels.get(d.label ?? "unlabelled") ?? 0) + 1);
      const ids = await tokenize(d.text);
      trainTokens += ids.length;
      for (const t of ids) unigrams.set(t, (unigrams.get(t) ?? 0) + 1);
    }
    for (const d of c.heldOut) heldOutTokens += (await tokenize(d.text)).length;
    labelDists.push(labels);
    unigramDists.push(unigrams);
    rows.push({
      name: c.name,
      trainDocs: c.train.length,
      heldOutDocs: c.heldOut.length,
      trainTokens,
      heldOutTokens,
      labels: Object.fromEntries([...labels].sort((a, b) => String(a[0]).localeCompare(String(b[0])))) as Record<
        string,
        number
      >,
    });
  }
  return { clients: rows, labelJs: meanPairwise(labelDists), unigramJs: meanPairwise(unigramDists), skippedRecords };
}

/** A fixed-width table of a summary. */
export function formatPartitionSummary(s: PartitionSummary): string {
  const lines = ["client                     train docs  held-out  train tokens  labels"];
  for (const c of s.clients) {
    const labels = Object.entries(c.labels)
      .map(([k, v]) => `${k}:${v}`)
      .join(" ");
    const counts = `${String(c.trainDocs).padStart(10)} ${String(c.heldOutDocs).padStart(9)}`;
    lines.push(`${c.name.padEnd(26)} ${counts} ${String(c.trainTokens).padStart(13)}  ${labels}`);
  }
  lines.push(
    `label JS divergence (mean pairwise, bits): ${s.labelJs.toFixed(3)}; ` +
      `token-unigram JS: ${s.unigramJs.toFixed(3)}; skipped records: ${s.skippedRecords}`,
  );
  return lines.join("\n");
}
