/** The experiment's results folder: every number as JSON, a markdown report, and SVG plots (Vega-Lite). */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import type { DpMethod, ExperimentConfig, Method, RunResult } from "./run.js";
import { answersSection, claimsSection, minAccuracyPlot } from "./claims.js";

interface Stat {
  mean: number;
  std: number;
  n: number;
  /** Runs whose value overflowed to +∞ (a perplexity past float64), left out of mean and std. */
  infinite?: number;
}

const stat = (xs: number[]): Stat => {
  const v = xs.filter((x) => Number.isFinite(x));
  const mean = v.reduce((a, b) => a + b, 0) / (v.length || 1);
  const std = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1)) : 0;
  const infinite = xs.filter((x) => x === Infinity).length;
  return { mean, std, n: v.length, ...(infinite && { infinite }) };
};

export interface SummaryRow {
  partition: string;
  method: Method | DpMethod;
  worstPerplexity: Stat;
  meanPerplexity: Stat;
  minAccuracy: Stat;
  meanAccuracy: Stat;
  hmeanAccuracy: Stat;
  /** Knowledge-flow probe: Min-Acc and H-mean over hospitals on their own items and across all hospitals' items. */
  probe: { ownMin: Stat; ownHmean: Stat; crossMin: Stat; crossHmean: Stat } | null;
  roundsToConvergence: Stat | null;
}

export function summarizeRuns(runs: RunResult[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const partitions = [...new Set(runs.map((r) => r.partition))];
  for (const p of partitions) {
    const ofP = runs.filter((r) => r.partition === p);
    const methods = [...new Set(ofP.flatMap((r) => r.methods.map((m) => m.method)))];
    for (const method of methods) {
      const ms = ofP.map((r) => r.methods.find((m) => m.method === method)!).filter(Boolean);
      const conv = ms.map((m) => m.roundsToConvergence).filter((x): x is number => x !== undefined);
      rows.push({
        partition: p,
        method,
        worstPerplexity: stat(ms.map((m) => m.worstPerplexity)),
        meanPerplexity: stat(ms.map((m) => m.meanPerplexity)),
        minAccuracy: stat(ms.map((m) => m.minAccuracy)),
        meanAccuracy: stat(ms.map((m) => m.meanAccuracy)),
        hmeanAccuracy: stat(ms.map((m) => m.hmeanAccuracy)),
        probe: ms.every((m) => m.probe)
          ? {
              ownMin: stat(ms.map((m) => m.probe!.own.min)),
              ownHmean: stat(ms.map((m) => m.probe!.own.hmean)),
              crossMin: stat(ms.map((m) => m.probe!.cross.min)),
              crossHmean: stat(ms.map((m) => m.probe!.cross.hmean)),
            }
          : null,
        roundsToConvergence: conv.length ? stat(conv) : null,
      });
    }
  }
  return rows;
}

const pm = (s: Stat, digits: number, scale = 1) => {
  const inf = s.infinite ? `∞ in ${s.infinite} of ${s.infinite + s.n} runs` : "";
  if (s.n === 0) return s.infinite ? "∞" : "-";
  const value = Math.abs(s.mean * scale) >= 1e6 ? (s.mean * scale).toExponential(2) : (s.mean * scale).toFixed(digits);
  const spread =
    s.n > 1
      ? ` ± ${Math.abs(s.std * scale) >= 1e6 ? (s.std * scale).toExponential(2) : (s.std * scale).toFixed(digits)}`
      : "";
  return `${value}${spread}${inf ? ` (${inf})` : ""}`;
};

export function markdownReport(cfg: ExperimentConfig, runs: RunResult[], rows: SummaryRow[], seconds: number): string {
  const lines = [
    "# Federated LoRA under non-IID hospitals: results",
    "",
    `PubMedQA PQA-L (${cfg.data}), base model \`${cfg.baseDir}\`, ` +
      `LoRA r ${cfg.lora.r} on ${cfg.lora.targetModules.join(",")}; ` +
      `${cfg.rounds} rounds × ${cfg.stepsPerRound} local steps of ${cfg.batchSize} × ${runs[0]?.seqLen ?? 64} tokens ` +
      `per hospital (${cfg.trainOn === "qa" ? "QA windows ending on the answer" : "text windows"}) ` +
      `(local-only: the same budget alone; centralized: the sum, pooled); ` +
      `seeds ${cfg.seeds.join(", ")}; ${seconds.toFixed(0)} s in all.`,
    "",
    "Accuracy is yes/no/maybe by answer log-likelihood on each hospital's held-out questions; " +
      "Min is the worst hospital, H-mean the harmonic mean. Values are mean ± std over seeds.",
    "",
    "| partition | method | worst ppl | mean ppl | Min-Acc % | mean Acc % | H-mean % | rounds to converge |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map(
      (r) =>
        `| ${r.partition} | ${r.method} | ${pm(r.worstPerplexity, 1)} | ${pm(r.meanPerplexity, 1)} | ` +
        `${pm(r.minAccuracy, 1, 100)} | ${pm(r.meanAccuracy, 1, 100)} | ${pm(r.hmeanAccuracy, 1, 100)} | ` +
        `${r.roundsToConvergence ? pm(r.roundsToConvergence, 1) : "-"} |`,
    ),
    "",
    ...answersSection(runs),
    ...probeSection(rows),
    ...claimsSection(runs),
    ...dpSection(cfg, runs, rows),
    "## Partitions",
    "",
  ];
  for (const run of runs.filter((r) => r.seed === cfg.seeds[0])) {
    lines.push(
      `### ${run.partition} (seed ${run.seed}): label JS ${run.summary.labelJs.toFixed(3)} bits, ` +
        `token-unigram JS ${run.summary.unigramJs.toFixed(3)} bits`,
      "",
      "| hospital | train docs | held-out docs | train tokens |",
      "| --- | ---: | ---: | ---: |",
    );
    for (const c of run.summary.clients)
      lines.push(`| ${c.name} | ${c.trainDocs} | ${c.heldOutDocs} | ${c.trainTokens} |`);
    if (run.crossClient) {
      lines.push(
        "",
        "Local-only adapters across hospitals (perplexity; row: trained at, column: evaluated on), " +
          "then the shared adapters of the other methods on the same held-out sets:",
        "",
        `| | ${run.crossClient.clients.join(" | ")} |`,
        `| --- | ${run.crossClient.clients.map(() => "---:").join(" | ")} |`,
      );
      run.crossClient.perplexity.forEach((row, i) =>
        lines.push(`| ${run.crossClient!.clients[i]} | ${row.map((x) => x.toFixed(1)).join(" | ")} |`),
      );
      // the shared adapters on the same held-out sets, for comparison with every column
      for (const m of run.methods.filter((m) => m.method !== "local" && m.method !== "base")) {
        const by = new Map(m.clients.map((c) => [c.client, c.perplexity]));
        const cells = run.crossClient.clients.map((c) => by.get(c)?.toFixed(1) ?? "-");
        lines.push(`| *${m.method} (shared)* | ${cells.join(" | ")} |`);
      }
    }
    lines.push(...probeMatrix(run));
    lines.push("");
  }
  lines.push(
    "Plots: `convergence.svg` (per-hospital held-out loss after each round), " +
      "`probe-heatmap.svg` (the probe's cross-client accuracy, first seed), " +
      "`min-acc-rounds.svg` (Min-Acc with the global adapter after each round, every seed), " +
      "`min-vs-mean.svg` (Min-Acc vs mean accuracy per method), " +
      "`partitions.svg` (documents per hospital and specialty).",
    "",
  );
  return lines.join("\n");
}

