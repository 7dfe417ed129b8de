/**
 * A task's and the registry's history rebuilt from events alone. Rounds are read with indexed queries (task and
 * round are indexed topics), so a poll for one round costs four log queries however long the history is.
 */
import { ZeroAddress } from "ethers";
import type { Federation, LLMIdentity } from "../../types/ethers-contracts/index.js";
import { ChainDataError } from "../errors.js";
import type { LogReader } from "./logs.js";
import {
  IdentityStatus,
  NORM_SCALE,
  DP_SCALE,
  NOISE_PLACEMENTS,
  decodeStrategy,
  dpFromUnits,
  type ClosedRound,
  type CommittedBlob,
  type EventSource,
  type SecurePhase,
  type SecureRoundHistory,
  type FinalizedRound,
  type IdentityEvent,
  type IdentityHistory,
  type RoundHistory,
  type SubmittedUpdate,
  type TaskHistory,
  type UnavailableDeclaration,
} from "./types.js";

type Log<A> = { args: A; blockNumber: number; transactionHash: string; index: number };
type OpenedArgs = { round: bigint; startCid: string; startSha256: string; deadline: bigint };
type SubmittedArgs = {
  task: bigint;
  round: bigint;
  identity: bigint;
  signer: string;
  relayer: string;
  cid: string;
  adapterSha256: string;
  numExamples: bigint;
  metricsDigest: string;
};
type FinalizedArgs = {
  globalCid: string;
  globalSha256: string;
  strategyId: string;
  contributors: bigint[];
  weights: bigint[];
};

/** Rebuilds a task's whole history from events alone. */
export async function readTaskHistory(f: Federation, logs: LogReader, task: number): Promise<TaskHistory> {
  const [created, opened, submitted, finalized, closed, completed, handovers, privacy, dp, spent, unavailable] =
    await Promise.all([
      logs.read(`TaskCreated(${task})`, (a, b) => f.queryFilter(f.filters.TaskCreated(task), a, b)),
      logs.read(`RoundOpened(${task})`, (a, b) => f.queryFilter(f.filters.RoundOpened(task), a, b)),
      logs.read(`UpdateSubmitted(${task})`, (a, b) => f.queryFilter(f.filters.UpdateSubmitted(task), a, b)),
      logs.read(`RoundFinalized(${task})`, (a, b) => f.queryFilter(f.filters.RoundFinalized(task), a, b)),
      logs.read(`RoundClosed(${task})`, (a, b) => f.queryFilter(f.filters.RoundClosed(task), a, b)),
      logs.read(`TaskCompleted(${task})`, (a, b) => f.queryFilter(f.filters.TaskCompleted(task), a, b)),
      logs.read(`AggregatorChanged(${task})`, (a, b) => f.queryFilter(f.filters.AggregatorChanged(task), a, b)),
      logs.read(`TaskPrivacy(${task})`, (a, b) => f.queryFilter(f.filters.TaskPrivacy(task), a, b)),
      logs.read(`TaskDp(${task})`, (a, b) => f.queryFilter(f.filters.TaskDp(task), a, b)),
      logs.read(`PrivacySpent(${task})`, (a, b) => f.queryFilter(f.filters.PrivacySpent(task), a, b)),
      logs.read(`UpdatesUnavailable(${task})`, (a, b) => f.queryFilter(f.filters.UpdatesUnavailable(task), a, b)),
    ]);
  if (created.length !== 1) {
    throw new ChainDataError(`task ${task}: expected one TaskCreated event, found ${created.length}`);
  }
  const rounds = new Map<number, RoundHistory>();
  for (const e of opened) rounds.set(Number(e.args.round), openedRound(e));
  const roundOf = (round: number) => {
    const r = rounds.get(round);
    if (!r) throw new ChainDataError(`task ${task}: event for round ${round}, which never opened`);
    return r;
  };
  for (const e of sortBySource(submitted)) roundOf(Number(e.args.round)).submissions.push(submittedUpdate(e));
  for (const e of finalized) roundOf(Number(e.args.round)).finalized = finalizedRound(e);
  for (const e of closed) roundOf(Number(e.args.round)).closed = closedRound(e);
  for (const e of sortBySource(unavailable)) roundOf(Number(e.args.round)).unavailable.push(declaration(e));
  for (const e of spent) {
    const f = roundOf(Number(e.args.round)).finalized;
    if (f) f.epsilon = Number(e.args.epsilon) / DP_SCALE;
  }
  const secure = privacy.length > 0 && Number(privacy[0]!.args.mode) === 1;
  if (secure) {
    const events = await secureEvents(f, logs, task);
    for (const r of rounds.values()) r.secure = secureRoundOf(events, r.round);
  }
  const c = created[0]!.args;
  return {
    task,
    baseModelCid: c.baseModelCid,
    baseModelSha256: c.baseModelSha256,
    loraConfigHash: c.loraConfigHash,
    aggregator: c.aggregator,
    strategy: decodeStrategy(c.strategyId),
    strategyId: c.strategyId,
    minUpdates: Number(c.minUpdates),
    roundDuration: Number(c.roundDuration),
    maxRounds: Number(c.maxRounds),
    maxExamples: Number(c.maxExamples),
    maxUpdateNorm: Number(c.maxUpdateNorm) / NORM_SCALE,
    privacy: secure ? "secure" : "open",
    threshold: secure ? Number(privacy[0]!.args.threshold) : 0,
    dpConfig: dp.length
      ? { ...dpFromUnits(dp[0]!.args), placement: NOISE_PLACEMENTS[Number(dp[0]!.args.placement)] ?? "central" }
      : null,
    ...source(created[0]!),
    aggregatorChanges: sortBySource(handovers).map((e) => ({
      previous: e.args.previous,
      current: e.args.current,
      ...source(e),
    })),
    rounds: [...rounds.values()].sort((a, b) => a.round - b.round),
    completed: completed.length > 0,
  };
}

