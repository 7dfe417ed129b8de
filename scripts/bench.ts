/**
 * `npm run bench`: runs every benchmark (gas, store, train, round, aggregate) and writes one JSON and one markdown
 * file with the machine they ran on (CPU model, cores, memory, Node version, tfjs backend).
 *
 *   npm run bench -- [--out results/bench]
 *   npm run bench -- --from results/bench/bench.json     # rewrite bench.md from a saved bench.json, running nothing
 */
import { spawnSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, totalmem, platform, release } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { initBackend } from "../node/model/backend.js";

const { values } = parseArgs({
  options: { out: { type: "string", default: "results/bench" }, from: { type: "string" } },
});
interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  backend: string;
  date: string;
}
const saved = values.from
  ? (JSON.parse(await readFile(values.from, "utf8")) as { machine: Machine; results: Record<string, BenchResult> })
  : null;
const machine: Machine = saved?.machine ?? {
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  os: `${platform()} ${release()}`,
  node: process.version,
  backend: saved ? "" : await initBackend(undefined, true),
  date: new Date().toISOString(),
};
const runs: [string, string[]][] = [
  ["gas", ["hardhat", "run", "scripts/bench-gas.ts"]],
  ["store", ["tsx", "scripts/bench-store.ts", "--json"]],
  ["train", ["tsx", "scripts/bench-train.ts", "--json"]],
  ["round", ["hardhat", "run", "scripts/bench-round.ts"]],
  ["aggregate", ["tsx", "scripts/bench-aggregate.ts", "--json"]],
];
interface BenchResult {
  exitCode: number | null;
  result: unknown;
  /** The last line of stderr when the script failed. */
  error?: string;
}
const results: Record<string, BenchResult> = {};

type Row = Record<string, unknown>;
const isScalar = (v: unknown) => v === null || typeof v !== "object";
const cell = (v: unknown) =>
  v === null
    ? "-"
    : typeof v === "number"
      ? Number.isInteger(v)
        ? v.toLocaleString("en-US")
        : v >= 100
          ? v.toFixed(1)
          : v.toPrecision(3)
      : v === undefined
        ? ""
        : String(v);
function table(rows: Row[]): string[] {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return [
    `| ${keys.join(" | ")} |`,
    `| ${keys.map(() => "---").join(" | ")} |`,
    ...rows.map((r) => `| ${keys.map((k) => cell(r[k])).join(" | ")} |`),
  ];
}
/** A benchmark's JSON as markdown: arrays of records as tables, flat records as one-row tables, scalars as lines. */
function markdown(v: unknown): string[] {
  if (Array.isArray(v) && v.every((r) => r && typeof r === "object" && Object.values(r).every(isScalar)))
    return table(v as Row[]);
  if (v && typeof v === "object" && !Array.isArray(v)) {
    const out: string[] = [];
    for (const [k, x] of Object.entries(v)) {
      if (isScalar(x)) out.push(`- ${k}: ${cell(x)}`, "");
      else if (!Array.isArray(x) && Object.values(x as object).every(isScalar))
        out.push(`### ${k}`, "", ...table([x as Row]), "");
      else out.push(`### ${k}`, "", ...markdown(x), "");
    }
    return out;
  }
  return ["```json", JSON.stringify(v, null, 2), "```"];
}
const md: string[] = [
  `# Benchmarks`,
  "",
  `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, ` +
    `tfjs backend ${machine.backend}, ${machine.date}`,
  "",
];
/** Runs one benchmark script; its JSON output (or the JSON-looking lines of it), exit code and last stderr line. */
function runBenchmark(name: string, cmd: string[]): BenchResult {
  process.stderr.write(`[bench] ${name}…\n`);
  const r = spawnSync("npx", cmd, {
    encoding: "utf8",
    env: { ...process.env, FOK_BENCH_JSON: "1", CI: "true" },
    maxBuffer: 64 * 1024 * 1024,
  });
  const last = r.stdout
    .trim()
    .split("\n")
    .filter((l) => l.startsWith("{") || l.startsWith("["))
    .join("\n");
  let parsed: unknown;
  try {
    parsed = JSON.parse(r.stdout.slice(r.stdout.search(/^[[{]/m)));
  } catch {
    parsed = last || null;
  }
  return r.status === 0
    ? { exitCode: 0, result: parsed }
    : { exitCode: r.status, result: parsed, error: (r.stderr ?? "").trim().split("\n").pop() };
}

for (const [name, cmd] of runs) {
  const r = saved ? (saved.results[name] ?? { exitCode: null, result: null }) : runBenchmark(name, cmd);
  results[name] = r;
  md.push(
    `## ${name}`,
    "",
    ...(r.exitCode === 0 ? [] : [`**exit code ${r.exitCode}**${r.error ? `: ${r.error}` : ""}`, ""]),
    ...markdown(r.result),
    "",
  );
}
await mkdir(values.out!, { recursive: true });
await writeFile(join(values.out!, "bench.json"), JSON.stringify({ machine, results }, null, 2) + "\n");
await writeFile(join(values.out!, "bench.md"), md.join("\n"));
console.log(`wrote ${join(values.out!, "bench.json")} and bench.md`);
process.exit(0);
