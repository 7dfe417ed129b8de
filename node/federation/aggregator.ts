/**
 * The aggregator: opens the task's first round from a shared initial adapter, then for each round waits for the
 * expected updates or the deadline, fetches and verifies every update against its on-chain digest, leaves out any
 * that fail (a revoked or suspended identity, bytes that do not match, an adapter of the wrong shape, a change from
 * the round's start larger than the task's bound), aggregates the rest with the task's strategy, pins the global
 * adapter and finalizes the round on-chain. A round that has too few usable updates at its deadline is closed on
 * chain and the next one opens from the same adapter. Aggregation is deterministic, so a restart after a crash
 * recomputes the same bytes and finalizes exactly once — but for a DP task's central noise, which a restart draws
 * anew (node/dp/privacy.ts: such a task averages uniformly, adds the noise, records the ε spent, and refuses a round
 * beyond its budget).
 */
import { FederationLedger, IdentityStatus, Revert, TaskStatus, isRevert, type RoundHistory } from "../chain/index.js";
import { FokError } from "../errors.js";
import { LoraAdapter, type LoraConfig, type ModelConfig } from "../model/lora.js";
import { adapterByteLimit, parseAdapter, serializeAdapter, type LoraWeights } from "../model/adapter.js";
import {
  unitsToWeights,
  uniformly,
  strategyFor,
  updateNorm,
  TooFewUpdatesError,
  type ClientUpdate,
  type Strategy,
} from "../aggregate/index.js";
import { FetchTimeoutError, NotFoundError, type AdapterStore } from "../store/index.js";
import { sha256Hex } from "../digest.js";
import { AggregationError, roundBudget, sleep, untilDone, waitForRound } from "./rounds.js";
import { addNoise, normalSource, type NormalSource } from "../dp/noise.js";
import { fmtEpsilon, noiseStd } from "../dp/privacy.js";
import { B_ONLY_STRATEGIES } from "../secure/round.js";
import { runSecureRound } from "./secure-aggregator.js";

export interface AggregatorOptions {
  /** The ledger seen through the task aggregator's account. */
  ledger: FederationLedger;
  store: AdapterStore;
  task: number;
  model: ModelConfig;
  lora: LoraConfig;
  baseModelSha256: string;
  /** Defaults to the task's on-chain strategy id. */
  strategy?: Strategy;
  /** Finalize as soon as this many updates are in (default: wait for the deadline). */
  expectedUpdates?: number;
  pollMs?: number;
  log?: (line: string) => void;
  /** Called after each round with the global adapter's bytes (e.g. to evaluate it on held-out data). */
  onGlobal?: (round: number, bytes: Uint8Array) => Promise<void>;
  /**
   * A DP task's central noise: 32 bytes that make it reproducible (simulations such as the experiment only — anyone
   * with the seed can subtract the noise). Default: fresh randomness from the operating system.
   */
  noiseSeed?: Uint8Array;
}

export interface RoundReport {
  round: number;
  globalCid: string;
  globalSha256: string;
  contributors: number[];
  weights: bigint[];
  excluded: { identity: number; reason: string }[];
  /** Identities whose updates no peer served in time: declared on-chain (`UpdatesUnavailable`) and left out. */
  unavailable: number[];
  diagnostics: Record<string, number>;
  timings: { fetchVerifyMs: number; aggregateMs: number; pinMs: number; finalizeMs: number };
}

export { AggregationError };

export class Aggregator {
  /** The largest adapter of the task's model and LoRA config. */
  private readonly maxAdapterBytes: number;
  private start: { cid: string; weights: LoraWeights } | null = null;
  private readonly normals: NormalSource;

  constructor(private readonly o: AggregatorOptions) {
    this.maxAdapterBytes = adapterByteLimit(o.model, o.lora);
    this.normals = normalSource(o.noiseSeed);
  }

  private log(line: string) {
    this.o.log?.(line);
  }

