/**
 * `fok verify`: checks a task's whole provenance trusting nothing but the chain and the bytes. It re-reads every
 * event, fetches every adapter by CID and checks its sha256 against the chain, checks each submitter was an active
 * identity when it submitted and each relayed signature, checks each round was finalized under the task's strategy,
 * re-runs each round's aggregation as the strategy declares (`Strategy.replay`) on the listed contributors' updates
 * with the recorded weights and compares the result byte for byte with the published global adapter, and checks the
 * lineage (round 1 starts from an initial adapter of the task's base model that changes nothing, every later round
 * from the previous global adapter, or where the previous round started when that one was closed without one), that
 * every update's change from its round's start is within the task's bound, and that a round closed without a global
 * adapter really had fewer valid updates than the minimum. One result per check; any failure names round, identity
 * and check.
 */
import { sha256Hex } from "../digest.js";
import { verifySecureRound } from "./verify-secure.js";
import { checkNoise } from "../dp/noise.js";
import { epsilonAfter, fmtEpsilon } from "../dp/privacy.js";
import { B_ONLY_STRATEGIES } from "../secure/round.js";
import { uniformly } from "../aggregate/index.js";
import { SecureConfigError } from "../secure/ring.js";
import { weightShare } from "../weights.js";
import {
  FederationLedger,
  IdentityStatus,
  IdentityTimeline,
  decodeStrategy,
  type FinalizedRound,
  type RoundHistory,
  type SubmittedUpdate,
  type TaskHistory,
} from "../chain/index.js";
import {
  adapterByteLimit,
  parseAdapter,
  serializeAdapter,
  type LoraWeights,
  type ParsedAdapter,
} from "../model/adapter.js";
import { loraConfigHash, type LoraConfig, type ModelConfig } from "../model/lora.js";
import {
  flattenWeights,
  strategyFor,
  updateNorm,
  unitsToWeights,
  type AggregateResult,
  type ClientUpdate,
  type Strategy,
} from "../aggregate/index.js";

export interface Check {
  round: number | null;
  identity: number | null;
  check: string;
  ok: boolean;
  detail: string;
  /** A fact verify cannot check (an aggregator's claim that an update was unavailable): printed NOTE, not failing. */
  note?: true;
}

export interface ContributionFigure {
  round: number;
  identity: number;
  weightShare: number;
  /** Held-out loss of the global adapter minus that of the same aggregation without this contributor (negative:
   * the contributor helped). Only with `heldOut`. */
  leaveOneOutDelta?: number;
  /** ‖update − start‖ over every A and B value. */
  updateNorm: number;
  /** Cosine between (update − start) and (global − start). */
  cosineToAggregate: number;
}

export interface VerifyReport {
  task: number;
  checks: Check[];
  contributions: ContributionFigure[];
  ok: boolean;
}

/** What verification reads bytes through: any store; the digest is checked here, not trusted from it. */
export interface ByteSource {
  get(cid: string, options?: { maxBytes?: number }): Promise<Uint8Array>;
}

export interface VerifyOptions {
  model: ModelConfig;
  lora: LoraConfig;
  /** Only this round (lineage still checks its start). */
  round?: number;
  /**
   * The base model as the verifier holds it on disk (its sha256, computed as it was loaded): checked against the
   * task's digest instead of fetching the base's bytes by CID, which nobody may be serving.
   */
  localBase?: { sha256: string; where: string };
  /** Held-out tokens and a loss function over adapter weights: adds each contributor's leave-one-out effect. */
  heldOut?: { loss: (weights: LoraWeights) => Promise<number> };
}

/** Where the next round must start: the previous round's global adapter, or its start when it was closed. */
type Head = { cid: string; sha: string; closed: boolean };

/** A submitted update whose bytes matched its digest and parsed, with the base model its metadata names. */
type ParsedUpdate = ClientUpdate & { base: string; withinBound: boolean };

