/**
 * A hospital's part in a secure round (node/secure): advertise per-round keys, train, deal encrypted Shamir shares
 * of its mask secrets to every identity that advertised keys, submit its clipped, quantized, weighted update
 * masked, and finally reveal — for each dealer, as the chain's record of who submitted decides — the seed share or
 * the key share. Its plaintext update never leaves the hospital: nothing but the masked vector, the encrypted
 * dealing and the reveal is pinned. Each step is done once, judged from the chain, so a restart goes on where it
 * stopped (with `stateDir`, the round's secrets are kept there, readable by the owner only).
 */
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  isRevert,
  Revert,
  SecurePhase,
  TaskStatus,
  type DpParams,
  type FederationLedger,
  type TaskInfo,
} from "../chain/index.js";
import { normalSource, type NormalSource } from "../dp/noise.js";
import { sha256Hex } from "../digest.js";
import { FokError } from "../errors.js";
import { parseAdapter } from "../model/adapter.js";
import type { LoraConfig, ModelConfig } from "../model/lora.js";
import type { AdapterStore } from "../store/index.js";
import { serializeMasked } from "../secure/ring.js";
import {
  checkDealing,
  deal,
  newRoundSecrets,
  openShares,
  reveal,
  type RoundKeys,
  type RoundSecrets,
  type SecureContext,
} from "../secure/shares.js";
import { maskVector, updateVector, weightedUpdate } from "../secure/unmask.js";
import { B_ONLY_STRATEGIES, SECURE_DOCUMENT_BYTES, secureSpec } from "../secure/round.js";
import { sleep } from "./rounds.js";

/** A secure task's client lacks what secure mode needs (the model and LoRA config to lay out its update). */
export class SecureClientError extends FokError {}

/** What the secure participant needs of its client. */
export interface SecureParticipantOptions {
  ledger: FederationLedger;
  store: AdapterStore;
  task: number;
  identity: number;
  threshold: number;
  model: ModelConfig;
  lora: LoraConfig;
  /** The task's DP settings (null: none): the client then adds its share of the noise and claims weight 1. */
  dp: DpParams | null;
  /** Where that noise comes from (default: fresh OS randomness per participant). */
  normals?: NormalSource;
  /** Trains this round's update from its start adapter: the adapter's bytes and the examples it claims. */
  train: () => Promise<{ adapter: Uint8Array; start: Uint8Array; numExamples: number; metricsDigest: string }>;
  stateDir?: string;
  pollMs: number;
  log: (line: string) => void;
}

export type SecureOutcome = "revealed" | "missed" | "round-closed";

interface SecureState {
  secrets: RoundSecrets;
  encryptionKey: string;
  maskKey: string;
}

export class SecureParticipant {
  /** The round's training, started once the keys are out and awaited only when the masked update is due: the
   * phases go on (shares are dealt) while it trains. */
  private training: ReturnType<SecureParticipantOptions["train"]> | null = null;

  constructor(private readonly o: SecureParticipantOptions) {}

  /** Takes part in `round` until this identity has revealed, missed a step, or the round ended. */
  async run(round: number, info: TaskInfo): Promise<SecureOutcome> {
    const { ledger, task, identity } = this.o;
    const ctx: SecureContext = { task, round, threshold: this.o.threshold };
    const state = await this.state(round);
    for (;;) {
      const now = await ledger.taskInfo(task);
      if (now.status !== TaskStatus.Open || now.currentRound !== round) return "round-closed";
      const { phase } = await ledger.secureRound(task, round);
      const hist = await ledger.readSecureRound(task, round);
      const mine = hist.keys.find((k) => k.identity === identity);
      if (mine && (mine.encryptionKey !== state.encryptionKey || mine.maskKey !== state.maskKey)) {
        // restarted without the state folder that held this round's secrets: it cannot go on (if it dealt, its
        // shares let the others unmask without it)
        this.o.log(`round ${round}: this round's secrets are lost (keys on-chain are not these); sitting it out`);
        return "missed";
      }
      const advertised = mine !== undefined;
      const dealt = hist.dealings.some((d) => d.identity === identity);
      const submitted = (await ledger.submission(task, round, identity)).numExamples > 0;
      if (advertised && !submitted && phase <= SecurePhase.Masked && !this.training) {
        this.training = this.o.train();
        this.training.catch(() => {}); // a failure surfaces where it is awaited (submitMasked), not as unhandled
      }
      if (phase === SecurePhase.Keys && !advertised) {
        await this.step(() => ledger.advertiseKeys(task, round, state.encryptionKey, state.maskKey));
        this.o.log(`round ${round}: advertised keys`);
      } else if (phase === SecurePhase.Shares && advertised && !dealt) {
        await this.deal(ctx, state, hist.keys);
      } else if (phase === SecurePhase.Masked && dealt && !submitted) {
        await this.submitMasked(
          ctx,
          state,
          info,
          hist.keys.filter((k) => hist.dealings.some((d) => d.identity === k.identity)),
        );
      } else if (phase === SecurePhase.Reveal && submitted) {
        if (!hist.reveals.some((r) => r.identity === identity)) await this.reveal(ctx, state, round);
        return "revealed";
      } else if (phase > SecurePhase.Keys && !advertised) return "missed";
      else if (phase > SecurePhase.Shares && !dealt) return "missed";
      else if (phase > SecurePhase.Masked && !submitted) return "missed";
      else await sleep(this.o.pollMs);
    }
  }

