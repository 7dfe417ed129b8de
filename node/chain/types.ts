/** The protocol's on-chain records as plain TypeScript values, and the encodings of ids and names. */
import { encodeBytes32String, isHexString, keccak256, toUtf8Bytes } from "ethers";
import { InvalidArgumentError } from "../errors.js";

/** Identity status, as LLMIdentity.Status numbers it. */
export enum IdentityStatus {
  None = 0,
  Active = 1,
  Suspended = 2,
  Revoked = 3,
}

/** Task status, as IFederation.TaskStatus numbers it. */
export enum TaskStatus {
  None = 0,
  Open = 1,
  Completed = 2,
}

/** Where a federation lives on a chain: enough to attach to it again. */
export interface Deployment {
  chainId: number;
  identity: string;
  federation: string;
  /** Block of the deployment; history is read from here. */
  deployBlock: number;
}

/** What a client commits for one round. */
export interface UpdateCommitment {
  task: number;
  round: number;
  /** CID of the adapter bytes in IPFS. */
  cid: string;
  /** 0x-prefixed sha256 of the exact adapter bytes. */
  adapterSha256: string;
  numExamples: number;
  /** 0x-prefixed 32-byte digest of the client's metrics document (zero when none). */
  metricsDigest: string;
}

export interface TaskParams {
  baseModelCid: string;
  baseModelSha256: string;
  loraConfigHash: string;
  aggregator: string;
  /** Strategy name (e.g. `fedavg`), stored as bytes32 text; or a 0x-prefixed 32-byte id. */
  strategy: string;
  minUpdates: number;
  /** Seconds each round takes submissions (at most 2^32 − 1). */
  roundDuration: number;
  maxRounds: number;
  /** The most examples one identity may claim in one round: it bounds a single claim's FedAvg weight. */
  maxExamples: number;
  /**
   * The largest L2 norm of an update's change from the round's start adapter (over every LoRA tensor). Stored
   * on-chain in units of 1e-6 ({@link NORM_SCALE}); the aggregator leaves larger updates out and verify checks it.
   */
  maxUpdateNorm: number;
  /** How updates travel: in the clear (default), or masked for secure aggregation (fixed at creation). */
  privacy?: PrivacyMode;
  /** Secure mode: how many survivors' shares unmask the sum (2 ≤ threshold ≤ minUpdates). */
  threshold?: number;
  /** Client-level differential privacy (fixed at creation; noise central in open mode, distributed in secure). */
  dp?: DpParams;
}

/**
 * A task's client-level differential privacy: Gaussian noise of standard deviation σ·C on the sum of the clipped
 * updates of each round (C: the task's maxUpdateNorm), uniform averaging, a budget ε_max at δ.
 */
export interface DpParams {
  /** σ (stored in 1e-6 units: {@link DP_SCALE}). */
  noiseMultiplier: number;
  /** δ (stored in 1e-18 units). */
  delta: number;
  /** ε_max: no finalized round may bring the spent ε above it (1e-6 units). */
  epsilonMax: number;
}

/** Where a DP task's noise is added, as IFederation.NoisePlacement numbers it (0: not a DP task). */
export type NoisePlacement = "central" | "distributed";
export const NOISE_PLACEMENTS: readonly (NoisePlacement | null)[] = [null, "central", "distributed"];

/** A DP task's settings as the chain holds them, and the ε its finalized rounds spent (`dpConfig` view). */
export interface DpState extends DpParams {
  placement: NoisePlacement;
  /** ε spent so far (what the last finalized round recorded; 0 before any). */
  spent: number;
}

/** The on-chain unit of σ and ε: 1e-6. */
export const DP_SCALE = 1_000_000;
/** The on-chain unit of δ: 1e-18. */
export const DELTA_SCALE = 10n ** 18n;

/**
 * DP settings in the chain's units (σ and ε_max to 1e-6, rounded to nearest; δ to 1e-18). Everything that computes
 * ε uses the settings as decoded from these units ({@link dpFromUnits}), so creator, aggregator and verify agree.
 */
export function dpUnits(dp: DpParams, placement: NoisePlacement) {
  const ok = (x: number) => Number.isFinite(x) && x > 0;
  if (!ok(dp.noiseMultiplier) || !ok(dp.epsilonMax) || !(dp.delta > 0 && dp.delta < 1))
    throw new InvalidArgumentError(
      `DP settings need σ > 0, ε_max > 0 and 0 < δ < 1; got σ ${dp.noiseMultiplier}, ε_max ${dp.epsilonMax}, ` +
        `δ ${dp.delta}`,
    );
  return {
    noiseMultiplier: BigInt(Math.max(1, Math.round(dp.noiseMultiplier * DP_SCALE))),
    delta: BigInt(Math.max(1, Math.round(dp.delta * 1e18))),
    epsilonMax: BigInt(Math.max(1, Math.round(dp.epsilonMax * DP_SCALE))),
    placement: NOISE_PLACEMENTS.indexOf(placement),
  };
}