export async function verifyTask(
  ledger: FederationLedger,
  store: ByteSource,
  task: number,
  o: VerifyOptions,
): Promise<VerifyReport> {
  const history = await ledger.readTaskHistory(task);
  if (history.privacy === "secure" && o.heldOut) {
    throw new SecureConfigError(
      `task ${task} is secure: per-client contribution figures need single updates, which it never reveals`,
    );
  }
  // identity status at past blocks from the registry's events: verify needs no archive node
  const timeline = new IdentityTimeline(await ledger.readIdentities());
  const v = new Verification(ledger, store, history, o, timeline);
  // the base model may be as large as the store allows; every other blob verify reads is an adapter
  const h = v.history;
  if (o.localBase) v.localBase(o.localBase);
  else await v.fetchVerified(null, null, "base model", h.baseModelCid, h.baseModelSha256, Number.POSITIVE_INFINITY);
  v.loraConfig();
  v.privacySpent();
  let previous: Head | null = null;
  for (const round of v.history.rounds) {
    if (o.round === undefined || round.round === o.round) await v.round(round, previous);
    const fin = round.finalized;
    if (fin) previous = { cid: fin.globalCid, sha: fin.globalSha256, closed: false };
    else if (round.closed) previous = { cid: round.startCid, sha: round.startSha256, closed: true };
    else previous = null;
  }
  return { task, checks: v.checks, contributions: v.contributions, ok: v.checks.every((c) => c.ok) };
}

/** The checks of one task, gathered step by step. */
class Verification {
  readonly checks: Check[] = [];
  readonly contributions: ContributionFigure[] = [];
  /** The largest adapter of the model and LoRA config verify parses with (set on the first adapter read). */
  private maxAdapterBytes?: number;
  /** The task's strategy, or why verify cannot run it (an unknown name fails the aggregate check, never throws). */
  private readonly strategy: Strategy | Error;

  constructor(
    private readonly ledger: FederationLedger,
    private readonly store: ByteSource,
    readonly history: TaskHistory,
    private readonly o: VerifyOptions,
    private readonly identities: IdentityTimeline,
  ) {
    try {
      this.strategy = strategyFor(history.strategy);
    } catch (e) {
      this.strategy = e as Error;
    }
  }

  private add(round: number | null, identity: number | null, check: string, ok: boolean, detail: string) {
    this.checks.push({ round, identity, check, ok, detail });
  }

  private note(round: number, identity: number, check: string, detail: string) {
    this.checks.push({ round, identity, check, ok: true, detail, note: true });
  }

  /**
   * The bytes of `cid` if they hash to `sha` (a check either way); null when they do not or cannot be read. At most
   * `maxBytes` are read: by default the adapter size limit of the task's model and LoRA config.
   */
  async fetchVerified(
    round: number | null,
    identity: number | null,
    what: string,
    cid: string,
    sha: string,
    maxBytes?: number,
    unreadable?: (why: string) => void,
  ) {
    try {
      // computed once, inside the try: a LoRA config the model cannot take fails this check, as parsing would
      this.maxAdapterBytes ??= adapterByteLimit(this.o.model, this.o.lora);
      const bytes = await this.store.get(cid, { maxBytes: maxBytes ?? this.maxAdapterBytes });
      const got = sha256Hex(bytes);
      const ok = got === sha;
      this.add(
        round,
        identity,
        `${what} digest`,
        ok,
        ok ? `${cid} matches ${sha.slice(0, 12)}…` : `${cid} has sha256 ${got}, chain says ${sha}`,
      );
      return ok ? bytes : null;
    } catch (e) {
      if (unreadable) unreadable((e as Error).message);
      else this.add(round, identity, `${what} digest`, false, `${cid} could not be read: ${(e as Error).message}`);
      return null;
    }
  }

  /** The verifier's own copy of the base model hashes to the task's digest. */
  localBase(b: { sha256: string; where: string }): void {
    const ok = b.sha256 === this.history.baseModelSha256;
    const want = this.history.baseModelSha256;
    this.add(
      null,
      null,
      "base model digest",
      ok,
      `the base model at ${b.where} has sha256 ${b.sha256}, the task's is ${want}`,
    );
  }

  /** The LoRA config verify parses adapters with is the one the task committed to (its hash on-chain). */
  loraConfig(): void {
    const got = loraConfigHash(this.o.lora);
    const ok = got === this.history.loraConfigHash;
    const lora = JSON.stringify(this.o.lora);
    this.add(
      null,
      null,
      "LoRA config",
      ok,
      ok ? `${lora} is the task's` : `${lora} hashes to ${got}, the task's is ${this.history.loraConfigHash}`,
    );
  }

