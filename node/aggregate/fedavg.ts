/** FedAvg (McMahan et al. 2017) on LoRA: A and B averaged separately, weighted by examples — what most systems do. */
import type { LoraWeights } from "../model/adapter.js";
import {
  UpdateMismatchError,
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

/**
 * FFA-LoRA (Sun et al., ICLR 2024): every client keeps A frozen at the task's seeded initialisation (the initial
 * adapter, on-chain) and trains B only, so the average of the B's with the one shared A is exactly the average of
 * the updates A·B — no aggregation error — and only B needs to travel (secure mode masks B only).
 */
export class FfaLora extends FedAvg {
  override readonly id: string = "ffa-lora";

  override aggregate(updates: ClientUpdate[], ctx?: StrategyContext): AggregateResult {
    const mean = super.aggregate(updates, ctx);
    const first = updates[0]!.weights;
    for (const u of updates.slice(1)) {
      for (const [m, w] of u.weights) {
        if (!w.A.every((x, i) => x === first.get(m)!.A[i]))
          throw new UpdateMismatchError(u.identity, `module ${m}: A differs from the others'; FFA-LoRA keeps A frozen`);
      }
    }
    // the one shared A exactly (a weighted mean of equal values need not round back to them)
    const weights = new Map([...mean.weights].map(([m, w]) => [m, { A: Float32Array.from(first.get(m)!.A), B: w.B }]));
    return { ...mean, weights };
  }

  validate(update: LoraWeights, start: LoraWeights): string | null {
    for (const [m, s] of start) {
      const A = update.get(m)?.A;
      if (!A || !A.every((x, i) => x === s.A[i])) return `module ${m}: A changed; FFA-LoRA keeps A frozen`;
    }
    return null;
  }
}

/** FedProx (Li et al. 2020): FedAvg on the server; clients add μ/2·||w − w_global||² to their loss (train.proxMu). */
export class FedProx extends FedAvg {
  override readonly id: string = "fedprox";

  constructor(readonly mu = 0.01) {
    super();
  }
}
