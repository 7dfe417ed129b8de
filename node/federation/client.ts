/**
 * A hospital's client: for each open round of its task it fetches and verifies the starting adapter, trains LoRA on
 * its own data (locally or in a worker), pins the new adapter and commits {CID, sha256, examples, metrics digest}
 * on-chain under its identity — directly, or signed for a relayer. It resumes after a crash from chain state and
 * its state folder and never submits twice for a round.
 */
import { sha256Hex } from "../digest.js";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Signer } from "ethers";
import {
  FederationLedger,
  IdentityStatus,
  Revert,
  TaskStatus,
  isRevert,
  type DpParams,
  type TaskInfo,
  type UpdateCommitment,
} from "../chain/index.js";
import { FokError } from "../errors.js";
import { formatWeight } from "../weights.js";
import { FetchTimeoutError, NotFoundError, type AdapterStore } from "../store/index.js";
import type { TrainConfig } from "../train/train.js";
import type { RoundTrainer } from "./trainer-pool.js";
import { canonicalJson } from "./local-trainer.js";
import { roundBudget, sleep, untilDone, waitForRound } from "./rounds.js";
import { SecureClientError, SecureParticipant } from "./secure-client.js";
import { B_ONLY_STRATEGIES } from "../secure/round.js";
import type { LoraConfig, ModelConfig } from "../model/lora.js";

export interface ClientOptions {
  /** The ledger as seen by the identity's key (direct) or by a relayer's account (with `relayFor`). */
  ledger: FederationLedger;
  /** The identity's signing key. */
  signer: Signer;
  /** Submit through the ledger's account with the identity's EIP-712 signature instead of sending itself. */
  relay?: boolean;
  store: AdapterStore;
  task: number;
  trainer: RoundTrainer;
  train: Partial<TrainConfig>;
  /** Where the client keeps per-round state (CID before submission) and its metrics. Default: none (in memory). */
  stateDir?: string;
  /** The largest a start adapter of the task may be (adapterByteLimit of its model and LoRA config). */
  maxAdapterBytes?: number;
  /** The task's model and LoRA config: a secure task's client lays out its update with them (required there). */
  model?: ModelConfig;
  lora?: LoraConfig;
  /** How often to poll the chain, ms. Default 500. */
  pollMs?: number;
  log?: (line: string) => void;
}

export type RoundOutcome =
  | "submitted"
  | "already-submitted"
  | "not-open"
  | "deadline-passed"
  | "round-closed"
  /** Secure rounds: this identity revealed its shares, or missed a step (it then sits the round out). */
  | "revealed"
  | "missed";

/** The client's identity is missing or not Active. */
export class ClientIdentityError extends FokError {}

interface RoundState {
  cid: string;
  adapterSha256: string;
  numExamples: number;
  metricsDigest: string;
  metrics: unknown;
}

export class FederationClient {
  private identityId = 0;
  private readonly memoryState = new Map<number, RoundState>();

  constructor(private readonly o: ClientOptions) {}

  private log(line: string) {
    this.o.log?.(line);
  }

  /** This client's identity token id (checked Active). */
  async identity(): Promise<number> {
    if (this.identityId) return this.identityId;
    const addr = await this.o.signer.getAddress();
    const { tokenId, status } = await this.o.ledger.identityOfSigner(addr);
    if (tokenId === 0 || status !== IdentityStatus.Active) {
      throw new ClientIdentityError(
        `${addr} holds no active identity (token ${tokenId}, status ${IdentityStatus[status]})`,
      );
    }
    this.identityId = tokenId;
    return tokenId;
  }