  /** Lineage, every submission, then (once finalized) strategy, contributors, aggregate and contribution figures. */
  async round(round: RoundHistory, previous: Head | null): Promise<void> {
    const start = await this.lineage(round, previous);
    if (this.history.privacy === "secure") return this.secureRound(round, start);
    const excused = excusedUpdates(round);
    const updates = await this.submissions(round, start, excused);
    if (round.closed) await this.closedRound(round, updates, excused);
    const fin = round.finalized;
    if (!fin) return;
    this.strategyOfRound(round.round, fin);
    this.contributorsSubmitted(round, fin);
    const picked = await this.contributorSet(round.round, fin, updates, excused);
    const globalBytes = await this.fetchVerified(round.round, null, "global adapter", fin.globalCid, fin.globalSha256);
    const listed = fin.contributors.map((id) => updates.get(id)).filter((u): u is ParsedUpdate => Boolean(u));
    if (listed.length !== fin.contributors.length || !globalBytes) {
      this.add(
        round.round,
        null,
        "aggregate",
        false,
        "cannot re-run the aggregation: an update or the global adapter is missing",
      );
      return;
    }
    const global = safeParse(globalBytes, this.o);
    const strategy = this.replayAggregate(round.round, fin, listed, picked, global);
    if (strategy && start && global) await this.contributionFigures(round.round, fin, start, global, listed, strategy);
  }

  /** A secure round: submitters, strategy, then the checks from public data only (verify-secure.ts). */
  private async secureRound(round: RoundHistory, start: ParsedAdapter | null): Promise<void> {
    for (const s of round.submissions) await this.submitter(s);
    const fin = round.finalized;
    if (fin) this.strategyOfRound(round.round, fin);
    const view = {
      history: this.history,
      model: this.o.model,
      lora: this.o.lora,
      add: this.add.bind(this),
      fetchVerified: this.fetchVerified.bind(this),
    };
    await verifySecureRound(view, round, start);
    if (fin) await this.fetchVerified(round.round, null, "global adapter", fin.globalCid, fin.globalSha256);
  }

  /** Round 1 starts from an unchanged initialisation of the base; later rounds from the previous global adapter. */
  private async lineage(round: RoundHistory, previous: Head | null): Promise<ParsedAdapter | null> {
    const r = round.round;
    const start = await this.fetchVerified(r, null, "start adapter", round.startCid, round.startSha256);
    if (r !== 1) {
      const ok = previous !== null && previous.cid === round.startCid && previous.sha === round.startSha256;
      const from = previous?.closed ? `where round ${r - 1} (closed) started` : `round ${r - 1}'s global adapter`;
      this.add(
        r,
        null,
        "lineage",
        ok,
        ok ? `starts from ${from}` : `starts from ${round.startCid}, not ${from} ${previous?.cid ?? "(none)"}`,
      );
      return start && safeParse(start, this.o);
    }
    if (!start) return null;
    try {
      const parsed = parseAdapter(start, this.o.model, this.o.lora);
      const base = this.history.baseModelSha256;
      const zeroB = [...parsed.weights.values()].every((w) => w.B.every((x) => x === 0));
      const ok = parsed.metadata.kind === "init" && parsed.metadata.baseModelSha256 === base && zeroB;
      this.add(
        1,
        null,
        "lineage",
        ok,
        ok
          ? "round 1 starts from an initial adapter of the task's base model (B = 0)"
          : `round 1's start adapter is not an unchanged initialisation of base ${base} ` +
              `(kind ${parsed.metadata.kind}, base ${parsed.metadata.baseModelSha256}, B all zero: ${zeroB})`,
      );
      return parsed;
    } catch (e) {
      this.add(1, null, "lineage", false, `start adapter does not parse: ${(e as Error).message}`);
      return null;
    }
  }