/** One round from its own indexed events; null while it has not opened. */
export async function readRound(
  f: Federation,
  logs: LogReader,
  task: number,
  round: number,
): Promise<RoundHistory | null> {
  const [opened, submitted, finalized, closed, unavailable] = await Promise.all([
    logs.read(`RoundOpened(${task},${round})`, (a, b) => f.queryFilter(f.filters.RoundOpened(task, round), a, b)),
    logs.read(`UpdateSubmitted(${task},${round})`, (a, b) =>
      f.queryFilter(f.filters.UpdateSubmitted(task, round), a, b),
    ),
    logs.read(`RoundFinalized(${task},${round})`, (a, b) => f.queryFilter(f.filters.RoundFinalized(task, round), a, b)),
    logs.read(`RoundClosed(${task},${round})`, (a, b) => f.queryFilter(f.filters.RoundClosed(task, round), a, b)),
    logs.read(`UpdatesUnavailable(${task},${round})`, (a, b) =>
      f.queryFilter(f.filters.UpdatesUnavailable(task, round), a, b),
    ),
  ]);
  if (opened.length === 0) return null;
  if (opened.length > 1 || finalized.length > 1) {
    throw new ChainDataError(
      `task ${task} round ${round}: ${opened.length} RoundOpened and ${finalized.length} RoundFinalized events`,
    );
  }
  const r = openedRound(opened[0]!);
  r.submissions = sortBySource(submitted).map(submittedUpdate);
  r.finalized = finalized.length ? finalizedRound(finalized[0]!) : null;
  r.closed = closed.length ? closedRound(closed[0]!) : null;
  r.unavailable = sortBySource(unavailable).map(declaration);
  return r;
}

/** The secure events of a task (one round's with `round`), each kind in the order mined. */
async function secureEvents(f: Federation, logs: LogReader, task: number, round?: number) {
  const [keys, dealt, phases, revealed] = await Promise.all([
    logs.read(`KeysAdvertised(${task},${round})`, (a, b) => f.queryFilter(f.filters.KeysAdvertised(task, round), a, b)),
    logs.read(`SharesDealt(${task},${round})`, (a, b) => f.queryFilter(f.filters.SharesDealt(task, round), a, b)),
    logs.read(`SecurePhaseAdvanced(${task},${round})`, (a, b) =>
      f.queryFilter(f.filters.SecurePhaseAdvanced(task, round), a, b),
    ),
    logs.read(`SharesRevealed(${task},${round})`, (a, b) => f.queryFilter(f.filters.SharesRevealed(task, round), a, b)),
  ]);
  return {
    keys: sortBySource(keys),
    dealt: sortBySource(dealt),
    phases: sortBySource(phases),
    revealed: sortBySource(revealed),
  };
}

