/**
 * A Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism, the one client-level DP-FedAvg runs (McMahan
 * et al. 2018: each round, each client is taken with probability q, its clipped update summed, Gaussian noise of
 * standard deviation σ·C added to the sum). Published formulas, implemented here (no maintained accountant exists
 * for Node):
 *
 * - the RDP of one step at order α: α / (2σ²) without subsampling (q = 1); with q < 1, log(A_α) / (α − 1) where A_α
 *   is the α-th moment of the ratio of the mixture (1 − q)·N(0, σ²) + q·N(1, σ²) to N(0, σ²), computed as a finite
 *   binomial sum for integer α and as two converging series with erfc terms for fractional α, bounded above
 *   (Mironov, Talwar and Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3);
 * - RDP composes by addition over steps (Mironov 2017, Prop. 1);
 * - (ε, δ) from RDP by ε = min over α of rdp_α + log((α − 1)/α) − (log δ + log α)/(α − 1) (Balle et al. 2020,
 *   Thm. 21; Canonne, Kamath and Steinke 2020), which is what Google's dp_accounting and Opacus report.
 *
 * Tests compare with values published by dp_accounting, TensorFlow Privacy and Opacus (test/dp/accountant.ts).
 */
import erfc from "@stdlib/math-base-special-erfc";
import erfcx from "@stdlib/math-base-special-erfcx";
import { InvalidArgumentError } from "../errors.js";

/** Opacus's default orders: 1.1 to 10.9 in steps of 0.1, then 12 to 63 — plus a few large ones for tiny ε. */
export const DEFAULT_ORDERS: readonly number[] = [
  ...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10),
  ...Array.from({ length: 52 }, (_, i) => 12 + i),
  128,
  256,
  512,
];

/** log(exp(a) + exp(b)) without overflow. */
function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const [hi, lo] = a > b ? [a, b] : [b, a];
  return hi + Math.log1p(Math.exp(lo - hi));
}

/** log(erfc(x)), accurate where erfc(x) underflows (large x: erfc(x) = erfcx(x)·exp(−x²)). */
function logErfc(x: number): number {
  return x > 0 ? Math.log(erfcx(x)) - x * x : Math.log(erfc(x));
}

/** log A_α for integer α ≥ 2: log Σ_i C(α, i) (1 − q)^(α−i) q^i exp((i² − i) / (2σ²)). */
function logAInteger(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  let logBinom = 0; // log C(α, 0)
  for (let i = 0; i <= alpha; i++) {
    const term = logBinom + i * Math.log(q) + (alpha - i) * Math.log1p(-q) + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, term);
    logBinom += Math.log(alpha - i) - Math.log(i + 1);
  }
  return logA;
}

/**
 * log A_α for fractional α > 1: the integral split at z0 into two series of erfc-weighted terms. Every term is
 * added with its coefficient's magnitude |C(α, i)| — an upper bound on A_α (the exact series alternates once i > α),
 * so never an under-estimate of the privacy spent; it is what dp_accounting computes today. Summed until both
 * series decrease and their terms are e^-30 below the total.
 */
function logAFractional(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  let last0 = -Infinity;
  let last1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  let logAbsBinom = 0; // log |C(α, i)|
  for (let i = 0; i < 100_000; i++) {
    const j = alpha - i;
    const logT0 = logAbsBinom + i * Math.log(q) + j * Math.log1p(-q);
    const logT1 = logAbsBinom + j * Math.log(q) + i * Math.log1p(-q);
    const logE0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    logA0 = logAdd(logA0, logS0);
    logA1 = logAdd(logA1, logS1);
    const total = logAdd(logA0, logA1);
    if (logS0 < last0 && logS1 < last1 && Math.max(logS0, logS1) < total - 30) return total;
    last0 = logS0;
    last1 = logS1;
    // |C(α, i + 1)| = |C(α, i)| · |α − i| / (i + 1)
    logAbsBinom += Math.log(Math.abs(alpha - i)) - Math.log(i + 1);
  }
  return Infinity; // did not converge: this order is left out of the minimum
}

