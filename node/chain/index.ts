/**
 * Typed access to the on-chain identity registry and round ledger: deploy or attach, register identities, create
 * tasks, open / finalize rounds, submit updates directly or signed-and-relayed, and read a task's whole history back
 * from events. Contract reverts surface as {@link ChainRevertError} with the custom error's name and arguments.
 */
import {
  type ContractRunner,
  type ContractTransactionResponse,
  type Signer,
  type TransactionReceipt,
  Interface,
  encodeBytes32String,
  isError,
  isHexString,
  keccak256,
  toUtf8Bytes,
  zeroPadValue,
} from "ethers";
import {
  Federation__factory,
  LLMIdentity__factory,
  type Federation,
  type LLMIdentity,
} from "../../types/ethers-contracts/index.js";
import { ChainDataError, ChainRevertError, InvalidArgumentError } from "../errors.js";

export type { Federation, LLMIdentity };

/** Identity status, as LLMIdentity.Status numbers it. */
export enum IdentityStatus {
  None = 0,
  Active = 1,
  Suspended = 2,
  Revoked = 3,
}

/** Task status, as IFederation.RoundStatus numbers it. */
export enum TaskStatus {
  None = 0,
  Open = 1,
  Completed = 2,
}

/** Aggregation weights on-chain are fixed-point with this many units per 1.0. */
export const WEIGHT_SCALE = 10n ** 18n;

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
  /** Seconds each round takes submissions. */
  roundDuration: number;
  maxRounds: number;
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
}

export interface TaskHistory extends TaskParams, EventSource {
  task: number;
  strategyId: string;
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

const ZERO_ADDRESS = "0x0000000000000000000000000000000000000000";

/** Every custom error any of our contracts can raise, for decoding reverts that ethers left raw. */
const errorInterface = new Interface([
  ...Federation__factory.abi.filter((f) => f.type === "error"),
  ...LLMIdentity__factory.abi.filter((f) => f.type === "error"),
]);

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

/** Deploys LLMIdentity and Federation wired together; `admin` gets every role. */
export async function deployContracts(admin: Signer): Promise<FederationLedger> {
  const adminAddress = await admin.getAddress();
  const identity = await new LLMIdentity__factory(admin).deploy(adminAddress);
  await identity.waitForDeployment();
  const federation = await new Federation__factory(admin).deploy(await identity.getAddress(), adminAddress);
  const receipt = await federation.deploymentTransaction()!.wait();
  const network = await admin.provider!.getNetwork();
  return new FederationLedger(
    {
      chainId: Number(network.chainId),
      identity: await identity.getAddress(),
      federation: await federation.getAddress(),
      deployBlock: receipt!.blockNumber,
    },
    admin,
  );
}

/**
 * One federation deployment seen through one account (or a read-only provider). Every write waits for its receipt.
 */
export class FederationLedger {
  readonly identity: LLMIdentity;
  readonly federation: Federation;

  constructor(
    readonly deployment: Deployment,
    readonly runner: ContractRunner,
  ) {
    this.identity = LLMIdentity__factory.connect(deployment.identity, runner);
    this.federation = Federation__factory.connect(deployment.federation, runner);
  }

  /** The same deployment through another account. */
  connect(runner: ContractRunner): FederationLedger {
    return new FederationLedger(this.deployment, runner);
  }

  // ---- identities -------------------------------------------------------------------------------------------

  /** Mints an identity to `signer`; returns its token id. */
  async registerIdentity(
    signer: string,
    institution: string,
    modelFingerprint: string,
    metadataCid: string,
  ): Promise<number> {
    const receipt = await send("register", () =>
      this.identity.register(signer, bytes32Id(institution), bytes32Id(modelFingerprint), metadataCid),
    );
    const ev = findEvent(receipt, this.identity.interface, "IdentityRegistered");
    return Number(ev.args.tokenId);
  }

  async suspend(tokenId: number): Promise<TransactionReceipt> {
    return send("suspend", () => this.identity.suspend(tokenId));
  }

  async reinstate(tokenId: number): Promise<TransactionReceipt> {
    return send("reinstate", () => this.identity.reinstate(tokenId));
  }

  async revoke(tokenId: number): Promise<TransactionReceipt> {
    return send("revoke", () => this.identity.revoke(tokenId));
  }

  async rotateKey(tokenId: number, newSigner: string): Promise<TransactionReceipt> {
    return send("rotateKey", () => this.identity.rotateKey(tokenId, newSigner));
  }

  /** The live identity of `signer`: its token id (0 when none) and status. */
  async identityOfSigner(signer: string): Promise<{ tokenId: number; status: IdentityStatus }> {
    const [tokenId, status] = await this.identity.identityOfSigner(signer);
    return { tokenId: Number(tokenId), status: Number(status) as IdentityStatus };
  }

  // ---- tasks and rounds -------------------------------------------------------------------------------------

  /** Creates a task; returns its id. */
  async createTask(p: TaskParams): Promise<number> {
    const receipt = await send("createTask", () =>
      this.federation.createTask(
        p.baseModelCid,
        p.baseModelSha256,
        p.loraConfigHash,
        p.aggregator,
        strategyId(p.strategy),
        p.minUpdates,
        p.roundDuration,
        p.maxRounds,
      ),
    );
    return Number(findEvent(receipt, this.federation.interface, "TaskCreated").args.task);
  }

