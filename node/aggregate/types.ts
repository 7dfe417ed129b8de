/**
 * What every aggregation strategy sees and returns. Strategies are pure and deterministic: updates come sorted by
 * identity, sums run in float64, and the result is rounded to float32 once, so every machine gets the same bytes.
 */
import { FokError } from "../errors.js";
import type { LoraWeights } from "../model/adapter.js";

export { unitsToWeights } from "../weights.js";

export interface ClientUpdate {
  /** Identity token id (sort key). */
  identity: number;
  numExamples: number;
  weights: LoraWeights;
}

export interface AggregateResult {
  weights: LoraWeights;
  /** Contributors actually used, ascending identity. */
  contributors: number[];
  /** Each contributor's share (sums to 1), in the same order. */
  shares: number[];
  /** The shares as positive integers (example counts, or 1 each), for exact on-chain weights. */
  units: number[];
  /** Strategy-specific figures (e.g. the factorisation error of exact aggregation). */
  diagnostics: Record<string, number>;
}

export interface StrategyContext {
  /** LoRA scale alpha / r: the update a module applies is scale · A · B. */
  scale: number;
  r: number;
}

export interface Strategy {
  /** Short id recorded on-chain (bytes32 text), e.g. `fedavg`. */
  readonly id: string;
  aggregate(updates: ClientUpdate[], ctx: StrategyContext): AggregateResult;
  /**
   * How `fok verify` re-computes a published round from the updates of the contributors the round lists. A
   * strategy that uses every update it is given re-runs `aggregate`; one that selects (Krum) combines the listed,
   * selected updates as it does after selecting (the selection itself is not re-checked from this alone).
   */
  replay(listed: ClientUpdate[], ctx: StrategyContext): AggregateResult;
  /**
   * Why an update cannot be used by this strategy given the round's start adapter (null when it can): FFA-LoRA
   * refuses an update that changed its frozen A. The aggregator leaves such updates out; verify checks it.
   */
  validate?(update: LoraWeights, start: LoraWeights): string | null;
}

/** An update does not have the tensors, shapes or values the task's adapter layout needs. */
export class UpdateMismatchError extends FokError {
  constructor(
    readonly identity: number,
    readonly what: string,
  ) {
    super(`update from identity ${identity}: ${what}`);
  }
}

/** Too few usable updates for the strategy or the task's minimum. */
export class TooFewUpdatesError extends FokError {
  constructor(
    readonly got: number,
    readonly needed: number,
  ) {
    super(`${got} usable updates, at least ${needed} needed`);
  }
}

/** Expected sizes of every module's A and B. */
export type Layout = Map<string, { a: number; b: number }>;

export function layoutOf(w: LoraWeights): Layout {
  return new Map([...w].map(([m, { A, B }]) => [m, { a: A.length, b: B.length }]));
}

/** Throws UpdateMismatchError naming the first difference between `u` and `layout`, or a non-finite value. */
export function checkUpdate(u: ClientUpdate, layout: Layout, values = true): void {
  if (!Number.isInteger(u.numExamples) || u.numExamples <= 0)
    throw new UpdateMismatchError(u.identity, `numExamples ${u.numExamples} is not a positive integer`);
  for (const m of u.weights.keys())
    if (!layout.has(m)) throw new UpdateMismatchError(u.identity, `unexpected module ${m}`);
  for (const [m, size] of layout) {
    const w = u.weights.get(m);
    if (!w) throw new UpdateMismatchError(u.identity, `module ${m} missing`);
    if (w.A.length !== size.a)
      throw new UpdateMismatchError(u.identity, `${m}.lora_A has ${w.A.length} values, expected ${size.a}`);
    if (w.B.length !== size.b)
      throw new UpdateMismatchError(u.identity, `${m}.lora_B has ${w.B.length} values, expected ${size.b}`);
    if (!values) continue;
    for (const [name, arr] of [
      ["lora_A", w.A],
      ["lora_B", w.B],
    ] as const) {
      if (allFinite(arr)) continue;
      const i = arr.findIndex((x) => !Number.isFinite(x));
      throw new UpdateMismatchError(u.identity, `${m}.${name} holds a non-finite value at ${i}`);
    }
  }
}

/**
 * Updates sorted by identity, each checked against the first one's layout (or `layout`); every value finite, unless
 * `values` is false for a caller that checks its result instead (exampleWeightedMean).
 */
