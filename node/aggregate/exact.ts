/**
 * Exact LoRA aggregation: the weighted mean of each client's product ΔWᵢ = Aᵢ·Bᵢ (what FedAvg of A and B
 * separately gets wrong: mean(A)·mean(B) ≠ mean(A·B)), re-factored to rank r by truncated SVD so the global adapter
 * stays a rank-r LoRA. The mean product has rank up to n·r; the SVD keeps its best rank-r approximation (Eckart–
 * Young) and reports the relative Frobenius error it leaves (`factorError`), beside FedAvg's error on the same
 * updates (`fedavgError`). We chose SVD over FedEx-LoRA's residual because a residual folded into the frozen base
 * would make every round's base differ from the registered base model.
 *
 * Computed without forming ΔW densely: stack P = [s₁A₁ … sₙAₙ] [in, n·r] and Q = [B₁; …; Bₙ] [n·r, out], so
 * mean ΔW = P·Q; QR both, SVD the small core, and split the singular values evenly: A' = U√S, B' = √S·Vᵀ.
 */
import {
  exampleShares,
  prepare,
  type AggregateResult,
  type ClientUpdate,
  type Strategy,
  type StrategyContext,
} from "./types.js";
import { mat, matmul, qr, svd, transpose, type Mat } from "./linalg.js";
import type { LoraWeights } from "../model/adapter.js";

export class ExactLora implements Strategy {
  readonly id = "exact-svd";

  /** Uses every update it is given: verify re-runs the aggregation itself. */
  replay(listed: ClientUpdate[], ctx: StrategyContext): AggregateResult {
    return this.aggregate(listed, ctx);
  }

  aggregate(updates: ClientUpdate[], ctx: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const shares = exampleShares(sorted);
    const r = ctx.r;
    const weights: LoraWeights = new Map();
    let errSq = 0;
    let fedavgErrSq = 0;
    let normSq = 0;
    for (const m of sorted[0]!.weights.keys()) {
      const rows = sorted[0]!.weights.get(m)!.A.length / r; // in
      const cols = sorted[0]!.weights.get(m)!.B.length / r; // out (chosen sections)
      const n = sorted.length;
      const P = mat(rows, n * r);
      const Q = mat(n * r, cols);
      sorted.forEach((u, i) => {
        const { A, B } = u.weights.get(m)!;
        for (let a = 0; a < rows; a++)
          for (let k = 0; k < r; k++) P.data[a * n * r + i * r + k] = shares[i]! * A[a * r + k]!;
        for (let k = 0; k < r; k++) for (let b = 0; b < cols; b++) Q.data[(i * r + k) * cols + b] = B[k * cols + b]!;
      });
      const { q: qp, r: rp } = qr(P);
      const { q: qq, r: rq } = qr(transpose(Q));
      const core = matmul(rp, transpose(rq)); // [nr, nr]
      const { u, s, v } = svd(core);
      const Uf = matmul(qp, u); // [in, nr]
      const Vf = matmul(qq, v); // [out, nr]
      const A = new Float32Array(rows * r);
      const B = new Float32Array(r * cols);
      const keep = Math.min(r, s.length);
      for (let k = 0; k < keep; k++) {
        const root = Math.sqrt(s[k]!);
        for (let a = 0; a < rows; a++) A[a * r + k] = Uf.data[a * Uf.cols + k]! * root;
        for (let b = 0; b < cols; b++) B[k * cols + b] = root * Vf.data[b * Vf.cols + k]!;
      }
      weights.set(m, { A, B });
      // errors: the dropped singular values, and FedAvg's mean(A)·mean(B) against the exact mean product
      for (let k = 0; k < s.length; k++) {
        normSq += s[k]! ** 2;
        if (k >= keep) errSq += s[k]! ** 2;
      }
      const exact = matmul(P, Q);
      const meanA = mat(rows, r);
      const meanB = mat(r, cols);
      sorted.forEach((u2, i) => {
        const { A: Ai, B: Bi } = u2.weights.get(m)!;
        for (let k = 0; k < Ai.length; k++) meanA.data[k]! += shares[i]! * Ai[k]!;
        for (let k = 0; k < Bi.length; k++) meanB.data[k]! += shares[i]! * Bi[k]!;
      });
      fedavgErrSq += frobDiffSq(exact, matmul(meanA, meanB));
    }
    const norm = Math.sqrt(normSq) || 1;
    return {
      weights,
      contributors: sorted.map((u) => u.identity),
      shares,
      units: sorted.map((u) => u.numExamples),
      diagnostics: { factorError: Math.sqrt(errSq) / norm, fedavgError: Math.sqrt(fedavgErrSq) / norm },
    };
  }
}

function frobDiffSq(a: Mat, b: Mat): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += (a.data[i]! - b.data[i]!) ** 2;
  return s;
}