  async openFirstRound(task: number, startCid: string, startSha256: string): Promise<TransactionReceipt> {
    return send("openFirstRound", () => this.federation.openFirstRound(task, startCid, startSha256));
  }

  /** Submits `c` from the connected account, which must hold an Active identity. */
  async submitUpdate(c: UpdateCommitment): Promise<TransactionReceipt> {
    return send("submitUpdate", () =>
      this.federation.submitUpdate(c.task, c.round, c.cid, c.adapterSha256, c.numExamples, c.metricsDigest),
    );
  }

  /** The EIP-712 signature by `signer` (an identity's key) that lets anyone relay `c`. */
  async signUpdate(signer: Signer, c: UpdateCommitment): Promise<string> {
    return signer.signTypedData(this.eip712Domain(), UPDATE_TYPES, toTypedMessage(c));
  }

  /** Relays `c` with the identity's signature; the connected account pays the gas. */
  async submitSignedUpdate(c: UpdateCommitment, signature: string): Promise<TransactionReceipt> {
    return send("submitUpdateWithSignature", () =>
      this.federation.submitUpdateWithSignature(
        c.task,
        c.round,
        c.cid,
        c.adapterSha256,
        c.numExamples,
        c.metricsDigest,
        signature,
      ),
    );
  }

  /**
   * Publishes a round's global adapter made by `strategy`; contributors in increasing id order, weights adding up to
   * 1e18.
   */
  async finalizeRound(
    task: number,
    round: number,
    globalCid: string,
    globalSha256: string,
    contributors: readonly number[],
    weights: readonly bigint[],
    strategy: string,
  ): Promise<TransactionReceipt> {
    return send("finalizeRound", () =>
      this.federation.finalizeRound(
        task,
        round,
        globalCid,
        globalSha256,
        [...contributors],
        [...weights],
        strategyId(strategy),
      ),
    );
  }

  eip712Domain() {
    return {
      name: "FlowOfKnowledgeFederation",
      version: "1",
      chainId: this.deployment.chainId,
      verifyingContract: this.deployment.federation,
    };
  }

  // ---- history from events ----------------------------------------------------------------------------------

  /** Rebuilds a task's whole history from events alone. */
  async readTaskHistory(task: number): Promise<TaskHistory> {
    const f = this.federation;
    const from = this.deployment.deployBlock;
    const [created, opened, submitted, finalized, completed] = await Promise.all([
      f.queryFilter(f.filters.TaskCreated(task), from),
      f.queryFilter(f.filters.RoundOpened(task), from),
      f.queryFilter(f.filters.UpdateSubmitted(task), from),
      f.queryFilter(f.filters.RoundFinalized(task), from),
      f.queryFilter(f.filters.TaskCompleted(task), from),
    ]);
    if (created.length !== 1)
      throw new ChainDataError(`task ${task}: expected one TaskCreated event, found ${created.length}`);
    const c = created[0]!.args;
    const rounds = new Map<number, RoundHistory>();
    for (const e of opened) {
      const round = Number(e.args.round);
      rounds.set(round, {
        round,
        startCid: e.args.startCid,
        startSha256: e.args.startSha256,
        deadline: Number(e.args.deadline),
        opened: source(e),
        submissions: [],
        finalized: null,
      });
    }
    const roundOf = (round: number) => {
      const r = rounds.get(round);
      if (!r) throw new ChainDataError(`task ${task}: event for round ${round}, which never opened`);
      return r;
    };
    for (const e of sortBySource(submitted)) {
      const a = e.args;
      roundOf(Number(a.round)).submissions.push({
        task,
        round: Number(a.round),
        identity: Number(a.identity),
        signer: a.signer,
        relayer: a.relayer === ZERO_ADDRESS ? null : a.relayer,
        cid: a.cid,
        adapterSha256: a.adapterSha256,
        numExamples: Number(a.numExamples),
        metricsDigest: a.metricsDigest,
        ...source(e),
      });
    }
    for (const e of finalized) {
      const a = e.args;
      roundOf(Number(a.round)).finalized = {
        globalCid: a.globalCid,
        globalSha256: a.globalSha256,
        strategyId: a.strategyId,
        contributors: a.contributors.map(Number),
        weights: [...a.weights],
        ...source(e),
      };
    }
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
      ...source(created[0]!),
      rounds: [...rounds.values()].sort((a, b) => a.round - b.round),
      completed: completed.length > 0,
    };
  }