type BlobArgs = { round: bigint; identity: bigint; cid: string; digest: string };

function secureRoundOf(e: Awaited<ReturnType<typeof secureEvents>>, round: number): SecureRoundHistory {
  const mine = <T extends { args: { round: bigint } }>(xs: T[]) => xs.filter((x) => Number(x.args.round) === round);
  const blob = (x: Log<BlobArgs>): CommittedBlob => ({
    identity: Number(x.args.identity),
    cid: x.args.cid,
    digest: x.args.digest,
    ...source(x),
  });
  return {
    keys: mine(e.keys).map((x) => ({
      identity: Number(x.args.identity),
      encryptionKey: x.args.encryptionKey,
      maskKey: x.args.maskKey,
      ...source(x),
    })),
    dealings: mine(e.dealt).map(blob),
    phases: mine(e.phases).map((x) => ({
      phase: Number(x.args.phase) as SecurePhase,
      count: Number(x.args.count),
      ...source(x),
    })),
    reveals: mine(e.revealed).map(blob),
  };
}

/** One secure round's keys, dealings, phase changes and reveals, from its own indexed events. */
export async function readSecureRound(f: Federation, logs: LogReader, task: number, round: number) {
  return secureRoundOf(await secureEvents(f, logs, task, round), round);
}

/** Every RoundFinalized event of one round (the contract allows one; this shows whether more were ever emitted). */
export async function readFinalizations(f: Federation, logs: LogReader, task: number, round: number) {
  return (
    await logs.read(`RoundFinalized(${task},${round})`, (a, b) =>
      f.queryFilter(f.filters.RoundFinalized(task, round), a, b),
    )
  ).map(finalizedRound);
}

/** Every UpdateSubmitted event of one identity in one round. */
export async function readSubmissions(f: Federation, logs: LogReader, task: number, round: number, identity: number) {
  return sortBySource(
    await logs.read(`UpdateSubmitted(${task},${round},${identity})`, (a, b) =>
      f.queryFilter(f.filters.UpdateSubmitted(task, round, identity), a, b),
    ),
  ).map(submittedUpdate);
}

/** Every identity with its key history, rebuilt from events alone. */
export async function readIdentities(id: LLMIdentity, logs: LogReader): Promise<IdentityHistory[]> {
  const [registered, suspended, reinstated, revoked, rotated] = await Promise.all([
    logs.read(`IdentityRegistered()`, (a, b) => id.queryFilter(id.filters.IdentityRegistered(), a, b)),
    logs.read(`IdentitySuspended()`, (a, b) => id.queryFilter(id.filters.IdentitySuspended(), a, b)),
    logs.read(`IdentityReinstated()`, (a, b) => id.queryFilter(id.filters.IdentityReinstated(), a, b)),
    logs.read(`IdentityRevoked()`, (a, b) => id.queryFilter(id.filters.IdentityRevoked(), a, b)),
    logs.read(`IdentityKeyRotated()`, (a, b) => id.queryFilter(id.filters.IdentityKeyRotated(), a, b)),
  ]);
  const byId = new Map<number, IdentityHistory>();
  for (const e of registered) {
    const tokenId = Number(e.args.tokenId);
    byId.set(tokenId, {
      tokenId,
      institutionId: e.args.institutionId,
      modelFingerprint: e.args.modelFingerprint,
      metadataCid: e.args.metadataCid,
      status: IdentityStatus.Active,
      signer: e.args.signer,
      events: [{ kind: "registered", signer: e.args.signer, ...source(e) }],
    });
  }
  const change = (kind: IdentityEvent["kind"]) => (e: Log<{ tokenId: bigint; newSigner?: string }>) => ({
    tokenId: Number(e.args.tokenId),
    kind,
    signer: e.args.newSigner,
    src: source(e),
  });
  const changes = [
    ...suspended.map(change("suspended")),
    ...reinstated.map(change("reinstated")),
    ...revoked.map(change("revoked")),
    ...rotated.map(change("keyRotated")),
  ].sort((a, b) => compareSource(a.src, b.src));
  for (const ch of changes) {
    const h = byId.get(ch.tokenId);
    if (!h) throw new ChainDataError(`identity ${ch.tokenId}: ${ch.kind} event before it was registered`);
    if (ch.kind === "keyRotated") h.signer = ch.signer!;
    else h.status = STATUS_AFTER[ch.kind];
    h.events.push({ kind: ch.kind, signer: h.signer, ...ch.src });
  }
  return [...byId.values()].sort((a, b) => a.tokenId - b.tokenId);
}

