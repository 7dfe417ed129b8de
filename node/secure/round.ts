/**
 * A secure round as anyone can rebuild it from the chain and the pinned bytes: the advertised keys, each
 * participant's dealing, each survivor's masked vector and each reveal, fetched by CID and checked against their
 * on-chain digests; then the unmasked sum and the global adapter. The aggregator publishes with this code and
 * `fok verify` re-runs it, so both get the same bytes from the same public data.
 */
import type { DpParams, RoundHistory, TaskHistory, TaskInfo } from "../chain/index.js";
import { noiseStd as noiseStdOf, ringBound } from "../dp/privacy.js";
import type { LoraWeights } from "../model/adapter.js";
import { parseMasked, scaleBits, SecureDataError, type RingVector } from "./ring.js";
import { checkDealing, type Dealing, type Reveal, type RoundKeys, type SecureContext } from "./shares.js";
import { meanAdapter, unmaskSum, updateVector, type PublicRound, type RevealProblem } from "./unmask.js";

/** Reads a blob and checks it against its on-chain digest; null (and a problem reported) when it cannot. */
export type VerifiedFetch = (what: string, identity: number, cid: string, digest: string) => Promise<Uint8Array | null>;

/** Something wrong with one identity's part of a secure round. */
export interface SecureProblem {
  identity: number;
  check: string;
  detail: string;
}

export interface SecureRoundSpec extends SecureContext {
  scaleBits: number;
  /** The largest value any coordinate of a client's (noised) update may take: C, or C plus room for DP noise. */
  bound: number;
  /** DP tasks: every survivor weighs the same (quantized with weight 1), and each client adds noise of this std. */
  uniform: boolean;
  noiseStd: number;
  /** Values per masked vector (updateVector's length for the task's layout). */
  elements: number;
}

/** The most bytes a dealing or a reveal (JSON) may take. */
export const SECURE_DOCUMENT_BYTES = 4 << 20;

/** The most bytes any blob of a secure round may take: a masked vector (8 bytes a value) or a document. */
export function secureBlobLimit(spec: SecureRoundSpec): number {
  return 8 * spec.elements + SECURE_DOCUMENT_BYTES;
}

/** Strategies whose update is B only (A frozen at the task's initialisation): FFA-LoRA. */
export const B_ONLY_STRATEGIES: ReadonlySet<string> = new Set(["ffa-lora"]);

/**
 * The secure round's layout: its context, quantization bound and scale, weighting and vector length. A DP task
 * (`dp`) weighs survivors uniformly and leaves room for each client's noise share (ringBound).
 */
export function secureSpec(
  info: TaskInfo | TaskHistory,
  task: number,
  round: number,
  threshold: number,
  start: LoraWeights,
  dp: DpParams | null = null,
): SecureRoundSpec {
  const onlyB = B_ONLY_STRATEGIES.has(info.strategy);
  const C = info.maxUpdateNorm;
  const noiseStd = dp ? noiseStdOf(dp, C, "distributed", info.minUpdates) : 0;
  const bound = ringBound(C, dp, info.minUpdates);
  return {
    task,
    round,
    threshold,
    scaleBits: scaleBits(dp ? 1 : info.maxExamples, bound),
    bound,
    uniform: dp !== null,
    noiseStd,
    elements: updateVector(start, start, onlyB).length,
  };
}

/** Every public piece of a secure round, fetched and checked; `problems` lists what could not be used. */
export async function gatherSecureRound(
  spec: SecureRoundSpec,
  round: RoundHistory,
  fetch: VerifiedFetch,
): Promise<{ pub: PublicRound; problems: SecureProblem[] }> {
  const sec = round.secure;
  if (!sec) throw new SecureDataError(`round ${round.round} has no secure history`);
  const problems: SecureProblem[] = [];
  const keys = new Map<number, RoundKeys>(sec.keys.map((k) => [k.identity, k]));
  const advertised = [...keys.keys()];
  const dealings = new Map<number, Dealing>();
  for (const d of sec.dealings) {
    const doc = await fetchJson(fetch, "shares", d.identity, d.cid, d.digest, problems);
    if (doc === undefined) continue;
    try {
      dealings.set(d.identity, checkDealing(spec, d.identity, advertised, doc));
    } catch (e) {
      problems.push({ identity: d.identity, check: "secure shares", detail: (e as Error).message });
    }
  }
  const masked = new Map<number, RingVector>();
  for (const s of round.submissions) {
    const bytes = await fetch("masked update", s.identity, s.cid, s.adapterSha256);
    if (!bytes) continue;
    try {
      const { header, vector } = parseMasked(bytes);
      const want = { task: spec.task, round: spec.round, identity: s.identity, elements: spec.elements };
      const got = { task: header.task, round: header.round, identity: header.identity, elements: header.elements };
      if (JSON.stringify(got) !== JSON.stringify(want) || header.scaleBits !== spec.scaleBits)
        throw new SecureDataError(`masked vector is for ${JSON.stringify(header)}, not ${JSON.stringify(want)}`);
      masked.set(s.identity, vector);
    } catch (e) {
      problems.push({ identity: s.identity, check: "masked update format", detail: (e as Error).message });
    }
  }
  const reveals = new Map<number, Reveal>();
  for (const r of sec.reveals) {
    const doc = await fetchJson(fetch, "reveal", r.identity, r.cid, r.digest, problems);
    if (doc !== undefined) reveals.set(r.identity, doc as Reveal);
  }
  const survivors = new Set(round.submissions.map((s) => s.identity));
  return { pub: { ...spec, keys, dealings, survivors, masked, reveals }, problems };
}

async function fetchJson(
  fetch: VerifiedFetch,
  what: string,
  identity: number,
  cid: string,
  digest: string,
  problems: SecureProblem[],
): Promise<unknown> {
  const bytes = await fetch(what, identity, cid, digest);
  if (!bytes) return undefined;
  try {
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    problems.push({ identity, check: `secure ${what}`, detail: `${cid} is not JSON` });
    return undefined;
  }
}

/** The global adapter of a secure round and what the chain must record of it. */
export interface SecureAggregate {
  weights: LoraWeights;
  /** The survivors, in increasing order, and their example counts (the FedAvg units; 1 each in a DP task). */
  contributors: number[];
  units: number[];
  revealProblems: RevealProblem[];
}

/**
 * Unmasks the survivors' sum and makes the global adapter: start + Σ n_u·q_u / (2^bits · Σ n_u). Throws
 * SecureDataError as unmaskSum does.
 */
export async function secureAggregate(
  pub: PublicRound,
  spec: SecureRoundSpec,
  round: RoundHistory,
  start: LoraWeights,
  onlyB: boolean,
): Promise<SecureAggregate> {
  const { sum, problems } = await unmaskSum(pub);
  const survivors = [...pub.survivors].sort((a, b) => a - b);
  const units = survivors.map((id) =>
    spec.uniform ? 1 : round.submissions.find((s) => s.identity === id)!.numExamples,
  );
  const total = units.reduce((a, b) => a + b, 0);
  return {
    weights: meanAdapter(start, sum, spec.scaleBits, total, onlyB),
    contributors: survivors,
    units,
    revealProblems: problems,
  };
}