  /** Trains and submits for `round` if it is the open round and this identity has not submitted yet. */
  async participate(round: number): Promise<RoundOutcome> {
    const { ledger, task } = this.o;
    const identity = await this.identity();
    const info = await ledger.taskInfo(task);
    if (info.status !== TaskStatus.Open || info.currentRound !== round) return "not-open";
    const submitted = (await ledger.submission(task, round, identity)).numExamples > 0;
    // a DP task whose budget this round would exceed: PrivacyBudgetError, before anything is trained or sent
    const dp = submitted ? await ledger.dp(task) : ((await roundBudget(ledger, task, round))?.dp ?? null);
    const privacy = await ledger.privacy(task);
    if (privacy.mode === "secure") return this.secure(privacy.threshold, round, info, dp).run(round, info);
    if (submitted) return "already-submitted";
    if ((await ledger.chainTime()) > info.roundDeadline) return "deadline-passed";
    const state = await this.trainedUpdate(round, identity, info);
    // the task caps what one identity may claim: a hospital with more data claims the cap
    const numExamples = Math.min(state.numExamples, info.maxExamples);
    if (numExamples < state.numExamples) this.log(`round ${round}: claims the task's cap of ${numExamples} examples`);
    const c: UpdateCommitment = {
      task,
      round,
      cid: state.cid,
      adapterSha256: state.adapterSha256,
      numExamples,
      metricsDigest: state.metricsDigest,
    };
    try {
      if (this.o.relay) {
        // the signature names this identity and dies with the round's deadline: a relayer cannot hold it for later
        const binding = { identity, deadline: info.roundDeadline };
        await ledger.submitSignedUpdate(c, binding, await ledger.signUpdate(this.o.signer, c, binding));
      } else await ledger.submitUpdate(c);
    } catch (e) {
      if (isRevert(e, Revert.AlreadySubmitted)) return "already-submitted";
      if (isRevert(e, Revert.DeadlinePassed) || isRevert(e, Revert.SignatureExpired)) return "deadline-passed";
      if (isRevert(e, Revert.RoundNotOpen)) return "round-closed"; // finalized while this client trained
      throw e;
    }
    this.log(`round ${round}: submitted ${state.cid}`);
    return "submitted";
  }

  /** This round's secure participant: the update stays here; only masked, encrypted and revealed bytes leave. */
  private secure(threshold: number, round: number, info: TaskInfo, dp: DpParams | null): SecureParticipant {
    const { model, lora } = this.o;
    if (!model || !lora) throw new SecureClientError("a secure task's client needs the task's model and LoRA config");
    if (this.o.relay) {
      throw new SecureClientError(
        "a secure task's client sends its keys, shares and reveals itself: relayed submission is not supported there",
      );
    }
    return new SecureParticipant({
      ledger: this.o.ledger,
      store: this.o.store,
      task: this.o.task,
      identity: this.identityId,
      threshold,
      model,
      lora,
      dp,
      train: async () => {
        const { out, start } = await this.train(round, this.identityId, info);
        const metricsDigest = sha256Hex(Buffer.from(canonicalJson(out.metrics)));
        this.log(`round ${round}: trained (${out.tokensPerSec} tok/s, update norm ${fmt(out.metrics.updateNorm)})`);
        return { adapter: out.adapter, start, numExamples: out.metrics.numExamples, metricsDigest };
      },
      stateDir: this.o.stateDir,
      pollMs: this.o.pollMs ?? 500,
      log: (l) => this.log(l),
    });
  }

  /** Trains this round's update from the round's start adapter (fetched and checked against the chain). */
  private async train(round: number, identity: number, info: TaskInfo) {
    const { maxUpdateNorm } = info;
    const { ledger, task } = this.o;
    const opened = await waitForRound(ledger, task, round, this.o.pollMs ?? 500);
    const maxBytes = this.o.maxAdapterBytes;
    const start = await this.o.store.get(opened.startCid, { expectedSha256: opened.startSha256, maxBytes });
    this.log(`round ${round}: training from ${opened.startCid}`);
    // FFA-LoRA tasks train B only: A stays the task's initialisation
    const freezeA = B_ONLY_STRATEGIES.has(info.strategy);
    const train = freezeA ? { ...this.o.train, freezeA } : this.o.train;
    const job = { task, round, identity, startAdapter: start, train, maxUpdateNorm };
    const out = await this.o.trainer.trainRound(job);
    const clipped = out.metrics.clippedFrom;
    if (clipped !== null)
      this.log(`round ${round}: update norm ${fmt(clipped)} clipped to the task's ${maxUpdateNorm}`);
    return { out, start };
  }