/** The RDP at order α of one step of the Gaussian mechanism with noise multiplier σ, each record taken w.p. q. */
export function rdpOfStep(q: number, sigma: number, alpha: number): number {
  if (!(q >= 0 && q <= 1)) throw new InvalidArgumentError(`sampling rate must be in [0, 1], got ${q}`);
  if (!(sigma >= 0)) throw new InvalidArgumentError(`noise multiplier must be >= 0, got ${sigma}`);
  if (!(alpha > 1)) throw new InvalidArgumentError(`RDP orders must be > 1, got ${alpha}`);
  if (q === 0) return 0;
  if (sigma === 0 || alpha === Infinity) return Infinity;
  if (q === 1) return alpha / (2 * sigma * sigma);
  const logA = Number.isInteger(alpha) ? logAInteger(q, sigma, alpha) : logAFractional(q, sigma, alpha);
  return logA / (alpha - 1);
}

/** RDP per order after `steps` compositions. */
export function rdpOf(q: number, sigma: number, steps: number, orders: readonly number[] = DEFAULT_ORDERS): number[] {
  if (!(Number.isInteger(steps) && steps >= 0)) throw new InvalidArgumentError(`steps must be an integer >= 0`);
  return orders.map((a) => steps * rdpOfStep(q, sigma, a));
}

/** The smallest ε over the orders for `delta`, and the order that gives it. */
export function epsilonFromRdp(
  orders: readonly number[],
  rdp: readonly number[],
  delta: number,
): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw new InvalidArgumentError(`delta must be in (0, 1), got ${delta}`);
  let best = { epsilon: Infinity, order: NaN };
  orders.forEach((a, k) => {
    const r = rdp[k]!;
    // a tiny RDP bounds δ directly (δ ≤ sqrt(1 − exp(−r))): ε = 0; near α = 1 the bound is unstable
    const eps =
      delta * delta + Math.expm1(-r) > 0
        ? 0
        : a > 1.01
          ? r + Math.log1p(-1 / a) - Math.log(delta * a) / (a - 1)
          : Infinity;
    if (eps < best.epsilon) best = { epsilon: Math.max(0, eps), order: a };
  });
  return best;
}

export interface GaussianSchedule {
  /** σ: the noise's standard deviation over the clipping norm. */
  noiseMultiplier: number;
  /** q: the probability each participant is taken in a step (1: all of them, every round). */
  sampleRate: number;
  steps: number;
  delta: number;
  orders?: readonly number[];
}

/** (ε, δ) of `steps` steps of the subsampled Gaussian mechanism. */
export function epsilonOf(s: GaussianSchedule): { epsilon: number; order: number } {
  const orders = s.orders ?? DEFAULT_ORDERS;
  return epsilonFromRdp(orders, rdpOf(s.sampleRate, s.noiseMultiplier, s.steps, orders), s.delta);
}

/**
 * The smallest noise multiplier (to 1e-4 relative) whose `steps` steps spend at most `epsilon` at `delta`: what a
 * task must use to stay within its budget. Infinity when none up to 1e4 does.
 */
export function noiseMultiplierFor(epsilon: number, s: Omit<GaussianSchedule, "noiseMultiplier">): number {
  if (!(epsilon > 0)) throw new InvalidArgumentError(`target epsilon must be > 0, got ${epsilon}`);
  const spends = (sigma: number) => epsilonOf({ ...s, noiseMultiplier: sigma }).epsilon;
  let lo = 0;
  let hi = 1;
  while (spends(hi) > epsilon) {
    lo = hi;
    hi *= 2;
    if (hi > 1e4) return Infinity;
  }
  while (hi - lo > 1e-4 * hi) {
    const mid = (lo + hi) / 2;
    if (spends(mid) > epsilon) lo = mid;
    else hi = mid;
  }
  return hi;
}
