/** Waiting on the chain, shared by clients and the aggregator. */
import type { FederationLedger, RoundHistory } from "../chain/index.js";
import { FokError } from "../errors.js";

/** A round cannot go on (it never opened, or too few usable updates by the deadline). */
export class AggregationError extends FokError {}

/**
 * Round `round` once it shows opened, read from its own indexed events. A JSON-RPC provider can answer log queries
 * from a block a little behind the transaction that just opened the round, so this polls for up to `timeoutMs`.
 */
export async function waitForRound(
  ledger: FederationLedger,
  task: number,
  round: number,
  pollMs: number,
  signal?: AbortSignal,
  timeoutMs = 60_000,
): Promise<RoundHistory> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await ledger.readRound(task, round);
    if (r) return r;
    if (Date.now() > until || signal?.aborted) {
      throw new AggregationError(`round ${round} of task ${task} has not opened`);
    }
    await sleep(pollMs, signal);
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}