  /** Runs a transaction; a step the chain already has (a restart, a race) is not an error. */
  private async step(tx: () => Promise<unknown>): Promise<void> {
    try {
      await tx();
    } catch (e) {
      if (isRevert(e, Revert.AlreadyDone) || isRevert(e, Revert.AlreadySubmitted)) return;
      throw e;
    }
  }

  private async deal(ctx: SecureContext, state: SecureState, keys: readonly RoundKeys[]): Promise<void> {
    const dealing = await deal(ctx, this.o.identity, state.secrets, keys);
    const bytes = new TextEncoder().encode(JSON.stringify(dealing));
    const cid = await this.o.store.add(bytes);
    await this.step(() => this.o.ledger.dealShares(ctx.task, ctx.round, cid, sha256Hex(bytes)));
    this.o.log(`round ${ctx.round}: dealt shares to ${keys.length} identities (threshold ${ctx.threshold}), ${cid}`);
  }

  private async submitMasked(
    ctx: SecureContext,
    state: SecureState,
    info: TaskInfo,
    participants: RoundKeys[],
  ): Promise<void> {
    const t = await this.training!;
    const { model, lora } = this.o;
    const onlyB = B_ONLY_STRATEGIES.has(info.strategy);
    const start = parseAdapter(t.start, model, lora).weights;
    const spec = secureSpec(info, ctx.task, ctx.round, ctx.threshold, start, this.o.dp);
    const delta = updateVector(parseAdapter(t.adapter, model, lora).weights, start, onlyB);
    if (spec.noiseStd > 0) {
      // this client's share of the round's DP noise: added here, before masking, so nobody ever sees it alone
      const z = (this.o.normals ?? normalSource())(delta.length);
      for (let i = 0; i < delta.length; i++) delta[i]! += spec.noiseStd * z[i]!;
    }
    const numExamples = Math.min(t.numExamples, info.maxExamples);
    const x = weightedUpdate(delta, spec.bound, spec.scaleBits, spec.uniform ? 1 : numExamples);
    const y = maskVector(ctx, this.o.identity, state.secrets, x, participants);
    const header = { task: ctx.task, round: ctx.round, identity: this.o.identity, scaleBits: spec.scaleBits };
    const bytes = serializeMasked(header, y);
    const cid = await this.o.store.add(bytes);
    const c = {
      task: ctx.task,
      round: ctx.round,
      cid,
      adapterSha256: sha256Hex(bytes),
      numExamples,
      metricsDigest: t.metricsDigest,
    };
    await this.step(() => this.o.ledger.submitUpdate(c));
    this.o.log(`round ${ctx.round}: submitted its masked update ${cid} (${participants.length} participants)`);
  }

  private async reveal(ctx: SecureContext, state: SecureState, round: number): Promise<void> {
    const { ledger, store, identity } = this.o;
    const hist = await ledger.readSecureRound(ctx.task, round);
    const survivors = new Set((await ledger.readRound(ctx.task, round))!.submissions.map((s) => s.identity));
    const advertised = hist.keys.map((k) => k.identity);
    const opened = new Map<number, { seed: Uint8Array; key: Uint8Array }>();
    for (const d of hist.dealings) {
      try {
        const bytes = await store.get(d.cid, { expectedSha256: d.digest, maxBytes: SECURE_DOCUMENT_BYTES });
        const dealing = checkDealing(ctx, d.identity, advertised, JSON.parse(new TextDecoder().decode(bytes)));
        const keys = hist.keys.find((k) => k.identity === d.identity)!;
        opened.set(d.identity, openShares(ctx, dealing, identity, state.secrets, keys));
      } catch (e) {
        this.o.log(`round ${round}: no share of identity ${d.identity} to reveal: ${(e as Error).message}`);
      }
    }
    const doc = reveal(ctx, identity, survivors, opened);
    const bytes = new TextEncoder().encode(JSON.stringify(doc));
    const cid = await store.add(bytes);
    await this.step(() => ledger.revealShares(ctx.task, round, cid, sha256Hex(bytes)));
    const dropped = doc.shares.filter((s) => s.kind === "key").map((s) => s.dealer);
    this.o.log(`round ${round}: revealed ${doc.shares.length} shares (key shares of dropped [${dropped.join(", ")}])`);
  }

  /** This round's secrets: kept in the state folder (owner-only) when there is one, so a restart can go on. */
  private async state(round: number): Promise<SecureState> {
    const path = this.o.stateDir && join(this.o.stateDir, `task-${this.o.task}-round-${round}-secure.json`);
    if (path) {
      try {
        return JSON.parse(await readFile(path, "utf8")) as SecureState;
      } catch {
        // none yet
      }
    }
    const fresh = newRoundSecrets();
    if (path) {
      await mkdir(this.o.stateDir!, { recursive: true });
      await writeFile(path, JSON.stringify(fresh), { mode: 0o600 });
    }
    return fresh;
  }
}
