/**
 * Per-client evaluation of a model (base alone, or base + adapters) on every client's held-out set: mean token
 * loss and perplexity, yes/no/maybe accuracy where QA items are given, the worst client, the mean, the harmonic
 * mean, and the cross-client matrix (adapter trained at i, evaluated on j's held-out set). As JSON and as a table.
 */
import type { GPT } from "../model/gpt.js";
import type { LoraAdapter } from "../model/lora.js";
import type { BPETokenizer } from "../model/tokenizer.js";
import type { QAItem } from "../data/loaders.js";
import { evaluateLoss } from "./evaluate.js";
import { fairness, qaAccuracy } from "./qa.js";

export interface ClientEval {
  name: string;
  heldOut: Int32Array;
  qa?: QAItem[];
}

export interface ClientScore {
  client: string;
  meanLoss: number;
  perplexity: number;
  accuracy?: number;
}

export interface EvalReport {
  model: string;
  clients: ClientScore[];
  perplexity: { worst: number; mean: number };
  accuracy?: { min: number; mean: number; hmean: number };
}

/** Scores one model (an adapter, or null for the base) on every client. */
export async function evaluateClients(
  model: string,
  gpt: GPT,
  lora: LoraAdapter | null,
  tokenizer: BPETokenizer,
  clients: ClientEval[],
): Promise<EvalReport> {
  const scores: ClientScore[] = [];
  for (const c of clients) {
    const r = await evaluateLoss(gpt, lora, c.heldOut, { seqLen: gpt.config.blockSize, batchSize: 16 });
    const s: ClientScore = { client: c.name, meanLoss: r.meanLoss, perplexity: r.perplexity };
    if (c.qa) s.accuracy = (await qaAccuracy(gpt, lora, tokenizer, c.qa)).accuracy;
    scores.push(s);
  }
  const ppl = scores.map((s) => s.perplexity);
  const report: EvalReport = {
    model,
    clients: scores,
    perplexity: { worst: Math.max(...ppl), mean: ppl.reduce((a, b) => a + b, 0) / ppl.length },
  };
  if (scores.every((s) => s.accuracy !== undefined)) report.accuracy = fairness(scores.map((s) => s.accuracy!));
  return report;
}

/** matrix[i][j]: perplexity of adapter i (trained at client i) on client j's held-out set. */
export async function crossClientMatrix(gpt: GPT, adapters: LoraAdapter[], clients: ClientEval[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const a of adapters) {
    const row: number[] = [];
    for (const c of clients)
      row.push((await evaluateLoss(gpt, a, c.heldOut, { seqLen: gpt.config.blockSize, batchSize: 16 })).perplexity);
    out.push(row);
  }
  return out;
}

export function formatEvalReport(r: EvalReport): string {
  const lines = [
    `${r.model}:`,
    `  ${"client".padEnd(26)} ${"loss".padStart(7)} ${"ppl".padStart(9)} ${r.accuracy ? "accuracy".padStart(9) : ""}`,
  ];
  for (const s of r.clients) {
    lines.push(
      `  ${s.client.padEnd(26)} ${s.meanLoss.toFixed(3).padStart(7)} ${s.perplexity.toFixed(1).padStart(9)} ${s.accuracy === undefined ? "" : (s.accuracy * 100).toFixed(1).padStart(8) + "%"}`,
    );
  }
  lines.push(`  perplexity: worst ${r.perplexity.worst.toFixed(1)}, mean ${r.perplexity.mean.toFixed(1)}`);
  if (r.accuracy)
    lines.push(
      `  accuracy: Min ${(r.accuracy.min * 100).toFixed(1)}%, mean ${(r.accuracy.mean * 100).toFixed(1)}%, H-mean ${(r.accuracy.hmean * 100).toFixed(1)}%`,
    );
  return lines.join("\n");
}

export function formatMatrix(names: string[], m: number[][]): string {
  const w = Math.max(8, ...names.map((n) => n.length));
  const lines = [`${"trained at \\ evaluated on".padEnd(w)}  ${names.map((n) => n.padStart(w)).join(" ")}`];
  m.forEach((row, i) => lines.push(`${names[i]!.padEnd(w)}  ${row.map((x) => x.toFixed(1).padStart(w)).join(" ")}`));
  return lines.join("\n");
}
