/**
 * `fok verify`: checks a task's whole provenance trusting nothing but the chain and the bytes. It re-reads every
 * event, fetches every adapter by CID and checks its sha256 against the chain, checks each submitter was an active
 * identity when it submitted and each relayed signature, re-runs each round's aggregation on the listed
 * contributors' updates with the recorded weights and compares the result byte for byte with the published global
 * adapter, and checks the lineage (round 1 starts from an initial adapter of the task's base model that changes
 * nothing, every later round from the previous global adapter). One result per check; any failure names round,
 * identity and check.
 */
import { sha256Hex } from "../digest.js";
import { verifyTypedData } from "ethers";
import {
  FederationLedger,
  IdentityStatus,
  UPDATE_TYPES,
  decodeStrategy,
  type RoundHistory,
  type TaskHistory,
} from "../chain/index.js";
import { parseAdapter, serializeAdapter, type LoraWeights, type ParsedAdapter } from "../model/adapter.js";
import type { GPTConfig } from "../model/gpt.js";
import type { LoraConfig } from "../model/lora.js";
import { FedAvg, flattenWeights, strategyFor, unitsToWeights, type ClientUpdate } from "../aggregate/index.js";

export interface Check {
  round: number | null;
  identity: number | null;
  check: string;
  ok: boolean;
  detail: string;
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
  get(cid: string): Promise<Uint8Array>;
}

export interface VerifyOptions {
  model: GPTConfig;
  lora: LoraConfig;
  /** Only this round (lineage still checks its start). */
  round?: number;
  /** Held-out tokens and a loss function over adapter weights: adds each contributor's leave-one-out effect. */
  heldOut?: { loss: (weights: LoraWeights) => Promise<number> };
}

