/**
 * A task's client-level differential privacy (DP-FedAvg, McMahan et al. 2018), from the settings the chain holds:
 * each round, the sum of the contributors' clipped updates (‖Δ‖₂ ≤ C, the task's maxUpdateNorm) gets Gaussian noise
 * N(0, σ²C²·I) — added by the aggregator (central) or in shares by the clients (distributed: each adds
 * N(0, σ²C²/m·I), m the task's minimum of contributors, so that any finalized round's sum carries at least σ²C²) —
 * and the global update is that noised sum over n, the number of contributors (uniform weights: each hospital's
 * influence is bounded by C whatever number of examples it claims).
 *
 * Adjacency is client-level "zero-out" (Kairouz et al. 2021): two runs differ in one hospital's whole data, its
 * update replaced by zero. Who takes part is public on-chain either way, so n is public. The sum then has L2
 * sensitivity C, and each finalized round is one Gaussian mechanism with noise multiplier σ; every hospital takes
 * part in every round (sampling rate 1), so after k finalized rounds the RDP at order α is k·α/(2σ²) and ε follows
 * from the accountant (node/dp/accountant.ts). A closed round publishes nothing and spends nothing.
 */
import { FokError } from "../errors.js";
import { dpFromUnits, dpUnits, type DpParams, type NoisePlacement, type TaskParams } from "../chain/index.js";
import { epsilonOf, noiseMultiplierFor } from "./accountant.js";

/** DP settings a task cannot be created with (out of range, or a plan that overspends its budget). */
export class DpConfigError extends FokError {}

/** A round that would bring the ε spent above the task's budget: refused before anything is trained or sent. */
export class PrivacyBudgetError extends FokError {
  constructor(
    readonly task: number,
    readonly round: number,
    readonly epsilon: number,
    readonly epsilonMax: number,
    readonly delta: number,
  ) {
    super(
      `task ${task} round ${round} would bring the privacy spent to ε ${fmtEpsilon(epsilon)} at δ ${delta}, over ` +
        `the task's budget of ${fmtEpsilon(epsilonMax)}: no update is trained or submitted for it`,
    );
  }
}

/** The strategies DP-FedAvg's sensitivity analysis covers: a plain average of clipped updates (FFA-LoRA: of B). */
export const DP_STRATEGIES: readonly string[] = ["fedavg", "fedprox", "ffa-lora"];

/** δ when a task names none: below 1/N for any consortium's number of hospitals (and far below for patients). */
export const DEFAULT_DP_DELTA = 1e-5;

/** How many standard deviations of a client's noise share the secure ring leaves room for per value. */
export const NOISE_TAIL = 8;

export function fmtEpsilon(e: number): string {
  return e === Infinity ? "∞" : e.toFixed(e < 10 ? 3 : 2);
}

/** ε at the task's δ after `rounds` finalized rounds (0 for none). */
export function epsilonAfter(dp: DpParams, rounds: number): number {
  if (rounds === 0) return 0;
  return epsilonOf({ noiseMultiplier: dp.noiseMultiplier, sampleRate: 1, steps: rounds, delta: dp.delta }).epsilon;
}

/** The most finalized rounds whose ε stays within the budget. */
export function roundsWithin(dp: DpParams, limit = 1 << 20): number {
  let lo = 0;
  let hi = 1;
  while (hi <= limit && epsilonAfter(dp, hi) <= dp.epsilonMax) {
    lo = hi;
    hi *= 2;
  }
  hi = Math.min(hi, limit + 1);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (epsilonAfter(dp, mid) <= dp.epsilonMax) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The settings exactly as the chain will hold them (σ and ε_max to 1e-6, δ to 1e-18). */
export function asStored(dp: DpParams, placement: NoisePlacement): DpParams {
  return dpFromUnits(dpUnits(dp, placement));
}

/** The per-value standard deviation of the noise one party adds: σC (central) or σC/√m (a client's share). */
export function noiseStd(dp: DpParams, clip: number, placement: NoisePlacement, minUpdates: number): number {
  const std = dp.noiseMultiplier * clip;
  return placement === "central" ? std : std / Math.sqrt(minUpdates);
}

/**
 * The largest value a coordinate of a secure client's update may take: C, plus NOISE_TAIL standard deviations of
 * its noise share in a DP task (a value beyond it is clamped, which happens with probability below 10^-15).
 */
export function ringBound(clip: number, dp: DpParams | null, minUpdates: number): number {
  return dp ? clip + NOISE_TAIL * noiseStd(dp, clip, "distributed", minUpdates) : clip;
}

/**
 * A DP task's settings checked before anything is sent: a strategy DP-FedAvg covers, and a plan (max rounds) whose
 * ε stays within ε_max. Returns the planned ε after each round. Throws DpConfigError naming what to change.
 */
export function checkDpPlan(p: TaskParams): number[] {
  if (!p.dp) return [];
  const placement: NoisePlacement = (p.privacy ?? "open") === "secure" ? "distributed" : "central";
  let dp: DpParams;
  try {
    dp = asStored(p.dp, placement);
  } catch (e) {
    throw new DpConfigError((e as Error).message);
  }
  if (!DP_STRATEGIES.includes(p.strategy)) {
    throw new DpConfigError(
      `strategy ${p.strategy} is not an average of clipped updates, which DP's sensitivity analysis needs; ` +
        `use one of ${DP_STRATEGIES.join(", ")}`,
    );
  }
  const planned = Array.from({ length: p.maxRounds }, (_, k) => epsilonAfter(dp, k + 1));
  const total = planned[planned.length - 1]!;
  if (total > dp.epsilonMax) {
    const sigma = noiseMultiplierFor(dp.epsilonMax, { sampleRate: 1, steps: p.maxRounds, delta: dp.delta });
    throw new DpConfigError(
      `${p.maxRounds} rounds at noise multiplier ${dp.noiseMultiplier} spend ε ${fmtEpsilon(total)} at δ ` +
        `${dp.delta}, over the budget of ${dp.epsilonMax}: ${roundsWithin(dp)} rounds fit, or a noise multiplier ` +
        `of at least ${sigma.toFixed(4)} keeps ${p.maxRounds} rounds within it`,
    );
  }
  return planned;
}

/**
 * Per-identity accounting: each identity's ε is that of the finalized rounds it contributed to (under zero-out
 * adjacency a round it was not in does not depend on its data). The task's recorded ε covers the one in most.
 */
export function identityEpsilons(
  dp: DpParams,
  rounds: readonly { finalized: { contributors: number[] } | null }[],
): Map<number, { rounds: number; epsilon: number }> {
  const counts = new Map<number, number>();
  for (const r of rounds) for (const id of r.finalized?.contributors ?? []) counts.set(id, (counts.get(id) ?? 0) + 1);
  const ids = [...counts.keys()].sort((a, b) => a - b);
  return new Map(ids.map((id) => [id, { rounds: counts.get(id)!, epsilon: epsilonAfter(dp, counts.get(id)!) }]));
}

/** A DP task's settings and spending in one line (inspect, dashboard). */
export function describeDp(
  dp: DpParams & { placement: NoisePlacement },
  clip: number,
  spent: number,
  finalized: number,
): string {
  const where =
    dp.placement === "central" ? "central noise, added by the aggregator" : "distributed noise, added by the clients";
  return (
    `client-level DP (${where}): σ ${dp.noiseMultiplier} × clip ${clip}, δ ${dp.delta}; ` +
    `ε spent ${fmtEpsilon(spent)} of ${dp.epsilonMax} after ${finalized} finalized rounds`
  );
}
