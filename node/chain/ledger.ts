/**
 * One federation deployment seen through one account (or a read-only provider): the protocol's writes, each waiting
 * for its receipt, and its reads as typed values. The contract objects are private to node/chain; everyone else
 * calls these methods.
 */
import {
  type BlockTag,
  type ContractRunner,
  type Provider,
  type Signer,
  type TransactionReceipt,
  verifyTypedData,
  ZeroAddress,
  ZeroHash,
} from "ethers";
import {
  Federation__factory,
  LLMIdentity__factory,
  type Federation,
  type LLMIdentity,
} from "../../types/ethers-contracts/index.js";
import { ChainDataError, InvalidArgumentError } from "../errors.js";
import {
  readFinalizations,
  readIdentities,
  readRound,
  readSecureRound,
  readSubmissions,
  readTaskHistory,
} from "./history.js";
import { send } from "./reverts.js";
import { checkEvm } from "./evm.js";
import { LogReader } from "./logs.js";
import {
  bytes32Id,
  decodeStrategy,
  strategyId,
  NORM_SCALE,
  PRIVACY_MODES,
  NOISE_PLACEMENTS,
  DP_SCALE,
  dpFromUnits,
  dpUnits,
  epsilonUnits,
  type DpState,
  type DecodedTransaction,
  type PrivacyMode,
  type SecurePhase,
  type SecureRoundInfo,
  type RelayBinding,
  type Deployment,
  type IdentityRecord,
  type IdentityStatus,
  type RelayedCall,
  type Roles,
  type SubmissionInfo,
  type TaskInfo,
  type TaskParams,
  type TaskStatus,
  type UpdateCommitment,
} from "./types.js";

/** The EIP-712 type of a relayed update, as Federation.sol's UPDATE_TYPEHASH spells it. */
export const UPDATE_TYPES = {
  UpdateCommitment: [
    { name: "task", type: "uint256" },
    { name: "round", type: "uint256" },
    { name: "identity", type: "uint256" },
    { name: "cid", type: "string" },
    { name: "adapterSha256", type: "bytes32" },
    { name: "numExamples", type: "uint64" },
    { name: "metricsDigest", type: "bytes32" },
    { name: "deadline", type: "uint64" },
  ],
};

/** The EIP-712 type of an identity's consent to a new key, as LLMIdentity.sol's KEY_ROTATION_TYPEHASH spells it. */
export const KEY_ROTATION_TYPES = {
  KeyRotation: [
    { name: "identity", type: "uint256" },
    { name: "newSigner", type: "address" },
    { name: "nonce", type: "uint32" },
    { name: "deadline", type: "uint64" },
  ],
};

/**
 * Deploys LLMIdentity and Federation wired together; `admin` gets every role (hand them out with
 * {@link FederationLedger.separateRoles}).
 */
export async function deployContracts(admin: Signer): Promise<FederationLedger> {
  // an endpoint that cannot run the contracts is refused before anything is deployed
  if (admin.provider) await checkEvm(admin.provider, "the chain");
  const adminAddress = await admin.getAddress();
  const identity = await new LLMIdentity__factory(admin).deploy(adminAddress);
  await identity.waitForDeployment();
  const federation = await new Federation__factory(admin).deploy(await identity.getAddress(), adminAddress);
  const receipt = await federation.deploymentTransaction()!.wait();
  const network = await admin.provider!.getNetwork();
  const deployment: Deployment = {
    chainId: Number(network.chainId),
    identity: await identity.getAddress(),
    federation: await federation.getAddress(),
    deployBlock: receipt!.blockNumber,
  };
  return new FederationLedger(deployment, admin);
}

export class FederationLedger {
  readonly #identity: LLMIdentity;
  readonly #federation: Federation;

  /** Event history, read in bounded windows and kept (node/chain/logs.ts); shared by connected ledgers. */
  readonly logs: LogReader;

