/**
 * Byzantine-robust aggregation over the flattened adapter (every A and B value, module by module):
 *  - coordinate-wise median (Yin et al. 2018);
 *  - coordinate-wise trimmed mean, dropping the `trim` largest and smallest values per coordinate;
 *  - (multi-)Krum (Blanchard et al. 2017): score each update by the summed squared distance to its n − f − 2
 *    nearest others, keep the `m` best and average them by examples.
 */
import {
  exampleWeightedMean,
  flattenWeights,
  prepare,
  TooFewUpdatesError,
  type AggregateResult,
  type ClientUpdate,
  type Strategy,
  type StrategyContext,
} from "./types.js";
import type { LoraWeights } from "../model/adapter.js";

function unflatten(template: LoraWeights, flat: Float64Array): LoraWeights {
  const out: LoraWeights = new Map();
  let o = 0;
  for (const [m, { A, B }] of template) {
    const a = Float32Array.from(flat.subarray(o, o + A.length));
    o += A.length;
    const b = Float32Array.from(flat.subarray(o, o + B.length));
    o += B.length;
    out.set(m, { A: a, B: b });
  }
  return out;
}

function coordinatewise(updates: ClientUpdate[], reduce: (values: Float64Array) => number): LoraWeights {
  const flats = updates.map((u) => flattenWeights(u.weights));
  const out = new Float64Array(flats[0]!.length);
  const column = new Float64Array(flats.length);
  for (let k = 0; k < out.length; k++) {
    for (let i = 0; i < flats.length; i++) column[i] = flats[i]![k]!;
    column.sort();
    out[k] = reduce(column);
  }
  return unflatten(updates[0]!.weights, out);
}

export class CoordinateMedian implements Strategy {
  readonly id = "median";
  /** Uses every update it is given: verify re-runs the aggregation itself. */
  replay(listed: ClientUpdate[], ctx: StrategyContext): AggregateResult {
    return this.aggregate(listed, ctx);
  }

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const n = sorted.length;
    const weights = coordinatewise(sorted, (c) => (n % 2 ? c[(n - 1) / 2]! : (c[n / 2 - 1]! + c[n / 2]!) / 2));
    return {
      weights,
      contributors: sorted.map((u) => u.identity),
      shares: sorted.map(() => 1 / n),
      units: sorted.map(() => 1),
      diagnostics: {},
    };
  }
}

export class TrimmedMean implements Strategy {
  readonly id = "trimmed-mean";
  /** `trim`: values dropped at each end per coordinate (default: 20% of the updates, at least 1). */
  constructor(readonly trim?: number) {}
  /** Uses every update it is given: verify re-runs the aggregation itself. */
  replay(listed: ClientUpdate[], ctx: StrategyContext): AggregateResult {
    return this.aggregate(listed, ctx);
  }

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const n = sorted.length;
    const t = this.trim ?? Math.max(1, Math.floor(n * 0.2));
    if (n - 2 * t < 1) throw new TooFewUpdatesError(n, 2 * t + 1);
    const weights = coordinatewise(sorted, (c) => {
      let s = 0;
      for (let i = t; i < n - t; i++) s += c[i]!;
      return s / (n - 2 * t);
    });
    return {
      weights,
      contributors: sorted.map((u) => u.identity),
      shares: sorted.map(() => 1 / n),
      units: sorted.map(() => 1),
      diagnostics: { trimmed: t },
    };
  }
}

export class Krum implements Strategy {
  readonly id: string;
  /** `f`: Byzantine updates tolerated (default ⌊(n − 3) / 2⌋); `m`: updates kept (1 = Krum, more = multi-Krum). */
  constructor(
    readonly f?: number,
    readonly m = 1,
  ) {
    this.id = m === 1 ? "krum" : "multi-krum";
  }
  /** Selects, then averages by examples: verify combines the listed (selected) updates the same way. */
  replay(listed: ClientUpdate[]): AggregateResult {
    return exampleWeightedMean(listed);
  }

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const n = sorted.length;
    const f = this.f ?? Math.max(0, Math.floor((n - 3) / 2));
    if (n < 2 * f + 3) throw new TooFewUpdatesError(n, 2 * f + 3);
    const flats = sorted.map((u) => flattenWeights(u.weights));
    const dist = (a: Float64Array, b: Float64Array) => {
      let s = 0;
      for (let k = 0; k < a.length; k++) s += (a[k]! - b[k]!) ** 2;
      return s;
    };
    const d = flats.map((a, i) => flats.map((b, j) => (i === j ? 0 : j < i ? NaN : dist(a, b))));
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) d[i]![j] = d[j]![i]!;
    const scores = d.map((row, i) =>
      row
        .filter((_, j) => j !== i)
        .sort((x, y) => x - y)
        .slice(0, n - f - 2)
        .reduce((a, b) => a + b, 0),
    );
    const keep = [...scores.keys()]
      .sort((x, y) => scores[x]! - scores[y]! || x - y)
      .slice(0, Math.min(this.m, n))
      .sort((x, y) => x - y);
    return { ...exampleWeightedMean(keep.map((i) => sorted[i]!)), diagnostics: { f } };
  }
}