  /** Publishes the initial adapter (A seeded, B = 0: the base model exactly) and opens round 1. */
  async openFirstRound(seed = 42): Promise<string> {
    const init = LoraAdapter.init(this.o.model, this.o.lora, seed);
    const bytes = serializeAdapter(this.o.model, this.o.lora, await init.exportWeights(), {
      kind: "init",
      task: this.o.task,
      round: 0,
      baseModelSha256: this.o.baseModelSha256,
    });
    init.dispose();
    return this.openFirstRoundFrom(bytes);
  }

  /** Pins `bytes` (an initial adapter made elsewhere, e.g. shared by several runs) and opens round 1 from it. */
  async openFirstRoundFrom(bytes: Uint8Array): Promise<string> {
    const cid = await this.o.store.add(bytes);
    await this.o.ledger.openFirstRound(this.o.task, cid, sha256Hex(bytes));
    this.log(`round 1 opened from initial adapter ${cid}`);
    return cid;
  }

  private async strategy(): Promise<Strategy> {
    if (this.o.strategy) return this.o.strategy;
    return strategyFor((await this.o.ledger.taskInfo(this.o.task)).strategy);
  }

  /** The round's start adapter, parsed once per round (collect runs again while the aggregator waits for more). */
  private async startWeights(round: RoundHistory): Promise<LoraWeights> {
    if (this.start?.cid !== round.startCid) {
      const get = { expectedSha256: round.startSha256, maxBytes: this.maxAdapterBytes };
      const bytes = await this.o.store.get(round.startCid, get);
      this.start = { cid: round.startCid, weights: parseAdapter(bytes, this.o.model, this.o.lora).weights };
    }
    return this.start.weights;
  }

  /**
   * Fetches, verifies and parses the round's updates, leaving out those whose change from the round's start exceeds
   * `maxUpdateNorm`; each failure is a reason, not an exception.
   */
  async collect(
    round: RoundHistory,
    maxUpdateNorm: number,
  ): Promise<{ updates: ClientUpdate[]; excluded: RoundReport["excluded"]; unavailable: number[] }> {
    const updates: ClientUpdate[] = [];
    const excluded: RoundReport["excluded"] = [];
    const unavailable: number[] = [];
    const maxBytes = this.maxAdapterBytes;
    const start = await this.startWeights(round);
    for (const s of round.submissions) {
      try {
        const { status } = await this.o.ledger.identityRecord(s.identity);
        if (status !== IdentityStatus.Active) throw new FokError(`identity is ${IdentityStatus[status]}`);
        const bytes = await this.o.store.get(s.cid, { expectedSha256: s.adapterSha256, maxBytes });
        const parsed = parseAdapter(bytes, this.o.model, this.o.lora);
        if (parsed.metadata.baseModelSha256 !== this.o.baseModelSha256)
          throw new FokError(`adapter is for base model ${parsed.metadata.baseModelSha256}`);
        const norm = updateNorm(parsed.weights, start, s.identity);
        if (!(norm <= maxUpdateNorm))
          throw new FokError(`update norm ${norm.toFixed(6)} exceeds the task's bound ${maxUpdateNorm}`);
        const refused = (await this.strategy()).validate?.(parsed.weights, start);
        if (refused) throw new FokError(refused);
        updates.push({ identity: s.identity, numExamples: s.numExamples, weights: parsed.weights });
      } catch (e) {
        excluded.push({ identity: s.identity, reason: `${(e as Error).name}: ${(e as Error).message}` });
        // no peer served the bytes (the hospital offline, a partition): declared on-chain before finalizing
        if (e instanceof FetchTimeoutError || e instanceof NotFoundError) unavailable.push(s.identity);
        this.log(`round ${round.round}: left out identity ${s.identity}: ${(e as Error).message}`);
      }
    }
    return { updates, excluded, unavailable };
  }