  /**
   * Each submitter's identity, relayed signature, bytes, format, metrics and update norm; the parsed updates by
   * identity (`withinBound` false for one whose change from the start exceeds the task's bound).
   */
  private async submissions(
    round: RoundHistory,
    start: ParsedAdapter | null,
    excused: Map<number, number>,
  ): Promise<Map<number, ParsedUpdate>> {
    const updates = new Map<number, ParsedUpdate>();
    for (const s of round.submissions) {
      await this.submitter(s);
      const declared = excused.get(s.identity);
      // an update the aggregator declared unavailable and left out may be gone for good: not a failure to find it
      const gone =
        declared === undefined
          ? undefined
          : (why: string) =>
              this.note(
                round.round,
                s.identity,
                "availability",
                unavailableNote(declared, `not readable now (${why})`),
              );
      const bytes = await this.fetchVerified(
        round.round,
        s.identity,
        "update",
        s.cid,
        s.adapterSha256,
        undefined,
        gone,
      );
      if (declared !== undefined && bytes)
        this.note(round.round, s.identity, "availability", unavailableNote(declared, "readable now"));
      if (!bytes) continue;
      const parsed = safeParse(bytes, this.o);
      if (!parsed) {
        this.add(round.round, s.identity, "update format", false, "adapter does not parse as the task's LoRA layout");
        continue;
      }
      const metrics = parsed.metadata.metrics;
      const ok = metrics !== undefined && sha256Hex(metrics) === s.metricsDigest;
      this.add(
        round.round,
        s.identity,
        "metrics digest",
        ok,
        ok
          ? "metrics in the adapter match the on-chain digest"
          : "metrics in the adapter do not match the on-chain digest",
      );
      const base = parsed.metadata.baseModelSha256;
      const withinBound = start ? this.normBound(s, parsed, start) && this.strategyRule(s, parsed, start) : false;
      const u = { identity: s.identity, numExamples: s.numExamples, weights: parsed.weights, base, withinBound };
      updates.set(s.identity, u);
    }
    return updates;
  }

  /** ‖update − start‖ is within the task's bound (what the aggregator requires of a usable update). */
  private normBound(s: SubmittedUpdate, parsed: ParsedAdapter, start: ParsedAdapter): boolean {
    const bound = this.history.maxUpdateNorm;
    let norm: number;
    try {
      norm = updateNorm(parsed.weights, start.weights, s.identity);
    } catch (e) {
      this.add(s.round, s.identity, "update norm", false, (e as Error).message);
      return false;
    }
    const ok = norm <= bound;
    const detail = `‖update − start‖ = ${norm.toFixed(6)}, the task's bound is ${bound}`;
    this.add(s.round, s.identity, "update norm", ok, detail);
    return ok;
  }

  /** The update keeps the task strategy's rule (FFA-LoRA: A unchanged); strategies without one pass silently. */
  private strategyRule(s: SubmittedUpdate, parsed: ParsedAdapter, start: ParsedAdapter): boolean {
    const strategy = this.strategy;
    if (strategy instanceof Error || !strategy.validate) return true;
    const refused = strategy.validate(parsed.weights, start.weights);
    this.add(s.round, s.identity, "strategy rule", refused === null, refused ?? `keeps ${strategy.id}'s rule`);
    return refused === null;
  }

  /**
   * The valid updates (see contributorSet) as of `blockNumber`: the ones an honest aggregator must use, less those
   * it declared unavailable and left out (`excused`).
   */
  private async validUpdates(
    updates: Map<number, ParsedUpdate>,
    blockNumber: number,
    excused: Map<number, number>,
  ): Promise<ClientUpdate[]> {
    const valid: ClientUpdate[] = [];
    for (const u of updates.values()) {
      if (u.base !== this.history.baseModelSha256 || !u.withinBound || excused.has(u.identity)) continue;
      if (this.identities.at(u.identity, blockNumber - 1).status === IdentityStatus.Active) valid.push(u);
    }
    return valid;
  }

  /** A round closed without a global adapter had fewer valid updates than the task's minimum. */
  private async closedRound(
    round: RoundHistory,
    updates: Map<number, ParsedUpdate>,
    excused: Map<number, number>,
  ): Promise<void> {
    const closed = round.closed!;
    const valid = await this.validUpdates(updates, closed.blockNumber, excused);
    const min = this.history.minUpdates;
    const ok = valid.length < min;
    const ids = `[${valid.map((u) => u.identity).join(", ")}]`;
    this.add(
      round.round,
      null,
      "closed round",
      ok,
      ok
        ? `closed by ${closed.closedBy} with ${valid.length} valid updates ${ids}, fewer than the minimum ${min}`
        : `closed by ${closed.closedBy} though ${valid.length} valid updates ${ids} met the minimum ${min}`,
    );
  }

  /** Who submitted, in either mode: an active identity, a claim within the cap, the identity's relayed signature. */
  private async submitter(s: SubmittedUpdate): Promise<void> {
    await this.submitterWasActive(s);
    this.exampleCap(s);
    if (s.relayer) await this.relayedSignature(s);
  }

