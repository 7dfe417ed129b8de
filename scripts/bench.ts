/**
 * `npm run bench`: runs every benchmark (gas, store, train, round) and writes one JSON and one markdown file with the
 * machine they ran on (CPU model, cores, memory, Node version, tfjs backend).
 *
 *   npm run bench -- [--out results/bench]
 */
import { spawnSync } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, totalmem, platform, release } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { initBackend } from "../node/model/backend.js";

const { values } = parseArgs({ options: { out: { type: "string", default: "results/bench" } } });
const machine = {
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memoryGiB: Math.round(totalmem() / 2 ** 30),
  os: `${platform()} ${release()}`,
  node: process.version,
  backend: await initBackend(undefined, true),
  date: new Date().toISOString(),
};
const runs: [string, string[]][] = [
  ["gas", ["hardhat", "run", "scripts/bench-gas.ts"]],
  ["store", ["tsx", "scripts/bench-store.ts", "--json"]],
  ["train", ["tsx", "scripts/bench-train.ts", "--json"]],
  ["round", ["hardhat", "run", "scripts/bench-round.ts"]],
];
const results: Record<string, unknown> = {};
const md: string[] = [`# Benchmarks`, "", `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, tfjs backend ${machine.backend}, ${machine.date}`, ""];
for (const [name, cmd] of runs) {
  process.stderr.write(`[bench] ${name}…\n`);
  const r = spawnSync("npx", cmd, { encoding: "utf8", env: { ...process.env, FOK_BENCH_JSON: "1", CI: "true" }, maxBuffer: 64 * 1024 * 1024 });
  const last = r.stdout.trim().split("\n").filter((l) => l.startsWith("{") || l.startsWith("[")).join("\n");
  let parsed: unknown = null;
  try {
    parsed = JSON.parse(r.stdout.slice(r.stdout.search(/^[[{]/m)));
  } catch {
    parsed = last || null;
  }
  results[name] = { exitCode: r.status, result: parsed };
  md.push(`## ${name}`, "", "```json", JSON.stringify(parsed, null, 2), "```", "");
}
await mkdir(values.out!, { recursive: true });
await writeFile(join(values.out!, "bench.json"), JSON.stringify({ machine, results }, null, 2) + "\n");
await writeFile(join(values.out!, "bench.md"), md.join("\n"));
console.log(`wrote ${join(values.out!, "bench.json")} and bench.md`);
process.exit(0);
