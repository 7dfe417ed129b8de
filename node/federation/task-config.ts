/** What a task commits to on-chain about the model: the LoRA config hash and each identity's model fingerprint. */
import { solidityPackedKeccak256 } from "ethers";
import { SECURE_STRATEGIES } from "../aggregate/index.js";
import type { TaskParams } from "../chain/index.js";
import { MAX_SECURE_PARTICIPANTS, scaleBits, SecureConfigError } from "../secure/ring.js";
import { asStored, checkDpPlan, ringBound } from "../dp/privacy.js";
export { loraConfigHash } from "../model/lora.js";

/**
 * The default cap on the examples one identity may claim per round (a task's `maxExamples`): with FedAvg one
 * claim's weight is at most cap / (cap + the others' examples), whatever number it names.
 */
export const DEFAULT_MAX_EXAMPLES = 100_000;

/**
 * The default bound on an update's change from its round's start, ‖update − start‖₂ over every LoRA value (a
 * task's `maxUpdateNorm`): clients clip to it, the aggregator leaves larger updates out, verify checks it. It stops
 * one hospital from scaling its update to outweigh the others. 20 is about four times the largest honest update
 * `fok demo` makes (2.4 to 5.3 over 4 clients × 3 rounds × 40 steps, lr 5e-3, r 8); a task with longer local
 * training or a larger model should measure its own and set `--max-update-norm`.
 */
export const DEFAULT_MAX_UPDATE_NORM = 20;

/** An identity's model fingerprint: keccak256(base-model sha256 ‖ LoRA config hash). */
export function modelFingerprint(baseModelSha256: string, loraHash: string): string {
  return solidityPackedKeccak256(["bytes32", "bytes32"], [baseModelSha256, loraHash]);
}

/**
 * The default secure threshold for a task needing `minUpdates` contributors: a majority of them, at least 2. A
 * coalition of fewer than this many participants (with the aggregator) learns nothing of an honest one's update;
 * a round survives the loss of all but this many.
 */
export function defaultThreshold(minUpdates: number): number {
  return Math.max(2, Math.min(minUpdates, Math.floor(minUpdates / 2) + 1));
}

/**
 * What a task's settings must satisfy before anything is sent: in secure mode a strategy that needs only the
 * weighted sum (SECURE_STRATEGIES), a threshold 2 ≤ t ≤ minUpdates ≤ 255, and bounds that quantize without overflow
 * (scaleBits); with DP (node/dp/privacy.ts), a strategy its analysis covers and a plan within the budget. Returns
 * a DP task's planned ε after each round (empty without DP). Throws SecureConfigError or DpConfigError naming the
 * setting.
 */
export function checkTaskParams(p: TaskParams): number[] {
  const planned = checkDpPlan(p);
  if ((p.privacy ?? "open") !== "secure") return planned;
  if (!SECURE_STRATEGIES.includes(p.strategy)) {
    throw new SecureConfigError(
      `strategy ${p.strategy} needs each update on its own, which secure mode never reveals; ` +
        `use one of ${SECURE_STRATEGIES.join(", ")}`,
    );
  }
  const t = p.threshold ?? 0;
  if (!(Number.isInteger(t) && t >= 2 && t <= p.minUpdates && p.minUpdates <= MAX_SECURE_PARTICIPANTS)) {
    throw new SecureConfigError(
      `secure threshold ${t} must be an integer with 2 <= threshold <= min updates (${p.minUpdates}) <= ` +
        `${MAX_SECURE_PARTICIPANTS}`,
    );
  }
  const dp = p.dp ? asStored(p.dp, "distributed") : null;
  scaleBits(dp ? 1 : p.maxExamples, ringBound(p.maxUpdateNorm, dp, p.minUpdates));
  return planned;
}