  /**
   * Waits for the round's updates, aggregates and finalizes it; returns null if it was already finalized or closed,
   * or when it closes it for too few usable updates at the deadline.
   */
  async finalize(roundNumber: number, signal?: AbortSignal): Promise<RoundReport | null> {
    const { ledger, task } = this.o;
    // a DP task whose budget this round would exceed: PrivacyBudgetError, before anything is done for it
    const budget = await roundBudget(ledger, task, roundNumber);
    const privacy = await ledger.privacy(task);
    if (privacy.mode === "secure") return this.finalizeSecure(roundNumber, privacy.threshold, budget, signal);
    const { minUpdates, maxUpdateNorm } = await ledger.taskInfo(task);
    let awaited = this.o.expectedUpdates ?? Infinity;
    let t0: number, t1: number, collected: Awaited<ReturnType<Aggregator["collect"]>>;
    for (;;) {
      const round = await this.awaitSubmissions(roundNumber, awaited, signal);
      if (!round) return null;
      t0 = performance.now();
      collected = await this.collect(round, maxUpdateNorm);
      t1 = performance.now();
      if (collected.updates.length >= minUpdates) break;
      const usable = `${collected.updates.length} usable updates, the task needs ${minUpdates}`;
      if (signal?.aborted) {
        throw new AggregationError(`round ${roundNumber}: ${usable}`, {
          cause: new TooFewUpdatesError(collected.updates.length, minUpdates),
        });
      }
      if ((await ledger.chainTime()) > round.deadline) {
        if (collected.unavailable.length) await this.declareUnavailable(roundNumber, collected.unavailable);
        await this.close(round, usable);
        return null;
      }
      // an update that cannot be used does not end the round: wait for more until the deadline
      this.log(`round ${roundNumber}: ${usable}; waiting for more submissions until the deadline`);
      awaited = round.submissions.length + 1;
    }
    const { updates, excluded, unavailable } = collected;
    if (unavailable.length) await this.declareUnavailable(roundNumber, unavailable);
    const strategy = await this.strategy();
    const ctx = { scale: this.o.lora.alpha / this.o.lora.r, r: this.o.lora.r };
    // DP: the uniform average of the clipped updates, plus N(0, (σC)²) on their sum, i.e. (σC/n)² on the average
    const result = budget ? strategy.aggregate(uniformly(updates), ctx) : strategy.aggregate(updates, ctx);
    const global = budget
      ? addNoise(
          result.weights,
          noiseStd(budget.dp, maxUpdateNorm, "central", minUpdates) / result.contributors.length,
          B_ONLY_STRATEGIES.has(strategy.id),
          this.normals,
        )
      : result.weights;
    const bytes = serializeAdapter(this.o.model, this.o.lora, global, {
      kind: "global",
      task,
      round: roundNumber,
      baseModelSha256: this.o.baseModelSha256,
      strategy: strategy.id,
    });
    const t2 = performance.now();
    const cid = await this.o.store.add(bytes);
    const t3 = performance.now();
    const weights = unitsToWeights(result.units);
    const digest = sha256Hex(bytes);
    try {
      const { contributors } = result;
      await ledger.finalizeRound(task, roundNumber, cid, digest, contributors, weights, strategy.id, budget?.epsilon);
    } catch (e) {
      if (isRevert(e, Revert.RoundNotOpen)) return null; // finalized meanwhile
      throw e;
    }
    const t4 = performance.now();
    const spent = budget ? ` (DP: ε ${fmtEpsilon(budget.epsilon)} of ${budget.dp.epsilonMax} spent)` : "";
    this.log(
      `round ${roundNumber}: ${strategy.id} over identities [${result.contributors.join(", ")}] → ${cid}${spent}`,
    );
    await this.o.onGlobal?.(roundNumber, bytes);
    return {
      round: roundNumber,
      globalCid: cid,
      globalSha256: digest,
      contributors: result.contributors,
      weights,
      excluded,
      unavailable,
      diagnostics: result.diagnostics,
      timings: { fetchVerifyMs: t1 - t0, aggregateMs: t2 - t1, pinMs: t3 - t2, finalizeMs: t4 - t3 },
    };
  }