  /** This round's update: the one pinned before a crash, if its bytes are still here; else trained and pinned now. */
  private async trainedUpdate(round: number, identity: number, info: TaskInfo): Promise<RoundState> {
    const saved = await this.loadState(round);
    if (saved && (await this.o.store.has(saved.cid))) return saved;
    const { out } = await this.train(round, identity, info);
    const cid = await this.o.store.add(out.adapter);
    const state: RoundState = {
      cid,
      adapterSha256: sha256Hex(out.adapter),
      numExamples: out.metrics.numExamples,
      metricsDigest: sha256Hex(Buffer.from(canonicalJson(out.metrics))),
      metrics: out.metrics,
    };
    await this.saveState(round, state); // before submitting: a crash from here on resubmits these same bytes
    const loss = `${fmt(out.metrics.heldOutLossBefore)} → ${fmt(out.metrics.heldOutLossAfter)}`;
    const norm = `update norm ${fmt(out.metrics.updateNorm)}`;
    this.log(`round ${round}: trained (${out.tokensPerSec} tok/s, held-out loss ${loss}, ${norm}), pinned ${cid}`);
    return state;
  }

  /** Participates in every round until the task completes (or `signal` aborts). */
  async run(signal?: AbortSignal): Promise<void> {
    const { ledger, task } = this.o;
    let lastRound = 0;
    const pollMs = this.o.pollMs ?? 500;
    let reported = 0;
    const step = async (): Promise<true | undefined> => {
      const info = await ledger.taskInfo(task);
      // what became of this identity's update in the round it last took part in, once that round has ended
      if (lastRound > reported && (info.status === TaskStatus.Completed || info.currentRound > lastRound)) {
        await this.reportOutcome(lastRound);
        reported = lastRound;
      }
      if (info.status === TaskStatus.Completed) {
        this.log(`task ${task} completed`);
        return true;
      }
      const round = info.currentRound;
      if (info.status === TaskStatus.Open && round !== lastRound) {
        const outcome = await this.participate(round).catch((e: unknown) => {
          // a blob no peer served in time (a WAN, a peer offline): try the round again at the next poll
          if (!(e instanceof FetchTimeoutError || e instanceof NotFoundError)) throw e;
          this.log(`round ${round}: ${e.message}; trying again`);
          return "not-open" as const;
        });
        if (outcome !== "not-open") lastRound = round;
        if (outcome === "deadline-passed") this.log(`round ${round}: deadline passed, skipped`);
        if (outcome === "round-closed") this.log(`round ${round}: finalized before this update was in, skipped`);
        if (outcome === "missed") this.log(`round ${round}: a secure step was missed; this identity sits it out`);
      }
      await sleep(pollMs, signal);
      return undefined;
    };
    await untilDone(step, { signal, log: (l) => this.log(l) });
  }

  /** One line on what the ended round did with this identity's update: its weight, or why it was left out. */
  private async reportOutcome(round: number): Promise<void> {
    const id = this.identityId;
    const r = await this.o.ledger.readRound(this.o.task, round);
    if (!r || !id || !r.submissions.some((s) => s.identity === id)) return;
    const k = r.finalized?.contributors.indexOf(id) ?? -1;
    const declared = r.unavailable.find((d) => d.identities.includes(id));
    if (k >= 0) this.log(`round ${round}: aggregated with weight ${formatWeight(r.finalized!.weights[k]!)}`);
    else if (declared)
      this.log(
        `round ${round}: the aggregator declared this update unavailable and left it out (tx ` +
          `${declared.transactionHash}); it is pinned here, for anyone who disputes that`,
      );
    else this.log(`round ${round}: this update is not in the round's global adapter`);
  }

  private statePath(round: number) {
    return join(this.o.stateDir!, `task-${this.o.task}-round-${round}.json`);
  }

  private async loadState(round: number): Promise<RoundState | null> {
    if (!this.o.stateDir) return this.memoryState.get(round) ?? null;
    try {
      return JSON.parse(await readFile(this.statePath(round), "utf8"));
    } catch {
      return null;
    }
  }

  private async saveState(round: number, s: RoundState): Promise<void> {
    if (!this.o.stateDir) {
      this.memoryState.set(round, s);
      return;
    }
    await mkdir(this.o.stateDir, { recursive: true });
    await writeFile(this.statePath(round), JSON.stringify(s, null, 2));
  }
}

function fmt(x: number | null): string {
  return x === null ? "-" : x.toFixed(3);
}
