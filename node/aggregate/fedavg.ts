/** FedAvg (McMahan et al. 2017) on LoRA: A and B averaged separately, weighted by examples — what most systems do. */
import { exampleShares, prepare, weightedSum, type AggregateResult, type ClientUpdate, type Strategy, type StrategyContext } from "./types.js";
import type { LoraWeights } from "../model/adapter.js";

export class FedAvg implements Strategy {
  readonly id: string = "fedavg";

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const shares = exampleShares(sorted);
    const weights: LoraWeights = new Map();
    for (const m of sorted[0]!.weights.keys()) {
      weights.set(m, {
        A: weightedSum(sorted.map((u) => u.weights.get(m)!.A), shares),
        B: weightedSum(sorted.map((u) => u.weights.get(m)!.B), shares),
      });
    }
    return { weights, contributors: sorted.map((u) => u.identity), shares, units: sorted.map((u) => u.numExamples), diagnostics: {} };
  }
}

/** FedProx (Li et al. 2020): FedAvg on the server; clients add μ/2·||w − w_global||² to their loss (train.proxMu). */
export class FedProx extends FedAvg {
  override readonly id: string = "fedprox";

  constructor(readonly mu = 0.01) {
    super();
  }
}