/** DP settings from the chain's units. */
export function dpFromUnits(u: { noiseMultiplier: bigint; delta: bigint; epsilonMax: bigint }): DpParams {
  return {
    noiseMultiplier: Number(u.noiseMultiplier) / DP_SCALE,
    delta: Number(u.delta) / 1e18,
    epsilonMax: Number(u.epsilonMax) / DP_SCALE,
  };
}

/** An ε in the chain's 1e-6 units, rounded up (what is recorded is never below what was spent). */
export function epsilonUnits(epsilon: number): bigint {
  if (!(epsilon >= 0) || !Number.isFinite(epsilon))
    throw new InvalidArgumentError(`ε must be finite, >= 0: ${epsilon}`);
  return BigInt(Math.ceil(epsilon * DP_SCALE - 1e-9));
}

/** A task's privacy mode, as IFederation.Privacy numbers it: 0 open, 1 secure. */
export type PrivacyMode = "open" | "secure";
export const PRIVACY_MODES: readonly PrivacyMode[] = ["open", "secure"];

/** A secure round's phase, as IFederation.SecurePhase numbers it. */
export enum SecurePhase {
  Keys = 0,
  Shares = 1,
  Masked = 2,
  Reveal = 3,
}

/** A secure round's phase and step counts (`secureRound` view). */
export interface SecureRoundInfo {
  phase: SecurePhase;
  keys: number;
  dealt: number;
  masked: number;
  revealed: number;
}

/** An identity's advertised round keys (`KeysAdvertised`). */
export interface AdvertisedKeys extends EventSource {
  identity: number;
  encryptionKey: string;
  maskKey: string;
}

/** A pinned blob an identity committed in a secure round (`SharesDealt`, `SharesRevealed`). */
export interface CommittedBlob extends EventSource {
  identity: number;
  cid: string;
  digest: string;
}

/** A secure round's own events, in the order they were mined. */
export interface SecureRoundHistory {
  keys: AdvertisedKeys[];
  dealings: CommittedBlob[];
  /** Each phase change: the phase entered and how many did the step before it. */
  phases: ({ phase: SecurePhase; count: number } & EventSource)[];
  reveals: CommittedBlob[];
}

/** The on-chain unit of `maxUpdateNorm`: 1e-6. */
export const NORM_SCALE = 1_000_000;

/** What a relayed commitment's signature binds besides the commitment: who signs and until when. */
export interface RelayBinding {
  /** The identity whose key signs. */
  identity: number;
  /** Unix time (chain clock) after which the signature is void. */
  deadline: number;
}

/** A task's settings and where it stands now (the contract's `task` view). */
export interface TaskInfo {
  aggregator: string;
  /** Proposed by a task admin; it takes over when it accepts. null when none. */
  pendingAggregator: string | null;
  minUpdates: number;
  maxRounds: number;
  /** 0 until the first round opens. */
  currentRound: number;
  roundDuration: number;
  maxExamples: number;
  maxUpdateNorm: number;
  /** Unix time (chain clock) after which the current round takes no submissions. */
  roundDeadline: number;
  status: TaskStatus;
  baseModelSha256: string;
  loraConfigHash: string;
  strategyId: string;
  /** The strategy id decoded to its name where it is short text. */
  strategy: string;
  /** The adapter the open round starts from; after completion, the final global adapter. */
  headSha256: string;
}

/** One identity's submission in one round, from storage (zeros when it did not submit). */
export interface SubmissionInfo {
  adapterSha256: string;
  numExamples: number;
  submittedAt: number;
  aggregated: boolean;
  weight: bigint;
}

/** One identity as the registry stores it now. */
export interface IdentityRecord {
  tokenId: number;
  signer: string;
  status: IdentityStatus;
  registeredAt: number;
  institutionId: string;
  modelFingerprint: string;
  metadataCid: string;
}

/** The roles an account holds. */
export interface Roles {
  /** May grant and revoke every role of the Federation contract (tasks). */
  admin: boolean;
  /** May grant and revoke every role of the identity registry. */
  identityAdmin: boolean;
  /** May register, suspend, reinstate, revoke identities and rotate their keys (with the key's consent). */
  registrar: boolean;
  /** May create tasks and hand a task's aggregator role over. */
  taskAdmin: boolean;
}

