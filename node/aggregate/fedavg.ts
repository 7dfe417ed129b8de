/** FedAvg (McMahan et al. 2017) on LoRA: A and B averaged separately, weighted by examples — what most systems do. */
import {
  exampleWeightedMean,
  type AggregateResult,
  type ClientUpdate,
  type Strategy,
  type StrategyContext,
} from "./types.js";

export class FedAvg implements Strategy {
  readonly id: string = "fedavg";

  aggregate(updates: ClientUpdate[], _ctx?: StrategyContext): AggregateResult {
    return exampleWeightedMean(updates);
  }

  replay(listed: ClientUpdate[], ctx: StrategyContext): AggregateResult {
    return this.aggregate(listed, ctx);
  }
}

/** FedProx (Li et al. 2020): FedAvg on the server; clients add μ/2·||w − w_global||² to their loss (train.proxMu). */
export class FedProx extends FedAvg {
  override readonly id: string = "fedprox";

  constructor(readonly mu = 0.01) {
    super();
  }
}