/** One run's probe accuracy matrix: local-only adapters by row, then each shared adapter's row. */
function probeMatrix(run: RunResult): string[] {
  const local = run.methods.find((m) => m.method === "local")?.probe;
  if (!local || !run.crossClient) return [];
  const lines = [
    "",
    "Knowledge-flow probe, local-only adapters (accuracy %; row: trained at, column: whose items; chance 25):",
    "",
    `| | ${run.crossClient.clients.join(" | ")} |`,
    `| --- | ${run.crossClient.clients.map(() => "---:").join(" | ")} |`,
  ];
  local.matrix.forEach((row, i) =>
    lines.push(`| ${run.crossClient!.clients[i]} | ${row.map((x) => (x * 100).toFixed(0)).join(" | ")} |`),
  );
  for (const m of run.methods.filter((m) => m.method !== "local" && m.probe)) {
    lines.push(`| *${m.method}* | ${m.probe!.matrix[0]!.map((x) => (x * 100).toFixed(0)).join(" | ")} |`);
  }
  return lines;
}

/** The knowledge-flow probe's Min-Acc and H-mean table, with its definitions; empty when no run has a probe. */
function probeSection(rows: SummaryRow[]): string[] {
  const withProbe = rows.filter((r) => r.probe);
  if (withProbe.length === 0) return [];
  return [
    "## Knowledge-flow probe",
    "",
    "Four-option cloze items built from each hospital's own training documents (node/data/probe.ts), scored by " +
      "length-normalised log-likelihood; chance is 25%. For each method, hospital k's model (its own adapter for " +
      "local-only, the shared adapter otherwise) is scored on k's own items (own) and on every hospital's items " +
      "(cross: the mean over hospitals j). Min-Acc = min over k; H-mean = K / Σₖ 1/Accₖ.",
    "",
    "| partition | method | own Min-Acc % | own H-mean % | cross Min-Acc % | cross H-mean % |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...withProbe.map(
      (r) =>
        `| ${r.partition} | ${r.method} | ${pm(r.probe!.ownMin, 1, 100)} | ${pm(r.probe!.ownHmean, 1, 100)} | ` +
        `${pm(r.probe!.crossMin, 1, 100)} | ${pm(r.probe!.crossHmean, 1, 100)} |`,
    ),
    "",
  ];
}

