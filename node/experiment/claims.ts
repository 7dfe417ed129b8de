/**
 * The paper's claims, checked run by run: each claim is a paired comparison of two results of the same run (same
 * partition, same seed, same hospitals), counted over the runs where both exist — in how many it holds, and by how
 * much (the mean and range of the difference). Also each method's answer distribution (does an adapter still give
 * one constant answer?) and the Min-Acc per round plot.
 */
import type { TopLevelSpec } from "vega-lite";
import type { MethodResult, RunResult } from "./run.js";

/** One claim: `value` of a run's result for `better` should exceed that of `worse` (or be lower, for perplexity). */
interface Claim {
  text: string;
  better: string;
  worse: string;
  value: (r: RunResult, method: string) => number | undefined;
  /** Lower is better (perplexity). */
  lower?: boolean;
  /** Scale of the difference printed (100 for accuracies in %). */
  scale: number;
  unit: string;
}

const method = (r: RunResult, m: string): MethodResult | undefined => r.methods.find((x) => x.method === m);
const minAcc = (r: RunResult, m: string) => (m === "majority" ? r.majority?.fairness.min : method(r, m)?.minAccuracy);
const hmean = (r: RunResult, m: string) =>
  m === "majority" ? r.majority?.fairness.hmean : method(r, m)?.hmeanAccuracy;

const CLAIMS: Claim[] = [
  {
    text: "FedAvg raises Min-Acc over local-only",
    better: "fedavg",
    worse: "local",
    value: minAcc,
    scale: 100,
    unit: " pts",
  },
  {
    text: "FedAvg raises H-mean over local-only",
    better: "fedavg",
    worse: "local",
    value: hmean,
    scale: 100,
    unit: " pts",
  },
  {
    text: "FedProx raises Min-Acc over local-only",
    better: "fedprox",
    worse: "local",
    value: minAcc,
    scale: 100,
    unit: " pts",
  },
  {
    text: "FedAvg's Min-Acc beats the majority class",
    better: "fedavg",
    worse: "majority",
    value: minAcc,
    scale: 100,
    unit: " pts",
  },
  {
    text: "local-only's Min-Acc beats the majority class",
    better: "local",
    worse: "majority",
    value: minAcc,
    scale: 100,
    unit: " pts",
  },
  {
    text: "centralized is an upper bound on FedAvg's Min-Acc",
    better: "centralized",
    worse: "fedavg",
    value: minAcc,
    scale: 100,
    unit: " pts",
  },
  {
    text: "FedAvg lowers the worst hospital's perplexity below local-only's",
    better: "fedavg",
    worse: "local",
    value: (r, m) => method(r, m)?.worstPerplexity,
    lower: true,
    scale: 1,
    unit: "",
  },
  {
    text: "probe: FedAvg raises cross-client Min-Acc over local-only (knowledge flows)",
    better: "fedavg",
    worse: "local",
    value: (r, m) => method(r, m)?.probe?.cross.min,
    scale: 100,
    unit: " pts",
  },
  {
    text: "probe: local-only beats FedAvg on its own items (Min-Acc)",
    better: "local",
    worse: "fedavg",
    value: (r, m) => method(r, m)?.probe?.own.min,
    scale: 100,
    unit: " pts",
  },
];