  private async submitterWasActive(s: SubmittedUpdate): Promise<void> {
    const { tokenId, status } = this.identities.ofSigner(s.signer, s.blockNumber - 1);
    const ok = tokenId === s.identity && status === IdentityStatus.Active;
    this.add(
      s.round,
      s.identity,
      "identity active",
      ok,
      ok
        ? `${s.signer} held active identity ${s.identity} before block ${s.blockNumber}`
        : `${s.signer} held identity ${tokenId} with status ${IdentityStatus[status]} before block ${s.blockNumber}`,
    );
  }

  /** The claim is within the task's cap (the contract refuses more since the cap exists; history may be forged). */
  private exampleCap(s: SubmittedUpdate): void {
    const cap = this.history.maxExamples;
    const ok = s.numExamples <= cap;
    const detail = `${s.numExamples} examples claimed, the task's cap is ${cap}`;
    this.add(s.round, s.identity, "example cap", ok, detail);
  }

  private async relayedSignature(s: SubmittedUpdate): Promise<void> {
    const call = await this.ledger.relayedCall(s.transactionHash);
    if (!call) {
      this.add(
        s.round,
        s.identity,
        "relayed signature",
        false,
        `transaction ${s.transactionHash} is not a direct submitUpdateWithSignature call`,
      );
      return;
    }
    const recovered = this.ledger.recoverUpdateSigner(call.commitment, call.binding, call.signature);
    const ok = recovered === s.signer && call.binding.identity === s.identity;
    this.add(
      s.round,
      s.identity,
      "relayed signature",
      ok,
      ok
        ? `signature by ${s.signer} for identity ${s.identity}, relayed by ${s.relayer}`
        : `signature for identity ${call.binding.identity} recovers to ${recovered}, not ${s.signer}`,
    );
  }

  /** The round was finalized under the task's own strategy (the contract refuses any other since this check). */
  private strategyOfRound(round: number, fin: FinalizedRound): void {
    const ok = fin.strategyId === this.history.strategyId;
    const task = this.history.strategy;
    this.add(
      round,
      null,
      "strategy",
      ok,
      ok
        ? `finalized under the task's strategy ${task}`
        : `finalized as ${decodeStrategy(fin.strategyId)}, the task's strategy is ${task}`,
    );
  }

  private contributorsSubmitted(round: RoundHistory, fin: FinalizedRound): void {
    const submitted = new Set(round.submissions.map((s) => s.identity));
    for (const id of fin.contributors) {
      const ok = submitted.has(id);
      this.add(
        round.round,
        id,
        "contributor submitted",
        ok,
        ok
          ? `identity ${id} submitted in round ${round.round}`
          : `identity ${id} is listed but did not submit in round ${round.round}`,
      );
    }
  }

  /**
   * The contributors are the ones the strategy picks from every valid update: bytes that match their digest and
   * parse as the task's LoRA layout for the task's base model, a change from the round's start within the task's
   * bound, from an identity still active in the block before the round was finalized (what the aggregator itself
   * requires). All of them for FedAvg-like rules, Krum's own selection for Krum: an aggregator that leaves out a
   * valid update, or picks another, fails here.
   */
  private async contributorSet(
    round: number,
    fin: FinalizedRound,
    updates: Map<number, ParsedUpdate>,
    excused: Map<number, number>,
  ): Promise<AggregateResult | null> {
    const strategy = this.strategy;
    if (strategy instanceof Error) return null; // the aggregate check names the unknown strategy
    const valid = await this.validUpdates(updates, fin.blockNumber, excused);
    const ids = valid.map((u) => u.identity).sort((a, b) => a - b);
    let result: AggregateResult;
    try {
      result = strategy.aggregate(this.weighed(valid), this.context());
    } catch (e) {
      const why = `${this.history.strategy} cannot run on the valid updates [${ids.join(", ")}]`;
      this.add(round, null, "contributor set", false, `${why}: ${(e as Error).message}`);
      return null;
    }
    const picked = result.contributors;
    const ok = picked.join() === fin.contributors.join();
    const detail = ok
      ? `the listed contributors are what ${this.history.strategy} picks from every valid update [${ids.join(", ")}]`
      : `valid updates [${ids.join(", ")}]: ${this.history.strategy} picks [${picked.join(", ")}], ` +
        `the round lists [${fin.contributors.join(", ")}]`;
    this.add(round, null, "contributor set", ok, detail);
    // the same updates the round lists: what replaying them would compute (see replayAggregate)
    return ok ? result : null;
  }

