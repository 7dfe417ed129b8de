/** Waiting on the chain, shared by clients and the aggregator. */
import type { DpState, FederationLedger, RoundHistory } from "../chain/index.js";
import { epsilonAfter, PrivacyBudgetError } from "../dp/privacy.js";
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

/**
 * ethers codes and socket errors of a connection that failed, as opposed to an answer from the chain: a host or
 * network unreachable is what a cut link gives a new connection (EHOSTUNREACH), a DNS lookup that could not be
 * answered now is EAI_AGAIN (a name that does not exist, ENOTFOUND, is not retried).
 */
export const TRANSIENT_CODES: ReadonlySet<string> = new Set([
  "NETWORK_ERROR",
  "SERVER_ERROR",
  "TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "EHOSTDOWN",
  "ENETUNREACH",
  "ENETDOWN",
  "EPIPE",
  "EAI_AGAIN",
]);

/** Whether `e` is a failure to reach the chain (worth retrying), not a revert or a typed error of ours. */
export function isTransientChainError(e: unknown): boolean {
  if (e instanceof FokError || !(e instanceof Error)) return false;
  const code = (e as { code?: string }).code ?? (e.cause as { code?: string } | undefined)?.code;
  return (code !== undefined && TRANSIENT_CODES.has(code)) || /fetch failed|socket hang up/i.test(e.message);
}

/** The longest wait between retries of a chain that cannot be reached: a round of minutes loses at most this. */
const MAX_RETRY_DELAY_MS = 10_000;

/**
 * Runs `step` until it returns a value other than undefined; a transient chain error is logged and retried after
 * 1, 2, 4, 8, 10, 10 … s (reset after a step that succeeds), any other error ends the loop. The retry loop of clients
 * and the aggregator: a chain endpoint that goes away for a while ends neither.
 */
export async function untilDone<T>(
  step: () => Promise<T | undefined>,
  o: { signal?: AbortSignal; log: (line: string) => void },
): Promise<T | undefined> {
  let failures = 0;
  while (!o.signal?.aborted) {
    try {
      const done = await step();
      if (done !== undefined) return done;
      failures = 0;
    } catch (e) {
      if (!isTransientChainError(e)) throw e;
      const delay = Math.min(MAX_RETRY_DELAY_MS, 1000 * 2 ** failures++);
      o.log(`chain unreachable (${(e as Error).message.split("\n")[0]}); retrying in ${delay / 1000} s`);
      await sleep(delay, o.signal);
    }
  }
  return undefined;
}

/**
 * For a DP task, its settings and the ε it will have spent once `round` is finalized (one more finalized round
 * than those before it); throws PrivacyBudgetError when that is over the budget, so that neither the aggregator nor
 * a client does anything for the round. Null for a task without DP.
 */
export async function roundBudget(
  ledger: FederationLedger,
  task: number,
  round: number,
): Promise<{ dp: DpState; epsilon: number } | null> {
  const dp = await ledger.dp(task);
  if (!dp) return null;
  const before = (await ledger.privacySpent(task)).filter((r) => r.round < round).length;
  const epsilon = epsilonAfter(dp, before + 1);
  if (epsilon > dp.epsilonMax) throw new PrivacyBudgetError(task, round, epsilon, dp.epsilonMax, dp.delta);
  return { dp, epsilon };
}