/** Where an event came from. */
export interface EventSource {
  blockNumber: number;
  transactionHash: string;
  logIndex: number;
}

export interface SubmittedUpdate extends UpdateCommitment, EventSource {
  identity: number;
  signer: string;
  /** The sender when relayed with a signature; null when the identity sent it itself. */
  relayer: string | null;
}

export interface FinalizedRound extends EventSource {
  globalCid: string;
  globalSha256: string;
  strategyId: string;
  contributors: number[];
  weights: bigint[];
  /** DP tasks (readTaskHistory): the ε spent once this round was published, as recorded (`PrivacySpent`). */
  epsilon?: number;
}

/** A round that ended without a global adapter (`closeRound`). */
export interface ClosedRound extends EventSource {
  closedBy: string;
}

/** An aggregator handover (`AggregatorChanged`). */
export interface AggregatorChange extends EventSource {
  previous: string;
  current: string;
}

/** An aggregator's claim that it could not fetch `identities`' updates of the round: public, not checkable later. */
export interface UnavailableDeclaration extends EventSource {
  identities: number[];
}

export interface RoundHistory {
  round: number;
  startCid: string;
  startSha256: string;
  deadline: number;
  opened: EventSource;
  /** In the order they were mined. */
  submissions: SubmittedUpdate[];
  finalized: FinalizedRound | null;
  /** Set when the round ended without a global adapter; the next round starts where this one did. */
  closed: ClosedRound | null;
  /** Open tasks: the aggregator's declarations that it could not fetch identities' updates (`UpdatesUnavailable`). */
  unavailable: UnavailableDeclaration[];
  /** Secure tasks (readTaskHistory, readSecureRound): the round's keys, dealings, phases and reveals. */
  secure?: SecureRoundHistory;
}

export interface TaskHistory extends TaskParams, EventSource {
  task: number;
  privacy: PrivacyMode;
  /** Secure tasks: survivors' shares needed to unmask (0 for open tasks). */
  threshold: number;
  /** DP tasks: the settings as created (`TaskDp`); null for other tasks. */
  dpConfig: (DpParams & { placement: NoisePlacement }) | null;
  strategyId: string;
  /** Every aggregator handover, in order (`aggregator` is the one the task was created with). */
  aggregatorChanges: AggregatorChange[];
  rounds: RoundHistory[];
  completed: boolean;
}

export interface IdentityEvent extends EventSource {
  kind: "registered" | "suspended" | "reinstated" | "revoked" | "keyRotated";
  /** The signing key after the event. */
  signer: string;
}

export interface IdentityHistory {
  tokenId: number;
  institutionId: string;
  modelFingerprint: string;
  metadataCid: string;
  status: IdentityStatus;
  signer: string;
  events: IdentityEvent[];
}

/** A relayed submission as its transaction carried it: the commitment and the identity's signature. */
export interface RelayedCall {
  commitment: UpdateCommitment;
  binding: RelayBinding;
  signature: string;
}

/** A transaction of ours, decoded: the call and the events it emitted. */
export interface DecodedTransaction {
  hash: string;
  from: string;
  to: string | null;
  block: number | null;
  gasUsed: bigint | undefined;
  call: { name: string; args: Record<string, unknown> } | null;
  events: { name: string; args: Record<string, unknown> }[];
}

/** Turns a strategy name into its bytes32 id (`fedavg` → text bytes, right-padded), or keeps a 32-byte hex id. */
export function strategyId(strategy: string): string {
  if (isHexString(strategy, 32)) return strategy;
  if (toUtf8Bytes(strategy).length > 31) throw new InvalidArgumentError(`strategy name too long: ${strategy}`);
  return encodeBytes32String(strategy);
}

/** A bytes32 id for free text such as an institution name (keccak256 of its UTF-8), or a 32-byte hex as is. */
export function bytes32Id(text: string): string {
  return isHexString(text, 32) ? text : keccak256(toUtf8Bytes(text));
}

/** The decoded text of a strategy id when it is short printable text, else the hex id. */
export function decodeStrategy(id: string): string {
  const bytes = Buffer.from(id.slice(2), "hex");
  const end = bytes.indexOf(0);
  const text = bytes.subarray(0, end < 0 ? bytes.length : end);
  const printable =
    text.length > 0 &&
    bytes.subarray(text.length).every((b) => b === 0) &&
    /^[\x20-\x7e]+$/.test(text.toString("latin1"));
  return printable ? text.toString("latin1") : id;
}