  /** Every identity with its key history, rebuilt from events alone. */
  async readIdentities(): Promise<IdentityHistory[]> {
    const id = this.identity;
    const from = this.deployment.deployBlock;
    const [registered, suspended, reinstated, revoked, rotated] = await Promise.all([
      id.queryFilter(id.filters.IdentityRegistered(), from),
      id.queryFilter(id.filters.IdentitySuspended(), from),
      id.queryFilter(id.filters.IdentityReinstated(), from),
      id.queryFilter(id.filters.IdentityRevoked(), from),
      id.queryFilter(id.filters.IdentityKeyRotated(), from),
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
    type Change = { tokenId: number; kind: IdentityEvent["kind"]; signer?: string; src: EventSource };
    const changes: Change[] = [
      ...suspended.map((e) => ({ tokenId: Number(e.args.tokenId), kind: "suspended" as const, src: source(e) })),
      ...reinstated.map((e) => ({ tokenId: Number(e.args.tokenId), kind: "reinstated" as const, src: source(e) })),
      ...revoked.map((e) => ({ tokenId: Number(e.args.tokenId), kind: "revoked" as const, src: source(e) })),
      ...rotated.map((e) => ({
        tokenId: Number(e.args.tokenId),
        kind: "keyRotated" as const,
        signer: e.args.newSigner,
        src: source(e),
      })),
    ].sort((a, b) => compareSource(a.src, b.src));
    const statusAfter: Record<IdentityEvent["kind"], IdentityStatus> = {
      registered: IdentityStatus.Active,
      keyRotated: IdentityStatus.Active,
      suspended: IdentityStatus.Suspended,
      reinstated: IdentityStatus.Active,
      revoked: IdentityStatus.Revoked,
    };
    for (const ch of changes) {
      const h = byId.get(ch.tokenId);
      if (!h) throw new ChainDataError(`identity ${ch.tokenId}: ${ch.kind} event before it was registered`);
      if (ch.kind === "keyRotated") h.signer = ch.signer!;
      else h.status = statusAfter[ch.kind];
      h.events.push({ kind: ch.kind, signer: h.signer, ...ch.src });
    }
    return [...byId.values()].sort((a, b) => a.tokenId - b.tokenId);
  }
}

export const UPDATE_TYPES = {
  UpdateCommitment: [
    { name: "task", type: "uint256" },
    { name: "round", type: "uint256" },
    { name: "cid", type: "string" },
    { name: "adapterSha256", type: "bytes32" },
    { name: "numExamples", type: "uint64" },
    { name: "metricsDigest", type: "bytes32" },
  ],
};

function toTypedMessage(c: UpdateCommitment) {
  return {
    task: c.task,
    round: c.round,
    cid: c.cid,
    adapterSha256: c.adapterSha256,
    numExamples: c.numExamples,
    metricsDigest: c.metricsDigest,
  };
}

/** The decoded text of a strategy id when it is short text, else the hex id. */
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

/** 0x-prefixed 32-byte hex of a digest given as bytes or hex. */
export function toBytes32(digest: Uint8Array | string): string {
  const hex = typeof digest === "string" ? digest : "0x" + Buffer.from(digest).toString("hex");
  if (!isHexString(hex, 32)) throw new InvalidArgumentError(`not a 32-byte digest: ${hex}`);
  return zeroPadValue(hex, 32);
}

/**
 * Sends a transaction and waits for its receipt; a revert becomes a ChainRevertError naming the custom error and
 * its arguments.
 */
export async function send(
  action: string,
  fn: () => Promise<ContractTransactionResponse>,
): Promise<TransactionReceipt> {
  try {
    const tx = await fn();
    const receipt = await tx.wait();
    if (!receipt) throw new ChainDataError(`${action}: no receipt`);
    return receipt;
  } catch (e) {
    throw toChainError(action, e);
  }
}

/**
 * Maps a failed call to a ChainRevertError where it carries revert data we can decode: ethers' CALL_EXCEPTION, or a
 * JSON-RPC error with revert data (as Hardhat's in-process network raises). Other errors pass through unchanged.
 */
export function toChainError(action: string, e: unknown): unknown {
  if (isError(e, "CALL_EXCEPTION") && e.revert) {
    return new ChainRevertError(e.revert.name, [...e.revert.args], action, { cause: e });
  }
  const data = revertData(e);
  const parsed = data ? errorInterface.parseError(data) : null;
  return parsed ? new ChainRevertError(parsed.name, [...parsed.args], action, { cause: e }) : e;
}

/** Revert data wherever an ethers or JSON-RPC error keeps it. */
function revertData(e: unknown): string | null {
  const seen = new Set<unknown>();
  let cur: unknown = e;
  for (let depth = 0; cur && typeof cur === "object" && depth < 5 && !seen.has(cur); depth++) {
    seen.add(cur);
    const o = cur as { data?: unknown; error?: unknown; info?: { error?: unknown }; cause?: unknown };
    if (typeof o.data === "string" && isHexString(o.data) && o.data.length >= 10) return o.data;
    if (o.data && typeof o.data === "object" && typeof (o.data as { data?: unknown }).data === "string") {
      return (o.data as { data: string }).data;
    }
    cur = o.error ?? o.info?.error ?? o.cause;
  }
  return null;
}

function findEvent(receipt: TransactionReceipt, iface: Interface, name: string) {
  for (const log of receipt.logs) {
    const parsed = iface.parseLog(log);
    if (parsed?.name === name) return parsed;
  }
  throw new ChainDataError(`transaction ${receipt.hash} emitted no ${name}`);
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
