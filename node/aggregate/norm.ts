/**
 * The size of an update: ‖update − start‖₂ over every LoRA A and B value, the quantity a task bounds
 * (`maxUpdateNorm`). One function computes it for the client that clips, the aggregator that excludes and verify
 * that re-checks, so all three get the same float64 number from the same bytes.
 */
import type { LoraWeights } from "../model/adapter.js";
import { UpdateMismatchError } from "./types.js";

/** ‖update − start‖₂ in float64, module by module in `start`'s order; throws when the layouts differ. */
export function updateNorm(update: LoraWeights, start: LoraWeights, identity = 0): number {
  let sum = 0;
  for (const [m, s] of start) {
    const u = update.get(m);
    if (!u || u.A.length !== s.A.length || u.B.length !== s.B.length) {
      throw new UpdateMismatchError(identity, `module ${m} differs in shape from the round's start adapter`);
    }
    for (const [x, y] of [
      [u.A, s.A],
      [u.B, s.B],
    ] as const) {
      for (let i = 0; i < x.length; i++) {
        const d = x[i]! - y[i]!;
        sum += d * d;
      }
    }
  }
  if (update.size !== start.size) throw new UpdateMismatchError(identity, "modules differ from the start adapter's");
  return Math.sqrt(sum);
}

/**
 * `update` moved back towards `start` so that its norm is at most `maxNorm` (the change scaled by one factor,
 * kept a hair under the bound so that float32 rounding cannot push it over); unchanged when already within.
 */
export function clipUpdate(
  update: LoraWeights,
  start: LoraWeights,
  maxNorm: number,
): { weights: LoraWeights; norm: number; clippedFrom: number | null } {
  const norm = updateNorm(update, start);
  if (norm <= maxNorm) return { weights: update, norm, clippedFrom: null };
  const factor = (maxNorm * (1 - 1e-4)) / norm;
  const weights: LoraWeights = new Map();
  for (const [m, s] of start) {
    const u = update.get(m)!;
    const shrink = (x: Float32Array, y: Float32Array) => x.map((v, i) => y[i]! + (v - y[i]!) * factor);
    weights.set(m, { A: shrink(u.A, s.A), B: shrink(u.B, s.B) });
  }
  return { weights, norm: updateNorm(weights, start), clippedFrom: norm };
}