export function prepare(updates: ClientUpdate[], layout?: Layout, values = true): ClientUpdate[] {
  if (updates.length === 0) throw new TooFewUpdatesError(0, 1);
  const sorted = [...updates].sort((a, b) => a.identity - b.identity);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.identity === sorted[i - 1]!.identity)
      throw new UpdateMismatchError(sorted[i]!.identity, "submitted twice");
  }
  const l = layout ?? layoutOf(sorted[0]!.weights);
  for (const u of sorted) checkUpdate(u, l, values);
  return sorted;
}

function allFinite(arr: Float32Array): boolean {
  for (let i = 0; i < arr.length; i++) if (!Number.isFinite(arr[i])) return false;
  return true;
}

/**
 * Σ shares[i] · xs[i] in float64, returned as float32. Per value the same additions in the same order as one pass
 * per client — ((0 + s0·x0) + s1·x1) + … — so the bytes are those every earlier version computed (verify replays
 * old rounds with this code), but four clients go through memory at once: the float64 accumulator is read and
 * written a quarter as often.
 */
export function weightedSum(xs: Float32Array[], shares: number[]): Float32Array {
  const n = xs[0]!.length;
  const acc = new Float64Array(n);
  let c = 0;
  for (; c + 4 <= xs.length; c += 4) {
    const [x0, x1, x2, x3] = [xs[c]!, xs[c + 1]!, xs[c + 2]!, xs[c + 3]!];
    const [s0, s1, s2, s3] = [shares[c]!, shares[c + 1]!, shares[c + 2]!, shares[c + 3]!];
    for (let k = 0; k < n; k++) acc[k] = acc[k]! + s0 * x0[k]! + s1 * x1[k]! + s2 * x2[k]! + s3 * x3[k]!;
  }
  for (; c < xs.length; c++) {
    const x = xs[c]!;
    const s = shares[c]!;
    for (let k = 0; k < n; k++) acc[k] = acc[k]! + s * x[k]!;
  }
  return new Float32Array(acc);
}

/** Shares proportional to example counts. */
export function exampleShares(updates: ClientUpdate[]): number[] {
  const total = updates.reduce((a, u) => a + u.numExamples, 0);
  return updates.map((u) => u.numExamples / total);
}

/** Every A and B value of an adapter in module order, as one float64 vector. */
export function flattenWeights(w: LoraWeights): Float64Array {
  const parts = [...w.values()].flatMap(({ A, B }) => [A, B]);
  const out = new Float64Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** A and B of every module averaged separately with `shares` (float64 accumulation). */
export function averageWeights(updates: ClientUpdate[], shares: number[]): LoraWeights {
  const out: LoraWeights = new Map();
  for (const m of updates[0]!.weights.keys()) {
    out.set(m, {
      A: weightedSum(
        updates.map((u) => u.weights.get(m)!.A),
        shares,
      ),
      B: weightedSum(
        updates.map((u) => u.weights.get(m)!.B),
        shares,
      ),
    });
  }
  return out;
}

/** Updates averaged with shares proportional to their examples: FedAvg's rule, and what Krum applies to its pick. */
export function exampleWeightedMean(updates: ClientUpdate[]): AggregateResult {
  const sorted = prepare(updates, undefined, false);
  const shares = exampleShares(sorted);
  const weights = averageWeights(sorted, shares);
  // Every share is positive, so a non-finite value in any update leaves a non-finite mean (and a mean of finite
  // float32 values stays finite): the values are checked through the mean, a sixteenth of the reads for 16
  // clients, and only a mean that is not finite sends the updates through the full check, which names the value.
  if (![...weights.values()].every((w) => allFinite(w.A) && allFinite(w.B))) {
    prepare(updates);
    throw new UpdateMismatchError(sorted[0]!.identity, "the weighted mean is not finite"); // unreachable, by the above
  }
  return {
    weights,
    contributors: sorted.map((u) => u.identity),
    shares,
    units: sorted.map((u) => u.numExamples),
    diagnostics: {},
  };
}

/** The updates with one example each: DP tasks average uniformly (each contributor's influence bounded by C). */
export function uniformly(updates: ClientUpdate[]): ClientUpdate[] {
  return updates.map((u) => ({ ...u, numExamples: 1 }));
}