export async function verifyTask(
  ledger: FederationLedger,
  store: ByteSource,
  task: number,
  o: VerifyOptions,
): Promise<VerifyReport> {
  const history = await ledger.readTaskHistory(task);
  const checks: Check[] = [];
  const contributions: ContributionFigure[] = [];
  const add = (round: number | null, identity: number | null, check: string, ok: boolean, detail: string) =>
    checks.push({ round, identity, check, ok, detail });

  const fetchVerified = async (
    round: number | null,
    identity: number | null,
    what: string,
    cid: string,
    sha: string,
  ): Promise<Uint8Array | null> => {
    try {
      const bytes = await store.get(cid);
      const got = sha256Hex(bytes);
      add(
        round,
        identity,
        `${what} digest`,
        got === sha,
        got === sha ? `${cid} matches ${sha.slice(0, 12)}…` : `${cid} has sha256 ${got}, chain says ${sha}`,
      );
      return got === sha ? bytes : null;
    } catch (e) {
      add(round, identity, `${what} digest`, false, `${cid} could not be read: ${(e as Error).message}`);
      return null;
    }
  };

  const base = await fetchVerified(null, null, "base model", history.baseModelCid, history.baseModelSha256);
  void base;

  let previousGlobal: { cid: string; sha: string } | null = null;
  for (const round of history.rounds) {
    if (o.round !== undefined && round.round !== o.round) {
      if (round.finalized) previousGlobal = { cid: round.finalized.globalCid, sha: round.finalized.globalSha256 };
      continue;
    }
    // lineage
    const start = await fetchVerified(round.round, null, "start adapter", round.startCid, round.startSha256);
    let startParsed: ParsedAdapter | null = null;
    if (round.round === 1) {
      if (start) {
        try {
          startParsed = parseAdapter(start, o.model, o.lora);
          const zeroB = [...startParsed.weights.values()].every((w) => w.B.every((x) => x === 0));
          const ok =
            startParsed.metadata.kind === "init" &&
            startParsed.metadata.baseModelSha256 === history.baseModelSha256 &&
            zeroB;
          add(
            1,
            null,
            "lineage",
            ok,
            ok
              ? "round 1 starts from an initial adapter of the task's base model (B = 0)"
              : `round 1's start adapter is not an unchanged initialisation of base ${history.baseModelSha256} (kind ${startParsed.metadata.kind}, base ${startParsed.metadata.baseModelSha256}, B all zero: ${zeroB})`,
          );
        } catch (e) {
          add(1, null, "lineage", false, `start adapter does not parse: ${(e as Error).message}`);
        }
      }
    } else {
      const ok =
        previousGlobal !== null && previousGlobal.cid === round.startCid && previousGlobal.sha === round.startSha256;
      add(
        round.round,
        null,
        "lineage",
        ok,
        ok
          ? `starts from round ${round.round - 1}'s global adapter`
          : `starts from ${round.startCid}, not round ${round.round - 1}'s global ${previousGlobal?.cid ?? "(none)"}`,
      );
      if (start) startParsed = safeParse(start, o);
    }

    // submissions
    const updates = new Map<number, { u: ClientUpdate; parsed: ParsedAdapter }>();
    for (const s of round.submissions) {
      const [tokenId, status] = await ledger.identity.identityOfSigner(s.signer, { blockTag: s.blockNumber - 1 });
      const active = Number(tokenId) === s.identity && Number(status) === IdentityStatus.Active;
      add(
        round.round,
        s.identity,
        "identity active",
        active,
        active
          ? `${s.signer} held active identity ${s.identity} before block ${s.blockNumber}`
          : `${s.signer} held identity ${tokenId} with status ${IdentityStatus[Number(status)]} before block ${s.blockNumber}`,
      );
      if (s.relayer) {
        const ok = await checkRelayedSignature(ledger, s);
        add(round.round, s.identity, "relayed signature", ok.ok, ok.detail);
      }
      const bytes = await fetchVerified(round.round, s.identity, "update", s.cid, s.adapterSha256);
      if (!bytes) continue;
      const parsed = safeParse(bytes, o);
      if (!parsed) {
        add(round.round, s.identity, "update format", false, "adapter does not parse as the task's LoRA layout");
        continue;
      }
      const metricsOk = parsed.metadata.metrics !== undefined && sha256Hex(parsed.metadata.metrics) === s.metricsDigest;
      add(
        round.round,
        s.identity,
        "metrics digest",
        metricsOk,
        metricsOk
          ? "metrics in the adapter match the on-chain digest"
          : "metrics in the adapter do not match the on-chain digest",
      );
      updates.set(s.identity, {
        u: { identity: s.identity, numExamples: s.numExamples, weights: parsed.weights },
        parsed,
      });
    }

    // aggregation
    const fin = round.finalized;
    if (!fin) continue;
    const submitted = new Set(round.submissions.map((s) => s.identity));
    for (const id of fin.contributors) {
      add(
        round.round,
        id,
        "contributor submitted",
        submitted.has(id),
        submitted.has(id)
          ? `identity ${id} submitted in round ${round.round}`
          : `identity ${id} is listed but did not submit in round ${round.round}`,
      );
    }
    const globalBytes = await fetchVerified(round.round, null, "global adapter", fin.globalCid, fin.globalSha256);
    previousGlobal = { cid: fin.globalCid, sha: fin.globalSha256 };
    const listed = fin.contributors.map((id) => updates.get(id)?.u).filter((u): u is ClientUpdate => Boolean(u));
    if (listed.length !== fin.contributors.length || !globalBytes) {
      add(
        round.round,
        null,
        "aggregate",
        false,
        "cannot re-run the aggregation: an update or the global adapter is missing",
      );
      continue;
    }
    const strategyName = decodeStrategy(fin.strategyId);
    const strategy =
      strategyName === "krum" || strategyName === "multi-krum" ? new FedAvg() : strategyFor(strategyName);
    const result = strategy.aggregate(listed, { scale: o.lora.alpha / o.lora.r, r: o.lora.r });
    const expectedWeights = unitsToWeights(result.units);
    const weightsOk =
      expectedWeights.length === fin.weights.length && expectedWeights.every((w, i) => w === fin.weights[i]);
    add(
      round.round,
      null,
      "weights",
      weightsOk,
      weightsOk
        ? `recorded weights are ${strategyName}'s`
        : `recorded weights ${fin.weights.join(",")} differ from ${strategyName}'s ${expectedWeights.join(",")}`,
    );
    const recomputed = serializeAdapter(o.model, o.lora, result.weights, {
      kind: "global",
      task: history.task,
      round: round.round,
      baseModelSha256: history.baseModelSha256,
      strategy: strategyName,
    });
    const same = sha256Hex(recomputed) === fin.globalSha256;
    add(
      round.round,
      null,
      "aggregate",
      same,
      same
        ? `re-running ${strategyName} on [${fin.contributors.join(", ")}] gives the published bytes`
        : `re-running ${strategyName} on [${fin.contributors.join(", ")}] gives ${sha256Hex(recomputed)}, published ${fin.globalSha256}`,
    );

    // contribution figures
    const globalParsed = safeParse(globalBytes, o);
    if (startParsed && globalParsed) {
      const s0 = flattenWeights(startParsed.weights);
      const g = sub(flattenWeights(globalParsed.weights), s0);
      const fullLoss = o.heldOut ? await o.heldOut.loss(globalParsed.weights) : undefined;
      for (const [i, id] of fin.contributors.entries()) {
        const d = sub(flattenWeights(updates.get(id)!.u.weights), s0);
        const figure: ContributionFigure = {
          round: round.round,
          identity: id,
          weightShare: Number((fin.weights[i]! * 1_000_000n) / 10n ** 18n) / 1_000_000,
          updateNorm: Math.sqrt(dot(d, d)),
          cosineToAggregate: dot(d, g) / (Math.sqrt(dot(d, d) * dot(g, g)) || 1),
        };
        if (o.heldOut && fullLoss !== undefined && listed.length > 1) {
          const without = strategy.aggregate(
            listed.filter((u) => u.identity !== id),
            { scale: o.lora.alpha / o.lora.r, r: o.lora.r },
          );
          figure.leaveOneOutDelta = fullLoss - (await o.heldOut.loss(without.weights));
        }
        contributions.push(figure);
      }
    }
  }
  return { task, checks, contributions, ok: checks.every((c) => c.ok) };
}

