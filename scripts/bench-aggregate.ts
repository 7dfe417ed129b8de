/**
 * FedAvg's throughput on 16 clients × 8 MB adapters against two honest ceilings measured in the same run: a warm
 * `dst.set(src)` copy of the same bytes (memory bandwidth) and the plain weighted float64 accumulate loop (what
 * FedAvg computes, without its checks). FedAvg includes its validation (layout, example counts, finite values) and
 * the float32 result. Each figure is the best of 5 runs.
 *
 *   npx tsx scripts/bench-aggregate.ts        (or: npm run bench:aggregate; --json for one JSON line)
 */
import { FedAvg, type ClientUpdate } from "../node/aggregate/index.js";

const N = 16;
const VALUES = 2 * 1024 * 1024; // 8 MB of float32 per client: A and B of one module, 4 MB each
const RUNS = 5;
const updates: ClientUpdate[] = Array.from({ length: N }, (_, c) => {
  const A = new Float32Array(VALUES / 2).map((_, i) => Math.sin(i + c));
  const B = new Float32Array(VALUES / 2).map((_, i) => Math.cos(i * 3 + c));
  return { identity: c + 1, numExamples: 100 + c, weights: new Map([["h.0.attn.c_attn", { A, B }]]) };
});
const arrays = updates.flatMap((u) => [...u.weights.values()].flatMap((w) => [w.A, w.B]));
const bytes = N * VALUES * 4;

/** The best of RUNS timings of `fn`, in seconds. */
function best(fn: () => void): number {
  let min = Infinity;
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    fn();
    min = Math.min(min, (performance.now() - t0) / 1000);
  }
  return min;
}

const dst = new Float32Array(VALUES / 2);
const copyS = best(() => {
  for (const a of arrays) dst.set(a);
});
const total = updates.reduce((n, u) => n + u.numExamples, 0);
let sink = 0;
const plainS = best(() => {
  // per tensor, one pass per client: acc += share · x, then to float32
  for (const k of [0, 1]) {
    const acc = new Float64Array(VALUES / 2);
    for (let c = 0; c < N; c++) {
      const x = arrays[2 * c + k]!;
      const s = updates[c]!.numExamples / total;
      for (let i = 0; i < acc.length; i++) acc[i] += s * x[i]!;
    }
    sink += new Float32Array(acc)[0]!;
  }
});
const fedavg = new FedAvg();
const fedavgS = best(() => {
  sink += fedavg.aggregate(updates).weights.get("h.0.attn.c_attn")!.A[0]!;
});
void sink;

const gbps = (s: number) => bytes / 1e9 / s;
const figures = {
  clients: N,
  bytes,
  copyGBps: gbps(copyS),
  plainLoopGBps: gbps(plainS),
  fedavgGBps: gbps(fedavgS),
  fedavgOverPlain: plainS / fedavgS,
};
if (process.argv.includes("--json")) {
  console.log(JSON.stringify(figures));
} else {
  console.log(`aggregation of ${N} × 8 MB adapters (${(bytes / 1e9).toFixed(3)} GB in), best of ${RUNS}:`);
  const line = (name: string, s: number) =>
    console.log(`  ${name.padEnd(44)} ${gbps(s).toFixed(2).padStart(6)} GB/s  (${(s * 1000).toFixed(0)} ms)`);
  line("warm copy, dst.set(src)", copyS);
  line("plain weighted float64 accumulate loop", plainS);
  line("FedAvg (validation included)", fedavgS);
  console.log(`  FedAvg / plain loop: ${figures.fedavgOverPlain.toFixed(2)}x (target ≥ 0.5x)`);
}
