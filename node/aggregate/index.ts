/** Aggregation strategies, one per file, behind one interface; `strategyFor` picks one by its on-chain id. */
import { InvalidArgumentError } from "../errors.js";
import { ExactLora } from "./exact.js";
import { FedAvg, FedProx } from "./fedavg.js";
import { CoordinateMedian, Krum, TrimmedMean } from "./robust.js";
import type { Strategy } from "./types.js";

export * from "./types.js";
export * from "./norm.js";
export { ExactLora, FedAvg, FedProx, CoordinateMedian, Krum, TrimmedMean };

export const STRATEGIES = ["fedavg", "fedprox", "exact-svd", "median", "trimmed-mean", "krum", "multi-krum"] as const;

export function strategyFor(
  id: string,
  options: { proxMu?: number; krumF?: number; multiKrumM?: number } = {},
): Strategy {
  switch (id) {
    case "fedavg":
      return new FedAvg();
    case "fedprox":
      return new FedProx(options.proxMu ?? 0.01);
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
