/** Aggregation strategies, one per file, behind one interface; `strategyFor` picks one by its on-chain id. */
import { InvalidArgumentError } from "../errors.js";
import { ExactLora } from "./exact.js";
import { FedAvg, FedProx, FfaLora } from "./fedavg.js";
import { CoordinateMedian, Krum, TrimmedMean } from "./robust.js";
import type { Strategy } from "./types.js";

export * from "./types.js";
export * from "./norm.js";
export { ExactLora, FedAvg, FedProx, FfaLora, CoordinateMedian, Krum, TrimmedMean };

export const STRATEGIES = [
  "fedavg",
  "fedprox",
  "ffa-lora",
  "exact-svd",
  "median",
  "trimmed-mean",
  "krum",
  "multi-krum",
] as const;

/**
 * The strategies a secure task can run: linear in the updates, so the unmasked weighted sum is all they need.
 * Median, trimmed mean, Krum and exact-SVD need each update on its own, which secure mode never reveals.
 */
export const SECURE_STRATEGIES: readonly string[] = ["fedavg", "fedprox", "ffa-lora"];

export function strategyFor(
  id: string,
  options: { proxMu?: number; krumF?: number; multiKrumM?: number } = {},
): Strategy {
  switch (id) {
    case "fedavg":
      return new FedAvg();
    case "fedprox":
      return new FedProx(options.proxMu ?? 0.01);
    case "ffa-lora":
      return new FfaLora();
    case "exact-svd":
      return new ExactLora();
    case "median":
      return new CoordinateMedian();
    case "trimmed-mean":
      return new TrimmedMean();
    case "krum":
      return new Krum(options.krumF, 1);
    case "multi-krum":
      return new Krum(options.krumF, options.multiKrumM ?? 3);
    default:
      throw new InvalidArgumentError(`unknown strategy ${JSON.stringify(id)}; choose one of ${STRATEGIES.join(", ")}`);
  }
}
