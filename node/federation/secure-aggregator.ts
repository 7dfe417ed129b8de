/**
 * The aggregator's side of a secure round: it moves the round through its phases on-chain (keys → shares → masked
 * → reveal) when every identity that did the previous step did the next one, or when that phase's share of the
 * round's time is up (a quarter for keys, a quarter for shares, the rest until the deadline for masked updates);
 * then it unmasks the survivors' sum from public data (node/secure/round.ts, the code `fok verify` re-runs),
 * publishes the global adapter and finalizes over exactly the survivors with weights in proportion to their
 * claimed examples (uniform in a DP task, whose clients added their shares of the noise before masking). A round
 * that cannot go on (too few keys, shares or updates by the deadline; a secret that cannot be reconstructed once
 * every survivor revealed) is closed on-chain.
 */
import {
  isRevert,
  Revert,
  SecurePhase,
  type FederationLedger,
  type RoundHistory,
  type SecureRoundInfo,
  type DpState,
  type TaskInfo,
} from "../chain/index.js";
import { sha256Hex } from "../digest.js";
import { unitsToWeights } from "../aggregate/index.js";
import { serializeAdapter, type LoraWeights } from "../model/adapter.js";
import type { LoraConfig, ModelConfig } from "../model/lora.js";
import type { AdapterStore } from "../store/index.js";
import { SecureDataError } from "../secure/ring.js";
import { B_ONLY_STRATEGIES, gatherSecureRound, secureAggregate, secureBlobLimit, secureSpec } from "../secure/round.js";
import { sleep } from "./rounds.js";

export interface SecureAggregatorContext {
  ledger: FederationLedger;
  store: AdapterStore;
  task: number;
  model: ModelConfig;
  lora: LoraConfig;
  baseModelSha256: string;
  threshold: number;
  /** A DP task's settings and the ε this round will have spent (null: no DP). */
  budget: { dp: DpState; epsilon: number } | null;
  /** Move on as soon as this many identities did a step (default: every one that did the step before). */
  expected?: number;
  pollMs: number;
  startWeights: (round: RoundHistory) => Promise<LoraWeights>;
  log: (line: string) => void;
}

export type SecureRoundResult =
  | { kind: "finalized"; cid: string; sha: string; bytes: Uint8Array; contributors: number[]; weights: bigint[] }
  | { kind: "closed" | "gone" };

/** Drives one secure round to its end. */
export async function runSecureRound(c: SecureAggregatorContext, round: number, signal?: AbortSignal) {
  for (;;) {
    if (signal?.aborted) return { kind: "gone" } as const;
    const info = await c.ledger.taskInfo(c.task);
    const hist = await c.ledger.readRound(c.task, round);
    if (!hist || hist.finalized || hist.closed || info.currentRound !== round) return { kind: "gone" } as const;
    const sr = await c.ledger.secureRound(c.task, round);
    const now = await c.ledger.chainTime();
    if (sr.phase === SecurePhase.Reveal) {
      const done = await tryFinalize(c, info, hist, sr, now);
      if (done) return done;
    } else {
      const moved = await tryAdvance(c, info, hist, sr, now);
      if (moved === "closed") return { kind: "closed" } as const;
      if (moved) continue;
    }
    await sleep(c.pollMs, signal);
  }
}

