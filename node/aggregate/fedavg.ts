/** FedAvg (McMahan et al. 2017) on LoRA: A and B averaged separately, weighted by examples — what most systems do. */
import {
  averageWeights,
  exampleShares,
  prepare,
  type AggregateResult,
  type ClientUpdate,
  type Strategy,
  type StrategyContext,
} from "./types.js";

export class FedAvg implements Strategy {
  readonly id: string = "fedavg";

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    const sorted = prepare(updates);
    const shares = exampleShares(sorted);
    const weights = averageWeights(sorted, shares);
    return {
      weights,
      contributors: sorted.map((u) => u.identity),
      shares,
      units: sorted.map((u) => u.numExamples),
      diagnostics: {},
    };
  }
}

/** FedProx (Li et al. 2020): FedAvg on the server; clients add μ/2·||w − w_global||² to their loss (train.proxMu). */
export class FedProx extends FedAvg {
  override readonly id: string = "fedprox";

  constructor(readonly mu = 0.01) {
    super();
  }
}