  /**
   * Weights and bytes of the task's strategy replayed on the listed updates; the strategy, or null if unknown.
   * `picked` is the strategy's own result on exactly these updates when the contributor-set check computed it
   * (aggregating the valid updates selects and combines them as replaying the selection does), so it is not
   * computed twice.
   */
  private replayAggregate(
    round: number,
    fin: FinalizedRound,
    listed: ClientUpdate[],
    picked: AggregateResult | null,
    global: ParsedAdapter | null,
  ): Strategy | null {
    const name = this.history.strategy;
    const strategy = this.strategy;
    if (strategy instanceof Error) {
      this.add(round, null, "aggregate", false, `cannot re-run the aggregation: ${strategy.message}`);
      return null;
    }
    const result = picked ?? strategy.replay(this.weighed(listed), this.context());
    const expected = unitsToWeights(result.units);
    const weightsOk = expected.length === fin.weights.length && expected.every((w, i) => w === fin.weights[i]);
    this.add(
      round,
      null,
      "weights",
      weightsOk,
      weightsOk
        ? `recorded weights are ${name}'s`
        : `recorded weights ${fin.weights.join(",")} differ from ${name}'s ${expected.join(",")}`,
    );
    if (this.history.dpConfig) {
      this.centralNoise(round, fin, result, global);
      return strategy;
    }
    const meta = {
      kind: "global" as const,
      task: this.history.task,
      round,
      baseModelSha256: this.history.baseModelSha256,
      strategy: name,
    };
    const got = sha256Hex(serializeAdapter(this.o.model, this.o.lora, result.weights, meta));
    const who = `re-running ${name} on [${fin.contributors.join(", ")}]`;
    this.add(
      round,
      null,
      "aggregate",
      got === fin.globalSha256,
      got === fin.globalSha256
        ? `${who} gives the published bytes`
        : `${who} gives ${got}, published ${fin.globalSha256}`,
    );
    return strategy;
  }

  /**
   * A central-DP round: the published adapter is the uniform average of the listed updates plus noise that looks
   * like N(0, (σC/n)²) on every value (checkNoise) — the bytes cannot match, the noise being secret.
   */
  private centralNoise(round: number, fin: FinalizedRound, plain: AggregateResult, global: ParsedAdapter | null) {
    const dp = this.history.dpConfig!;
    if (!global) {
      this.add(round, null, "dp noise", false, "the global adapter does not parse as the task's LoRA layout");
      return;
    }
    const expected = (dp.noiseMultiplier * this.history.maxUpdateNorm) / fin.contributors.length;
    const c = checkNoise(global.weights, plain.weights, expected, B_ONLY_STRATEGIES.has(this.history.strategy));
    const stats = `rms ${c.rms.toExponential(4)} over ${c.count} values, σC/n = ${expected.toExponential(4)}`;
    const detail = c.problem ?? `global − uniform average of [${fin.contributors.join(", ")}] is noise: ${stats}`;
    this.add(round, null, "dp noise", c.problem === null, detail);
  }

  /** The updates as the task's weighting sees them: uniform in a DP task (numExamples 1), else as claimed. */
  private weighed(updates: ClientUpdate[]): ClientUpdate[] {
    return this.history.dpConfig ? uniformly(updates) : updates;
  }

  /**
   * A DP task: each finalized round recorded the ε the accountant gives for the finalized rounds so far (at most
   * 1e-6 below it: the chain's unit), within the budget; a closed round spends nothing.
   */
  privacySpent(): void {
    const dp = this.history.dpConfig;
    if (!dp) return;
    let k = 0;
    for (const r of this.history.rounds) {
      const fin = r.finalized;
      if (!fin) continue;
      const expected = epsilonAfter(dp, ++k);
      const got = fin.epsilon;
      const ok = got !== undefined && got >= expected - 1e-6 && got <= dp.epsilonMax;
      const what = `${k} finalized rounds at σ ${dp.noiseMultiplier}, δ ${dp.delta} spend ε ${fmtEpsilon(expected)}`;
      const detail =
        got === undefined
          ? `no PrivacySpent event; ${what}`
          : `recorded ε ${fmtEpsilon(got)} of the budget ${dp.epsilonMax}; ${what}`;
      this.add(r.round, null, "privacy spent", ok, detail);
    }
  }