/** The claims table: per claim and partition, in how many runs it holds strictly, ties, and the differences. */
export function claimsSection(runs: RunResult[]): string[] {
  const lines = [
    "## The claims, run by run",
    "",
    "Each row compares two results of the same run (partition and seed); a claim holds in a run when the first is " +
      "strictly better. Δ is first minus second (perplexity: second minus first), mean [min, max] over the runs.",
    "",
    "| claim | partition | holds in | ties | Δ mean [min, max] |",
    "| --- | --- | ---: | ---: | --- |",
  ];
  for (const c of CLAIMS) {
    for (const p of [...new Set(runs.map((r) => r.partition))]) {
      const diffs: number[] = [];
      for (const r of runs.filter((x) => x.partition === p)) {
        const a = c.value(r, c.better);
        const b = c.value(r, c.worse);
        if (a === undefined || b === undefined || !Number.isFinite(a) || !Number.isFinite(b)) continue;
        diffs.push((c.lower ? b - a : a - b) * c.scale);
      }
      if (diffs.length === 0) continue;
      const f = (x: number) => `${x >= 0 ? "+" : ""}${x.toFixed(1)}${c.unit}`;
      const mean = diffs.reduce((s, d) => s + d, 0) / diffs.length;
      lines.push(
        `| ${c.text} | ${p} | ${diffs.filter((d) => d > 0).length} of ${diffs.length} | ` +
          `${diffs.filter((d) => d === 0).length} | ${f(mean)} [${f(Math.min(...diffs))}, ${f(Math.max(...diffs))}] |`,
      );
    }
  }
  lines.push("");
  return lines;
}

/**
 * The answers each method gave, summed over hospitals and seeds, per partition, and how many hospitals got one
 * constant answer from the model they end with.
 */
export function answersSection(runs: RunResult[]): string[] {
  const lines = [
    "## Answers given",
    "",
    "Predictions on the held-out questions, summed over hospitals and seeds; constant = hospitals whose model gave " +
      "one answer to all their questions. The majority-class row answers each hospital's questions with the most " +
      "frequent answer of its training items.",
    "",
    "| partition | method | yes | no | maybe | constant | Min-Acc % | H-mean % |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
  ];
  for (const p of [...new Set(runs.map((r) => r.partition))]) {
    const ofP = runs.filter((r) => r.partition === p);
    const mean = (xs: (number | undefined)[]) => {
      const v = xs.filter((x): x is number => x !== undefined && Number.isFinite(x));
      return v.length ? ((v.reduce((s, x) => s + x, 0) / v.length) * 100).toFixed(1) : "-";
    };
    const majority = ofP.map((r) => r.majority).filter((m) => m !== undefined);
    if (majority.length) {
      lines.push(
        `| ${p} | majority class | - | - | - | - | ${mean(majority.map((m) => m.fairness.min))} | ` +
          `${mean(majority.map((m) => m.fairness.hmean))} |`,
      );
    }
    for (const m of [...new Set(ofP.flatMap((r) => r.methods.map((x) => x.method)))]) {
      const results = ofP.map((r) => method(r, m)).filter((x): x is MethodResult => x !== undefined);
      const clients = results.flatMap((x) => x.clients).filter((c) => c.answers);
      if (clients.length === 0) continue;
      const sum = (d: "yes" | "no" | "maybe") => clients.reduce((s, c) => s + c.answers![d], 0);
      const constant = clients.filter((c) => Object.values(c.answers!).filter((n) => n > 0).length <= 1).length;
      lines.push(
        `| ${p} | ${m} | ${sum("yes")} | ${sum("no")} | ${sum("maybe")} | ${constant} of ${clients.length} | ` +
          `${mean(results.map((x) => x.minAccuracy))} | ${mean(results.map((x) => x.hmeanAccuracy))} |`,
      );
    }
  }
  lines.push("");
  return lines;
}

/** Min-Acc with the global adapter after each round, per federated method, a line per seed, a panel per partition. */
export function minAccuracyPlot(runs: RunResult[]): TopLevelSpec {
  const points = runs.flatMap((r) =>
    r.methods
      .filter((m) => m.minAccuracyCurve)
      .flatMap((m) =>
        m.minAccuracyCurve!.map((acc, k) => ({
          partition: r.partition,
          series: `${m.method} · seed ${r.seed}`,
          method: m.method,
          round: k + 1,
          minAcc: acc * 100,
        })),
      ),
  );
  return {
    data: { values: points },
    facet: { column: { field: "partition" } },
    spec: {
      width: 240,
      height: 180,
      mark: { type: "line", point: true },
      encoding: {
        x: { field: "round", type: "ordinal" },
        y: { field: "minAcc", type: "quantitative", title: "Min-Acc % (global adapter)" },
        color: { field: "method" },
        detail: { field: "series" },
      },
    },
  };
}