  constructor(
    readonly deployment: Deployment,
    readonly runner: ContractRunner,
    logs?: LogReader,
  ) {
    this.#identity = LLMIdentity__factory.connect(deployment.identity, runner);
    this.#federation = Federation__factory.connect(deployment.federation, runner);
    const provider = runner.provider ?? (runner as Provider);
    this.logs = logs ?? new LogReader(provider, deployment.deployBlock);
  }

  /** The same deployment through another account (sharing what was read of the history). */
  connect(runner: ContractRunner): FederationLedger {
    return new FederationLedger(this.deployment, runner, this.logs);
  }

  // ---- identities: writes ----------------------------------------------------------------------------------

  /** Mints an identity to `signer`; returns its token id. */
  async registerIdentity(signer: string, institution: string, fingerprint: string, metadataCid: string) {
    return (await this.registerIdentityTx(signer, institution, fingerprint, metadataCid)).tokenId;
  }

  /** {@link registerIdentity}, with the receipt. */
  async registerIdentityTx(signer: string, institution: string, fingerprint: string, metadataCid: string) {
    const receipt = await send("register", () =>
      this.#identity.register(signer, bytes32Id(institution), bytes32Id(fingerprint), metadataCid),
    );
    const ev = findEvent(receipt, this.#identity.interface, "IdentityRegistered");
    return { tokenId: Number(ev.args.tokenId), receipt };
  }

  async suspend(tokenId: number): Promise<TransactionReceipt> {
    return send("suspend", () => this.#identity.suspend(tokenId));
  }

  async reinstate(tokenId: number): Promise<TransactionReceipt> {
    return send("reinstate", () => this.#identity.reinstate(tokenId));
  }

  async revoke(tokenId: number): Promise<TransactionReceipt> {
    return send("revoke", () => this.#identity.revoke(tokenId));
  }

  /** The identity's consent (signed by its current key `signer`) to move to `newSigner`, valid until `deadline`. */
  async signKeyRotation(signer: Signer, tokenId: number, newSigner: string, deadline: number): Promise<string> {
    const nonce = Number(await this.#identity.rotationNonce(tokenId));
    const domain = this.domain("FlowOfKnowledgeIdentity", this.deployment.identity);
    return signer.signTypedData(domain, KEY_ROTATION_TYPES, { identity: tokenId, newSigner, nonce, deadline });
  }

  /** Moves an identity to `newSigner` with its key's consent ({@link signKeyRotation}); registrar only. */
  async rotateKey(tokenId: number, newSigner: string, deadline: number, consent: string): Promise<TransactionReceipt> {
    return send("rotateKey", () => this.#identity.rotateKey(tokenId, newSigner, deadline, consent));
  }

  /** Proposes a rotation without consent; it can complete after the registry's delay unless the key cancels it. */
  async proposeKeyRotation(tokenId: number, newSigner: string): Promise<TransactionReceipt> {
    return send("proposeKeyRotation", () => this.#identity.proposeKeyRotation(tokenId, newSigner));
  }

  /** Cancels a pending rotation (from the identity's current key, or a registrar). */
  async cancelKeyRotation(tokenId: number): Promise<TransactionReceipt> {
    return send("cancelKeyRotation", () => this.#identity.cancelKeyRotation(tokenId));
  }

  async completeKeyRotation(tokenId: number): Promise<TransactionReceipt> {
    return send("completeKeyRotation", () => this.#identity.completeKeyRotation(tokenId));
  }

  /** The identity's pending rotation, or null. */
  async pendingKeyRotation(tokenId: number): Promise<{ newSigner: string; executableAt: number } | null> {
    const [newSigner, executableAt] = await this.#identity.pendingKeyRotation(tokenId);
    return newSigner === ZeroAddress ? null : { newSigner, executableAt: Number(executableAt) };
  }

  // ---- identities: reads -----------------------------------------------------------------------------------

  /** The live identity of `signer` (token id 0 when none), at `blockTag` (default latest). */
  async identityOfSigner(signer: string, blockTag?: BlockTag): Promise<{ tokenId: number; status: IdentityStatus }> {
    const [tokenId, status] = await this.#identity.identityOfSigner(signer, { blockTag });
    return { tokenId: Number(tokenId), status: Number(status) as IdentityStatus };
  }

  /** One identity as the registry stores it, at `blockTag` (default latest). */
  async identityRecord(tokenId: number, blockTag?: BlockTag): Promise<IdentityRecord> {
    const r = await this.#identity.identity(tokenId, { blockTag });
    return {
      tokenId,
      signer: r.signer,
      status: Number(r.status) as IdentityStatus,
      registeredAt: Number(r.registeredAt),
      institutionId: r.institutionId,
      modelFingerprint: r.modelFingerprint,
      metadataCid: r.metadataCid,
    };
  }

  /** Every identity with its key history, rebuilt from events alone. */
  async readIdentities() {
    return readIdentities(this.#identity, this.logs);
  }

  /** The roles `account` holds in the two contracts. */
  async roles(account: string): Promise<Roles> {
    const [admin, identityAdmin, registrar, taskAdmin] = await Promise.all([
      this.#federation.hasRole(ADMIN_ROLE, account),
      this.#identity.hasRole(ADMIN_ROLE, account),
      this.#identity.hasRole(await this.#identity.REGISTRAR_ROLE(), account),
      this.#federation.hasRole(await this.#federation.TASK_ADMIN_ROLE(), account),
    ]);
    return { admin, identityAdmin, registrar, taskAdmin };
  }

  /**
   * Hands roles from the connected account (which must hold both admin roles) to other accounts: each one given
   * is granted to its new holder and renounced by this account. Separates who registers hospitals, who creates
   * tasks and who may change roles.
   */
  async separateRoles(to: { registrar?: string; taskAdmin?: string; admin?: string }): Promise<void> {
    const me = await this.signerAddress();
    const registrar = await this.#identity.REGISTRAR_ROLE();
    const taskAdmin = await this.#federation.TASK_ADMIN_ROLE();
    if (to.registrar) {
      await send("grantRole", () => this.#identity.grantRole(registrar, to.registrar!));
      await send("renounceRole", () => this.#identity.renounceRole(registrar, me));
    }
    if (to.taskAdmin) {
      await send("grantRole", () => this.#federation.grantRole(taskAdmin, to.taskAdmin!));
      await send("renounceRole", () => this.#federation.renounceRole(taskAdmin, me));
    }
    if (to.admin) {
      for (const c of [this.#identity, this.#federation] as const) {
        await send("grantRole", () => c.grantRole(ADMIN_ROLE, to.admin!));
        await send("renounceRole", () => c.renounceRole(ADMIN_ROLE, me));
      }
    }
  }

  /** The identity registry the Federation contract reads (its `identities()`). */
  async identityRegistry(): Promise<string> {
    return this.#federation.identities();
  }

  // ---- tasks and rounds: writes ----------------------------------------------------------------------------

  /** Creates a task; returns its id. */
  async createTask(p: TaskParams): Promise<number> {
    return (await this.createTaskTx(p)).task;
  }

  /** {@link createTask}, with the receipt. */
  async createTaskTx(p: TaskParams) {
    const config = {
      baseModelCid: p.baseModelCid,
      baseModelSha256: p.baseModelSha256,
      loraConfigHash: p.loraConfigHash,
      aggregator: p.aggregator,
      strategyId: strategyId(p.strategy),
      minUpdates: p.minUpdates,
      roundDuration: p.roundDuration,
      maxRounds: p.maxRounds,
      maxExamples: p.maxExamples,
      maxUpdateNorm: normUnits(p.maxUpdateNorm),
    };
    const secure = (p.privacy ?? "open") === "secure";
    const dp = p.dp && dpUnits(p.dp, secure ? "distributed" : "central");
    const receipt = dp
      ? await send("createDpTask", () => this.#federation.createDpTask(config, secure ? (p.threshold ?? 0) : 0, dp))
      : secure
        ? await send("createSecureTask", () => this.#federation.createSecureTask(config, p.threshold ?? 0))
        : await send("createTask", () => this.#federation.createTask(config));
    return { task: Number(findEvent(receipt, this.#federation.interface, "TaskCreated").args.task), receipt };
  }

  // ---- secure rounds ---------------------------------------------------------------------------------------

  /** Advertises the connected identity's round keys (X25519 public keys, 0x hex). */
  async advertiseKeys(task: number, round: number, encryptionKey: string, maskKey: string) {
    return send("advertiseKeys", () => this.#federation.advertiseKeys(task, round, encryptionKey, maskKey));
  }

  /** Commits the connected identity's pinned dealing of shares. */
  async dealShares(task: number, round: number, cid: string, digest: string) {
    return send("dealShares", () => this.#federation.dealShares(task, round, cid, digest));
  }

  /** Commits the connected identity's pinned reveal. */
  async revealShares(task: number, round: number, cid: string, digest: string) {
    return send("revealShares", () => this.#federation.revealShares(task, round, cid, digest));
  }

  /** Moves a secure round to its next phase (the task's aggregator only). */
  async advancePhase(task: number, round: number) {
    return send("advancePhase", () => this.#federation.advancePhase(task, round));
  }

  /** The task's privacy mode and threshold. */
  async privacy(task: number): Promise<{ mode: PrivacyMode; threshold: number }> {
    const [mode, threshold] = await this.#federation.privacy(task);
    return { mode: PRIVACY_MODES[Number(mode)] ?? "open", threshold: Number(threshold) };
  }

  /** Announces where the connected account's IPFS node can be reached (multiaddrs, space-separated on-chain). */
  async announcePeer(multiaddrs: readonly string[]): Promise<TransactionReceipt> {
    return send("announcePeer", () => this.#federation.announcePeer(multiaddrs.join(" ")));
  }

  /** Each account's latest peer announcement (`PeerAnnounced`), as the raw text the chain holds: check it first. */
  async peerAnnouncements(): Promise<Map<string, { text: string; blockNumber: number }>> {
    const f = this.#federation;
    const events = await this.logs.read("PeerAnnounced()", (a, b) => f.queryFilter(f.filters.PeerAnnounced(), a, b));
    const latest = new Map<string, { text: string; blockNumber: number; index: number }>();
    for (const e of events) {
      const prev = latest.get(e.args.account);
      if (!prev || e.blockNumber > prev.blockNumber || (e.blockNumber === prev.blockNumber && e.index > prev.index))
        latest.set(e.args.account, { text: e.args.multiaddrs, blockNumber: e.blockNumber, index: e.index });
    }
    return new Map([...latest].map(([k, v]) => [k, { text: v.text, blockNumber: v.blockNumber }]));
  }

  /** A DP task's settings and the ε spent so far; null for a task without DP. */
  async dp(task: number): Promise<DpState | null> {
    const [config, spent] = await this.#federation.dpConfig(task);
    const placement = NOISE_PLACEMENTS[Number(config.placement)] ?? null;
    if (!placement) return null;
    return { ...dpFromUnits(config), placement, spent: Number(spent) / DP_SCALE };
  }

  /** The ε each finalized round of a DP task recorded (`PrivacySpent`), in round order. */
  async privacySpent(task: number): Promise<{ round: number; epsilon: number }[]> {
    const f = this.#federation;
    const events = await this.logs.read(`PrivacySpent(${task})`, (a, b) =>
      f.queryFilter(f.filters.PrivacySpent(task), a, b),
    );
    return events
      .map((e) => ({ round: Number(e.args.round), epsilon: Number(e.args.epsilon) / DP_SCALE }))
      .sort((a, b) => a.round - b.round);
  }

  /** Where a secure round stands (storage). */
  async secureRound(task: number, round: number): Promise<SecureRoundInfo> {
    // by position: an ethers Result's `keys` is its method, not the field
    const [phase, keys, dealt, masked, revealed] = [...(await this.#federation.secureRound(task, round))];
    return {
      phase: Number(phase) as SecurePhase,
      keys: Number(keys),
      dealt: Number(dealt),
      masked: Number(masked),
      revealed: Number(revealed),
    };
  }

  /** One secure round's keys, dealings, phase changes and reveals, from its events. */
  async readSecureRound(task: number, round: number) {
    return readSecureRound(this.#federation, this.logs, task, round);
  }

  async openFirstRound(task: number, startCid: string, startSha256: string): Promise<TransactionReceipt> {
    return send("openFirstRound", () => this.#federation.openFirstRound(task, startCid, startSha256));
  }

  /** Proposes `proposed` as the task's next aggregator (task admin only); it takes over when it accepts. */
  async proposeAggregator(task: number, proposed: string): Promise<TransactionReceipt> {
    return send("proposeAggregator", () => this.#federation.proposeAggregator(task, proposed));
  }

  /** The connected account, proposed as the task's aggregator, takes the task over. */
  async acceptAggregator(task: number): Promise<TransactionReceipt> {
    return send("acceptAggregator", () => this.#federation.acceptAggregator(task));
  }

  /**
   * Ends the open round without a global adapter; the next round starts from the same adapter `startCid`. The
   * aggregator may after the deadline, anyone after the deadline plus one round duration.
   */
  async closeRound(task: number, round: number, startCid: string): Promise<TransactionReceipt> {
    return send("closeRound", () => this.#federation.closeRound(task, round, startCid));
  }

  /**
   * The aggregator declares that it could not fetch these identities' updates of the open round (an open task): the
   * claim is public and verify excuses them from the contributor set, counting each such claim.
   */
  async declareUnavailable(task: number, round: number, identities: readonly number[]): Promise<TransactionReceipt> {
    return send("declareUnavailable", () => this.#federation.declareUnavailable(task, round, [...identities]));
  }

  /** Submits `c` from the connected account, which must hold an Active identity. */
  async submitUpdate(c: UpdateCommitment): Promise<TransactionReceipt> {
    return send("submitUpdate", () =>
      this.#federation.submitUpdate(c.task, c.round, c.cid, c.adapterSha256, c.numExamples, c.metricsDigest),
    );
  }

  /** The EIP-712 signature by `signer` (identity `b.identity`'s key) that lets anyone relay `c` until `b.deadline`. */
  async signUpdate(signer: Signer, c: UpdateCommitment, b: RelayBinding): Promise<string> {
    return signer.signTypedData(this.eip712Domain(), UPDATE_TYPES, toTypedMessage(c, b));
  }

  /** The address whose key signed `c` and `b` with `signature` for this deployment. */
  recoverUpdateSigner(c: UpdateCommitment, b: RelayBinding, signature: string): string {
    return verifyTypedData(this.eip712Domain(), UPDATE_TYPES, toTypedMessage(c, b), signature);
  }

  /** Relays `c` with the identity's signature over `c` and `b`; the connected account pays the gas. */
  async submitSignedUpdate(c: UpdateCommitment, b: RelayBinding, signature: string): Promise<TransactionReceipt> {
    return send("submitUpdateWithSignature", () =>
      this.#federation.submitUpdateWithSignature(
        c.task,
        c.round,
        b.identity,
        c.cid,
        c.adapterSha256,
        c.numExamples,
        c.metricsDigest,
        b.deadline,
        signature,
      ),
    );
  }

  /**
   * Publishes a round's global adapter made by `strategy` (which must be the task's); contributors in increasing
   * id order, weights adding up to 1e18.
   */
  async finalizeRound(
    task: number,
    round: number,
    globalCid: string,
    globalSha256: string,
    contributors: readonly number[],
    weights: readonly bigint[],
    strategy: string,
    epsilonSpent?: number,
  ): Promise<TransactionReceipt> {
    const args: [number, number, string, string, number[], bigint[], string] = [
      task,
      round,
      globalCid,
      globalSha256,
      [...contributors],
      [...weights],
      strategyId(strategy),
    ];
    if (epsilonSpent === undefined) return send("finalizeRound", () => this.#federation.finalizeRound(...args));
    const units = epsilonUnits(epsilonSpent);
    return send("finalizeDpRound", () => this.#federation.finalizeDpRound(...args, units));
  }

  /** The EIP-712 domain of relayed updates (the Federation contract). */
  eip712Domain() {
    return this.domain("FlowOfKnowledgeFederation", this.deployment.federation);
  }

  /** An EIP-712 domain of ours: `name`, version 1, this chain, `contract`. */
  private domain(name: string, contract: string) {
    return { name, version: "1", chainId: this.deployment.chainId, verifyingContract: contract };
  }

  // ---- tasks and rounds: reads -----------------------------------------------------------------------------

  /** Number of tasks created; ids run from 1 to this number. */
  async totalTasks(): Promise<number> {
    return Number(await this.#federation.totalTasks());
  }

  /** A task's settings and where it stands now. */
  async taskInfo(task: number): Promise<TaskInfo> {
    const t = await this.#federation.task(task);
    return {
      aggregator: t.aggregator,
      pendingAggregator: t.pendingAggregator === ZeroAddress ? null : t.pendingAggregator,
      minUpdates: Number(t.minUpdates),
      maxRounds: Number(t.maxRounds),
      currentRound: Number(t.currentRound),
      roundDuration: Number(t.roundDuration),
      maxExamples: Number(t.maxExamples),
      maxUpdateNorm: Number(t.maxUpdateNorm) / NORM_SCALE,
      roundDeadline: Number(t.roundDeadline),
      status: Number(t.status) as TaskStatus,
      baseModelSha256: t.baseModelSha256,
      loraConfigHash: t.loraConfigHash,
      strategyId: t.strategyId,
      strategy: decodeStrategy(t.strategyId),
      headSha256: t.headSha256,
    };
  }

  /** What `identity` submitted in `round` of `task`, from storage (zeros when nothing). */
  async submission(task: number, round: number, identity: number): Promise<SubmissionInfo> {
    const s = await this.#federation.submission(task, round, identity);
    return {
      adapterSha256: s.adapterSha256,
      numExamples: Number(s.numExamples),
      submittedAt: Number(s.submittedAt),
      aggregated: s.aggregated,
      weight: s.weight,
    };
  }

  /** Rebuilds a task's whole history from events alone. */
  async readTaskHistory(task: number) {
    return readTaskHistory(this.#federation, this.logs, task);
  }

  /** One round from its own indexed events (three log queries); null while it has not opened. */
  async readRound(task: number, round: number) {
    return readRound(this.#federation, this.logs, task, round);
  }

  /** Every RoundFinalized event of one round. */
  async finalizations(task: number, round: number) {
    return readFinalizations(this.#federation, this.logs, task, round);
  }

  /** Every UpdateSubmitted event of `identity` in one round. */
  async submissionEvents(task: number, round: number, identity: number) {
    return readSubmissions(this.#federation, this.logs, task, round, identity);
  }

  /** The commitment and signature a relayed submission's transaction carried; null when it is no such call. */
  async relayedCall(transactionHash: string): Promise<RelayedCall | null> {
    const tx = await this.provider().getTransaction(transactionHash);
    if (!tx) return null;
    const parsed = this.#federation.interface.parseTransaction({ data: tx.data });
    if (!parsed || parsed.name !== "submitUpdateWithSignature") return null;
    const [task, round, identity, cid, adapterSha256, numExamples, metricsDigest, deadline, signature] = parsed.args;
    const commitment = {
      task: Number(task),
      round: Number(round),
      cid,
      adapterSha256,
      numExamples: Number(numExamples),
      metricsDigest,
    };
    return { commitment, binding: { identity: Number(identity), deadline: Number(deadline) }, signature };
  }

  /** A transaction decoded against both contracts: the call and every event of ours it emitted. */
  async describeTransaction(hash: string): Promise<DecodedTransaction | null> {
    const provider = this.provider();
    const [tx, receipt] = await Promise.all([provider.getTransaction(hash), provider.getTransactionReceipt(hash)]);
    if (!tx) return null;
    const call =
      this.#federation.interface.parseTransaction({ data: tx.data }) ??
      this.#identity.interface.parseTransaction({ data: tx.data });
    const events = (receipt?.logs ?? [])
      .map((l) => this.#federation.interface.parseLog(l) ?? this.#identity.interface.parseLog(l))
      .filter((e) => e !== null)
      .map((e) => ({ name: e.name, args: e.args.toObject() }));
    return {
      hash,
      from: tx.from,
      to: tx.to,
      block: tx.blockNumber,
      gasUsed: receipt?.gasUsed,
      call: call && { name: call.name, args: call.args.toObject() },
      events,
    };
  }

  // ---- the chain ---------------------------------------------------------------------------------------------

  /** The latest block number. */
  async blockNumber(): Promise<number> {
    return this.provider().getBlockNumber();
  }

  /**
   * The chain's clock: the timestamp the next block would carry (the pending block's; the latest block's where a
   * node does not serve a pending block). Clients and the aggregator both judge deadlines by it.
   */
  async chainTime(): Promise<number> {
    const provider = this.provider() as Provider & { send?: (method: string, params: unknown[]) => Promise<unknown> };
    // raw JSON-RPC: ethers' block formatter refuses a pending block without a number (as Hardhat's EDR serves it)
    const pending = (await provider.send?.("eth_getBlockByNumber", ["pending", false]).catch(() => null)) as {
      timestamp?: string;
    } | null;
    if (pending?.timestamp) return Number(pending.timestamp);
    const latest = await provider.getBlock("latest");
    if (!latest) throw new ChainDataError("the node returned no block");
    return latest.timestamp;
  }

  private async signerAddress(): Promise<string> {
    const runner = this.runner as Partial<Signer>;
    if (typeof runner.getAddress !== "function") throw new ChainDataError("the ledger's runner cannot sign");
    return runner.getAddress();
  }

  private provider(): Provider {
    const provider = this.runner.provider;
    if (!provider) throw new ChainDataError("the ledger's runner has no provider");
    return provider;
  }
}

function toTypedMessage(c: UpdateCommitment, b: RelayBinding) {
  return {
    task: c.task,
    round: c.round,
    identity: b.identity,
    cid: c.cid,
    adapterSha256: c.adapterSha256,
    numExamples: c.numExamples,
    metricsDigest: c.metricsDigest,
    deadline: b.deadline,
  };
}

/** OpenZeppelin's DEFAULT_ADMIN_ROLE. */
const ADMIN_ROLE = ZeroHash;

/** A norm in the chain's 1e-6 units, rounded down (at least 1: the contract refuses a zero bound). */
export function normUnits(norm: number): bigint {
  if (!(norm > 0) || !Number.isFinite(norm)) throw new InvalidArgumentError(`max update norm must be > 0: ${norm}`);
  return BigInt(Math.max(1, Math.floor(norm * NORM_SCALE)));
}

function findEvent(
  receipt: TransactionReceipt,
  iface: Federation["interface"] | LLMIdentity["interface"],
  name: string,
) {
  for (const log of receipt.logs) {
    const parsed = iface.parseLog(log);
    if (parsed?.name === name) return parsed;
  }
  throw new ChainDataError(`transaction ${receipt.hash} emitted no ${name}`);
}