  /** Per contributor: weight share, update norm, cosine to the aggregate and (with held-out data) leave-one-out. */
  private async contributionFigures(
    round: number,
    fin: FinalizedRound,
    start: ParsedAdapter,
    global: ParsedAdapter,
    listed: ClientUpdate[],
    strategy: Strategy,
  ): Promise<void> {
    const s0 = flattenWeights(start.weights);
    const g = sub(flattenWeights(global.weights), s0);
    const heldOut = this.o.heldOut;
    const fullLoss = heldOut ? await heldOut.loss(global.weights) : undefined;
    for (const [i, u] of listed.entries()) {
      const d = sub(flattenWeights(u.weights), s0);
      const figure: ContributionFigure = {
        round,
        identity: u.identity,
        weightShare: weightShare(fin.weights[i]!),
        updateNorm: Math.sqrt(dot(d, d)),
        cosineToAggregate: dot(d, g) / (Math.sqrt(dot(d, d) * dot(g, g)) || 1),
      };
      if (heldOut && fullLoss !== undefined && listed.length > 1) {
        const without = strategy.replay(this.weighed(listed.filter((x) => x.identity !== u.identity)), this.context());
        figure.leaveOneOutDelta = fullLoss - (await heldOut.loss(without.weights));
      }
      this.contributions.push(figure);
    }
  }

  private context() {
    return { scale: this.o.lora.alpha / this.o.lora.r, r: this.o.lora.r };
  }
}

/**
 * The identities the aggregator declared unavailable (`UpdatesUnavailable`) and did not list: excused from the
 * contributor set, each with the block of its first declaration. One it declared and listed anyway is not excused.
 */
function excusedUpdates(round: RoundHistory): Map<number, number> {
  const listed = new Set(round.finalized?.contributors ?? []);
  const excused = new Map<number, number>();
  for (const d of round.unavailable)
    for (const id of d.identities) if (!listed.has(id) && !excused.has(id)) excused.set(id, d.blockNumber);
  return excused;
}

function unavailableNote(block: number, now: string): string {
  return (
    `the aggregator declared this update unavailable (block ${block}) and left it out; ` +
    `whether it was, verify cannot check (${now})`
  );
}

function safeParse(bytes: Uint8Array, o: VerifyOptions): ParsedAdapter | null {
  try {
    return parseAdapter(bytes, o.model, o.lora);
  } catch {
    return null;
  }
}

const sub = (a: Float64Array, b: Float64Array) => a.map((x, i) => x - b[i]!);
const dot = (a: Float64Array, b: Float64Array) => a.reduce((s, x, i) => s + x * b[i]!, 0);

/** One line per check, then the verdict. */
export function formatVerifyReport(r: VerifyReport): string {
  const lines = r.checks.map((c) => {
    const round = c.round === null ? "task" : `round ${c.round}`;
    const where = c.identity === null ? round : `${round} identity ${c.identity}`;
    return `${c.note ? "NOTE" : c.ok ? "PASS" : "FAIL"}  ${where}  ${c.check}: ${c.detail}`;
  });
  if (r.contributions.length) {
    const loo = r.contributions.some((c) => c.leaveOneOutDelta !== undefined);
    const looColumn = loo ? ", held-out loss with − without it" : "";
    const columns = `round, identity, weight share, update norm, cosine to aggregate${looColumn}`;
    lines.push("", `contributions (${columns}):`);
    for (const c of r.contributions) {
      const delta = c.leaveOneOutDelta;
      const looText = delta === undefined ? "" : `  ${delta >= 0 ? "+" : ""}${delta.toFixed(4)}`;
      const share = `${(c.weightShare * 100).toFixed(2)}%`;
      const figures = `${share}  ${c.updateNorm.toFixed(4)}  ${c.cosineToAggregate.toFixed(3)}`;
      lines.push(`  ${c.round}  ${c.identity}  ${figures}${looText}`);
    }
  }
  const failed = r.checks.filter((c) => !c.ok).length;
  const notes = r.checks.filter((c) => c.note).length;
  const noted = notes ? `, ${notes} ${notes === 1 ? "note" : "notes"} (claims verify cannot check)` : "";
  lines.push(
    "",
    failed === 0
      ? `VERIFIED: task ${r.task}, ${r.checks.length - notes} checks passed${noted}`
      : `NOT VERIFIED: task ${r.task}, ${failed} of ${r.checks.length} checks failed`,
  );
  return lines.join("\n");
}

export type { TaskHistory };