/** The probe's cross-client accuracy (row: the model hospital k ends with; column: whose items), per method. */
function probePlot(first: RunResult[]): TopLevelSpec {
  const cells = first.flatMap((r) =>
    r.methods
      .filter((m) => m.probe)
      .flatMap((m) =>
        m.probe!.matrix.flatMap((row, k) =>
          row.map((acc, j) => ({
            panel: `${r.partition} · ${m.method}`,
            model: m.clients[k]!.client,
            items: m.clients[j]!.client,
            acc: Math.round(acc * 100),
          })),
        ),
      ),
  );
  return {
    data: { values: cells },
    facet: { field: "panel", type: "nominal", title: null },
    columns: 3,
    spec: {
      width: 160,
      height: 160,
      encoding: {
        x: { field: "items", type: "nominal", title: "items of" },
        y: { field: "model", type: "nominal", title: "model of" },
      },
      layer: [
        {
          mark: "rect",
          encoding: {
            color: { field: "acc", type: "quantitative", title: "accuracy %", scale: { domain: [0, 100] } },
          },
        },
        { mark: { type: "text", fontSize: 8 }, encoding: { text: { field: "acc", type: "quantitative" } } },
      ],
    },
  };
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: "none" });
  return view.toSVG();
}

export async function writeResults(
  out: string,
  cfg: ExperimentConfig,
  runs: RunResult[],
  seconds: number,
): Promise<string[]> {
  await mkdir(out, { recursive: true });
  const rows = summarizeRuns(runs);
  const files: string[] = [];
  const write = async (name: string, text: string) => {
    await writeFile(join(out, name), text);
    files.push(join(out, name));
  };
  await write("results.json", JSON.stringify({ config: cfg, seconds, summary: rows, runs }, nonFinite, 2) + "\n");
  await write("report.md", markdownReport(cfg, runs, rows, seconds));
  const first = runs.filter((r) => r.seed === cfg.seeds[0]);
  await write("convergence.svg", await toSvg(convergencePlot(first)));
  await write("min-vs-mean.svg", await toSvg(minVsMeanPlot(rows)));
  await write("partitions.svg", await toSvg(partitionsPlot(first)));
  if (first.some((r) => r.methods.some((m) => m.probe)))
    await write("probe-heatmap.svg", await toSvg(probePlot(first)));
  if (runs.some((r) => r.methods.some((m) => m.minAccuracyCurve)))
    await write("min-acc-rounds.svg", await toSvg(minAccuracyPlot(runs)));
  return files;
}

/** Per-hospital held-out loss after each round, a panel per partition and method (the first seed's runs). */
function convergencePlot(first: RunResult[]): TopLevelSpec {
  const curves = first.flatMap((r) =>
    r.methods
      .filter((m) => m.clientCurves)
      .flatMap((m) =>
        m.clientCurves!.flatMap((c, i) =>
          c.map((loss, k) => ({
            partition: r.partition,
            method: m.method,
            hospital: r.summary.clients[i]!.name,
            round: k + 1,
            loss,
          })),
        ),
      ),
  );
  return {
    data: { values: curves },
    facet: { row: { field: "partition" }, column: { field: "method" } },
    spec: {
      width: 180,
      height: 120,
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "round", type: "ordinal" },
        y: { field: "loss", type: "quantitative", scale: { zero: false }, title: "held-out loss" },
        color: { field: "hospital" },
      },
    },
  };
}

/** Min-Acc against mean accuracy per method, a panel per partition. */
function minVsMeanPlot(rows: ReturnType<typeof summarizeRuns>): TopLevelSpec {
  return {
    data: {
      values: rows.map((r) => ({
        partition: r.partition,
        method: r.method,
        minAcc: r.minAccuracy.mean * 100,
        meanAcc: r.meanAccuracy.mean * 100,
      })),
    },
    facet: { column: { field: "partition" } },
    spec: {
      width: 220,
      height: 200,
      mark: { type: "point", filled: true, size: 80 },
      encoding: {
        x: { field: "meanAcc", type: "quantitative", title: "mean accuracy %", scale: { zero: false } },
        y: { field: "minAcc", type: "quantitative", title: "Min-Acc %", scale: { zero: false } },
        color: { field: "method" },
        shape: { field: "method" },
      },
    },
  };
}