/**
 * Identities as they stood at the end of any block, from their events alone: what `identityOfSigner` and
 * `identity(...).status` returned then, without reading state at a past block (which needs an archive node).
 * LLMIdentity unbinds a revoked identity's signer and moves the binding on a key rotation; this replays that.
 */
export class IdentityTimeline {
  constructor(private readonly identities: readonly IdentityHistory[]) {}

  /** Signer and status of identity `id` after the events of blocks up to `block` (status None before it existed). */
  at(id: number, block: number): { signer: string | null; status: IdentityStatus } {
    const h = this.identities.find((i) => i.tokenId === id);
    let signer: string | null = null;
    let status = IdentityStatus.None;
    for (const e of h?.events ?? []) {
      if (e.blockNumber > block) break;
      signer = e.signer;
      if (e.kind !== "keyRotated") status = STATUS_AFTER[e.kind]; // a rotation moves the key, not the status
    }
    return { signer, status };
  }

  /** The identity `signer` was bound to at the end of `block`, and its status (0 and None when none). */
  ofSigner(signer: string, block: number): { tokenId: number; status: IdentityStatus } {
    for (const h of this.identities) {
      const s = this.at(h.tokenId, block);
      if (s.signer?.toLowerCase() === signer.toLowerCase() && s.status !== IdentityStatus.Revoked && s.status !== 0)
        return { tokenId: h.tokenId, status: s.status };
    }
    return { tokenId: 0, status: IdentityStatus.None };
  }
}

const STATUS_AFTER: Record<IdentityEvent["kind"], IdentityStatus> = {
  registered: IdentityStatus.Active,
  keyRotated: IdentityStatus.Active,
  suspended: IdentityStatus.Suspended,
  reinstated: IdentityStatus.Active,
  revoked: IdentityStatus.Revoked,
};

function openedRound(e: Log<OpenedArgs>): RoundHistory {
  return {
    round: Number(e.args.round),
    startCid: e.args.startCid,
    startSha256: e.args.startSha256,
    deadline: Number(e.args.deadline),
    opened: source(e),
    submissions: [],
    finalized: null,
    closed: null,
    unavailable: [],
  };
}

function declaration(e: Log<{ identities: bigint[] }>): UnavailableDeclaration {
  return { identities: e.args.identities.map(Number), ...source(e) };
}

function closedRound(e: Log<{ closedBy: string }>): ClosedRound {
  return { closedBy: e.args.closedBy, ...source(e) };
}

function submittedUpdate(e: Log<SubmittedArgs>): SubmittedUpdate {
  const a = e.args;
  return {
    task: Number(a.task),
    round: Number(a.round),
    identity: Number(a.identity),
    signer: a.signer,
    relayer: a.relayer === ZeroAddress ? null : a.relayer,
    cid: a.cid,
    adapterSha256: a.adapterSha256,
    numExamples: Number(a.numExamples),
    metricsDigest: a.metricsDigest,
    ...source(e),
  };
}

function finalizedRound(e: Log<FinalizedArgs>): FinalizedRound {
  const a = e.args;
  return {
    globalCid: a.globalCid,
    globalSha256: a.globalSha256,
    strategyId: a.strategyId,
    contributors: a.contributors.map(Number),
    weights: [...a.weights],
    ...source(e),
  };
}

function source(e: { blockNumber: number; transactionHash: string; index: number }): EventSource {
  return { blockNumber: e.blockNumber, transactionHash: e.transactionHash, logIndex: e.index };
}

function compareSource(a: EventSource, b: EventSource): number {
  return a.blockNumber - b.blockNumber || a.logIndex - b.logIndex;
}

function sortBySource<T extends { blockNumber: number; index: number }>(events: T[]): T[] {
  return [...events].sort((a, b) => a.blockNumber - b.blockNumber || a.index - b.index);
}