async function checkRelayedSignature(
  ledger: FederationLedger,
  s: RoundHistory["submissions"][number],
): Promise<{ ok: boolean; detail: string }> {
  const tx = await ledger.runner.provider!.getTransaction(s.transactionHash);
  if (!tx) return { ok: false, detail: `transaction ${s.transactionHash} not found` };
  const parsed = ledger.federation.interface.parseTransaction({ data: tx.data });
  if (!parsed || parsed.name !== "submitUpdateWithSignature")
    return { ok: false, detail: `transaction ${s.transactionHash} is not a direct submitUpdateWithSignature call` };
  const [task, round, cid, adapterSha256, numExamples, metricsDigest, signature] = parsed.args;
  const recovered = verifyTypedData(
    ledger.eip712Domain(),
    UPDATE_TYPES,
    { task, round, cid, adapterSha256, numExamples, metricsDigest },
    signature,
  );
  const ok = recovered === s.signer;
  return {
    ok,
    detail: ok
      ? `signature by ${s.signer}, relayed by ${s.relayer}`
      : `signature recovers to ${recovered}, not ${s.signer}`,
  };
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
  const lines = r.checks.map(
    (c) =>
      `${c.ok ? "PASS" : "FAIL"}  ${c.round === null ? "task" : `round ${c.round}`}${c.identity === null ? "" : ` identity ${c.identity}`}  ${c.check}: ${c.detail}`,
  );
  if (r.contributions.length) {
    const loo = r.contributions.some((c) => c.leaveOneOutDelta !== undefined);
    lines.push(
      "",
      `contributions (round, identity, weight share, update norm, cosine to aggregate${loo ? ", held-out loss with − without it" : ""}):`,
    );
    for (const c of r.contributions)
      lines.push(
        `  ${c.round}  ${c.identity}  ${(c.weightShare * 100).toFixed(2)}%  ${c.updateNorm.toFixed(4)}  ${c.cosineToAggregate.toFixed(3)}${c.leaveOneOutDelta === undefined ? "" : `  ${c.leaveOneOutDelta >= 0 ? "+" : ""}${c.leaveOneOutDelta.toFixed(4)}`}`,
      );
  }
  const failed = r.checks.filter((c) => !c.ok).length;
  lines.push(
    "",
    failed === 0
      ? `VERIFIED: task ${r.task}, ${r.checks.length} checks passed`
      : `NOT VERIFIED: task ${r.task}, ${failed} of ${r.checks.length} checks failed`,
  );
  return lines.join("\n");
}

export type { TaskHistory };