  /**
   * Records on-chain that these identities' updates could not be fetched, before the round is finalized without
   * them: the one exclusion verify cannot re-derive from bytes, so it is public and counted (README, threat model).
   */
  private async declareUnavailable(round: number, identities: number[]): Promise<void> {
    try {
      await this.o.ledger.declareUnavailable(this.o.task, round, identities);
    } catch (e) {
      if (isRevert(e, Revert.RoundNotOpen)) return; // finalized meanwhile: finalizeRound says so next
      throw e;
    }
    this.log(`round ${round}: declared on-chain that the updates of [${identities.join(", ")}] were unavailable`);
  }

  /** A secure round: phases, unmasking and finalization (secure-aggregator.ts). */
  private async finalizeSecure(
    round: number,
    threshold: number,
    budget: Awaited<ReturnType<typeof roundBudget>>,
    signal?: AbortSignal,
  ): Promise<RoundReport | null> {
    const t0 = performance.now();
    const r = await runSecureRound(
      {
        ...this.o,
        threshold,
        budget,
        expected: this.o.expectedUpdates,
        pollMs: this.o.pollMs ?? 500,
        startWeights: (h) => this.startWeights(h),
        log: (l) => this.log(l),
      },
      round,
      signal,
    );
    if (r.kind !== "finalized") return null;
    await this.o.onGlobal?.(round, r.bytes);
    const ms = performance.now() - t0;
    return {
      round,
      globalCid: r.cid,
      globalSha256: r.sha,
      contributors: r.contributors,
      weights: r.weights,
      excluded: [],
      unavailable: [],
      diagnostics: {},
      // not split by step: the whole secure round, its phases' waiting included (npm run bench:secure splits it)
      timings: { fetchVerifyMs: 0, aggregateMs: ms, pinMs: 0, finalizeMs: 0 },
    };
  }

  /**
   * Closes a round that cannot reach its minimum: on chain, so that the next round opens from the same adapter
   * (and verify can check that it really had too few valid updates).
   */
  private async close(round: RoundHistory, why: string): Promise<void> {
    try {
      await this.o.ledger.closeRound(this.o.task, round.round, round.startCid);
    } catch (e) {
      if (isRevert(e, Revert.RoundNotOpen)) return; // finalized or closed meanwhile
      throw e;
    }
    this.log(`round ${round.round}: closed without a global adapter (${why}); the next round starts from the same one`);
  }

  /**
   * The round once the expected updates are in or its deadline has passed on the chain's clock (or `signal`
   * aborts); null when it is already finalized. Polls the round's own events only.
   */
  private async awaitSubmissions(roundNumber: number, expected: number, signal?: AbortSignal) {
    const { ledger, task } = this.o;
    let round = await waitForRound(ledger, task, roundNumber, this.o.pollMs ?? 500, signal);
    while (!round.finalized && !round.closed && round.submissions.length < expected && !signal?.aborted) {
      if ((await ledger.chainTime()) > round.deadline) break;
      await sleep(this.o.pollMs ?? 500, signal);
      round = (await ledger.readRound(task, roundNumber)) ?? round;
    }
    return round.finalized || round.closed ? null : round;
  }

  /** Finalizes rounds as they come until the task completes. */
  async run(signal?: AbortSignal): Promise<RoundReport[]> {
    const reports: RoundReport[] = [];
    const pollMs = this.o.pollMs ?? 500;
    const step = async (): Promise<true | undefined> => {
      const info = await this.o.ledger.taskInfo(this.o.task);
      if (info.status === TaskStatus.Completed) return true;
      if (info.status === TaskStatus.Open) {
        const r = await this.finalize(info.currentRound, signal);
        if (r) reports.push(r);
      } else await sleep(pollMs, signal);
      return undefined;
    };
    await untilDone(step, { signal, log: (l) => this.log(l) });
    return reports;
  }
}