/** Advances the phase when its step is complete or its time is up; closes a round that fell short. */
async function tryAdvance(
  c: SecureAggregatorContext,
  info: TaskInfo,
  hist: RoundHistory,
  sr: SecureRoundInfo,
  now: number,
): Promise<boolean | "closed"> {
  const opened = hist.deadline - info.roundDuration;
  const [done, before, required, until] =
    sr.phase === SecurePhase.Keys
      ? [sr.keys, c.expected ?? Infinity, c.threshold, opened + info.roundDuration / 4]
      : sr.phase === SecurePhase.Shares
        ? [sr.dealt, sr.keys, c.threshold, opened + info.roundDuration / 2]
        : [sr.masked, sr.dealt, info.minUpdates, hist.deadline];
  const complete = done >= Math.min(before, c.expected ?? Infinity) || now > until;
  if (!complete) return false;
  if (done < required) {
    if (now <= hist.deadline) return false; // perhaps more come before the deadline
    return close(c, hist, `${done} did phase ${SecurePhase[sr.phase]}, ${required} needed`);
  }
  await c.ledger.advancePhase(c.task, hist.round);
  c.log(`round ${hist.round}: ${done} did phase ${SecurePhase[sr.phase]}; now ${SecurePhase[sr.phase + 1]}`);
  return true;
}

/** Unmasks and finalizes once every survivor revealed (or the threshold did and the deadline passed). */
async function tryFinalize(
  c: SecureAggregatorContext,
  info: TaskInfo,
  hist: RoundHistory,
  sr: SecureRoundInfo,
  now: number,
): Promise<SecureRoundResult | null> {
  const allIn = sr.revealed >= sr.masked;
  if (!allIn && !(sr.revealed >= c.threshold && now > hist.deadline)) return null;
  const start = await c.startWeights(hist);
  const spec = secureSpec(info, c.task, hist.round, c.threshold, start, c.budget?.dp ?? null);
  hist.secure = await c.ledger.readSecureRound(c.task, hist.round);
  const fetch = async (what: string, identity: number, cid: string, digest: string) => {
    try {
      return await c.store.get(cid, { expectedSha256: digest, maxBytes: secureBlobLimit(spec) });
    } catch (e) {
      c.log(`round ${hist.round}: ${what} of identity ${identity} unusable: ${(e as Error).message}`);
      return null;
    }
  };
  const { pub, problems } = await gatherSecureRound(spec, hist, fetch);
  for (const p of problems) c.log(`round ${hist.round}: identity ${p.identity}: ${p.check}: ${p.detail}`);
  let agg;
  try {
    agg = await secureAggregate(pub, spec, hist, start, B_ONLY_STRATEGIES.has(info.strategy));
  } catch (e) {
    if (!(e instanceof SecureDataError)) throw e;
    if (!allIn) return null; // more reveals may still come
    c.log(`round ${hist.round}: cannot unmask: ${e.message}`);
    return (await close(c, hist, e.message)) ? { kind: "closed" } : null;
  }
  for (const p of agg.revealProblems)
    c.log(`round ${hist.round}: reveal of identity ${p.revealer} not used: ${p.problem}`);
  const bytes = serializeAdapter(c.model, c.lora, agg.weights, {
    kind: "global",
    task: c.task,
    round: hist.round,
    baseModelSha256: c.baseModelSha256,
    strategy: info.strategy,
  });
  const cid = await c.store.add(bytes);
  const sha = sha256Hex(bytes);
  const weights = unitsToWeights(agg.units);
  try {
    const epsilon = c.budget?.epsilon;
    await c.ledger.finalizeRound(c.task, hist.round, cid, sha, agg.contributors, weights, info.strategy, epsilon);
  } catch (e) {
    if (isRevert(e, Revert.RoundNotOpen)) return { kind: "gone" };
    throw e;
  }
  c.log(`round ${hist.round}: unmasked the sum of [${agg.contributors.join(", ")}] → ${cid}`);
  return { kind: "finalized", cid, sha, bytes, contributors: agg.contributors, weights };
}

async function close(c: SecureAggregatorContext, hist: RoundHistory, why: string): Promise<"closed" | false> {
  if ((await c.ledger.chainTime()) <= hist.deadline) return false;
  try {
    await c.ledger.closeRound(c.task, hist.round, hist.startCid);
  } catch (e) {
    if (isRevert(e, Revert.RoundNotOpen)) return "closed";
    throw e;
  }
  c.log(`round ${hist.round}: closed without a global adapter (${why})`);
  return "closed";
}