/** Training documents per hospital and specialty, a panel per partition (the first seed's runs). */
function partitionsPlot(first: RunResult[]): TopLevelSpec {
  const hist = first.flatMap((r) =>
    r.summary.clients.flatMap((c) =>
      Object.entries(c.labels).map(([label, n]) => ({ partition: r.partition, hospital: c.name, label, n })),
    ),
  );
  return {
    data: { values: hist },
    facet: { row: { field: "partition" } },
    resolve: { scale: { x: "independent" } },
    spec: {
      width: 420,
      height: 140,
      mark: "bar",
      encoding: {
        x: { field: "hospital", type: "nominal" },
        y: { field: "n", type: "quantitative", title: "train documents" },
        color: { field: "label", title: "specialty" },
      },
    },
  };
}

const median = (xs: number[]) => {
  const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return v.length ? (v[(v.length - 1) >> 1]! + v[v.length >> 1]!) / 2 : NaN;
};

/** DP-FedAvg rows: settings, the ε the chain recorded, the utility beside plain FedAvg, and the update norms. */
export function dpSection(cfg: ExperimentConfig, runs: RunResult[], rows: SummaryRow[]): string[] {
  const dpRuns = runs.flatMap((r) => r.methods.filter((m) => m.dp).map((m) => ({ r, m })));
  if (!dpRuns.length || !cfg.dp) return [];
  const lines = [
    "## Differential privacy: what it costs",
    "",
    `Client-level DP-FedAvg (node/dp, central noise): every round each hospital's update is clipped to ` +
      `‖Δ‖₂ ≤ C = ${cfg.dp.clip}, the aggregator averages them uniformly and adds N(0, (σC/n)²) to every LoRA ` +
      `value (N(0, (σC)²) on the sum); ε at δ = ${cfg.dp.delta} after ${cfg.rounds} rounds, every hospital in every ` +
      "round, from the RDP accountant — σ is the smallest that keeps the rounds within the budget, and the ε " +
      "column is what the chain recorded after the last round (verify recomputes it). ε = ∞ is the same clipping " +
      "and uniform weighting with σ = 10^-6: no privacy, the cost of clipping alone. Values are mean ± std over seeds.",
    "",
    "| partition | method | σ | ε recorded | worst ppl | mean ppl | Min-Acc % | mean Acc % | H-mean % |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const row of rows.filter((x) => x.method === "fedavg" || x.method.startsWith("dp-"))) {
    const ms = dpRuns.filter(({ r, m }) => r.partition === row.partition && m.method === row.method).map((x) => x.m);
    const sigma = ms.length ? String(ms[0]!.dp!.noiseMultiplier) : "-";
    const eps = ms.length ? pm(stat(ms.map((m) => m.dp!.spent)), 3) : "-";
    lines.push(
      `| ${row.partition} | ${row.method} | ${sigma} | ${eps} | ${pm(row.worstPerplexity, 1)} | ` +
        `${pm(row.meanPerplexity, 1)} | ${pm(row.minAccuracy, 1, 100)} | ${pm(row.meanAccuracy, 1, 100)} | ` +
        `${pm(row.hmeanAccuracy, 1, 100)} |`,
    );
  }
  const plain = runs.flatMap((r) => r.methods.filter((m) => m.method === "fedavg" && m.updateNorms));
  if (plain.length) {
    const norms = plain.flatMap((m) => m.updateNorms!.flat());
    const n = runs[0]!.summary.clients.length;
    const d = dpRuns[0]!.m.dp!.values;
    const sigmas = [...new Set(dpRuns.map((x) => x.m.dp!.noiseMultiplier).filter((s) => s > 1e-3))];
    const ratios = sigmas.map((s) => `${((s * Math.sqrt(d)) / n).toFixed(0)} at σ ${s}`).join(", ");
    lines.push(
      "",
      `Hospitals' update norms ‖Δ‖₂ per round in plain FedAvg (all seeds and rounds): median ` +
        `${median(norms).toFixed(3)}, max ${Math.max(...norms).toFixed(3)}. With n = ${n} hospitals the noise on ` +
        `each of the d = ${d} LoRA values of the average has standard deviation σC/n, while the average update's ` +
        `norm is at most C over all of them: the noise's norm is σ·√d/n times C (${ratios}).`,
    );
  }
  lines.push("");
  return lines;
}

/** JSON has no ∞ or NaN: results.json writes them as the strings "Infinity", "-Infinity", "NaN" (readResults reads). */
function nonFinite(_key: string, value: unknown): unknown {
  return typeof value === "number" && !Number.isFinite(value) ? String(value) : value;
}

/** results.json as written by writeResults, with its non-finite numbers restored. */
export function readResults(text: string): { config: ExperimentConfig; runs: RunResult[]; seconds: number } {
  return JSON.parse(text, (_key, value) =>
    value === "Infinity" || value === "-Infinity" || value === "NaN" ? Number(value) : value,
  );
}
