/**
 * Masking an update, and recovering the sum of a secure round's updates from public data alone: the survivors'
 * masked vectors, the revealed shares (each checked against its dealer's commitment) and the advertised keys. The
 * aggregator and `fok verify` run the same code, so anyone recomputes the exact integer sum and the global adapter
 * bit for bit, and nobody ever sees one client's update.
 *
 *   y_u = n_u·q_u + PRG(b_u) + Σ_{v in P, v ≠ u} ±PRG(s_uv)   (+ when u < v, − when u > v; mod 2^48)
 *   Σ_{u in S} y_u − Σ_{u in S} PRG(b_u) − Σ_{v in P∖S} Σ_{u in S} ±PRG(s_uv) = Σ_{u in S} n_u·q_u
 *
 * P: the participants (dealt shares), S ⊆ P: the survivors (submitted masked vectors); the b_u of survivors and the
 * mask secret keys of the dropped come from t revealed shares each.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import type { LoraWeights } from "../model/adapter.js";
import { addInto, prg, quantize, signed, SecureDataError, type RingVector } from "./ring.js";
import {
  REVEAL_FORMAT,
  hex,
  pairwiseSeed,
  publicKeyOf,
  reconstruct,
  shareDigest,
  unhex,
  type Dealing,
  type Reveal,
  type RoundKeys,
  type RoundSecrets,
  type SecureContext,
  type ShareKind,
} from "./shares.js";

/** Everything public about a secure round that the unmasking needs. */
export interface PublicRound extends SecureContext {
  /** Advertised keys by identity. */
  keys: ReadonlyMap<number, RoundKeys>;
  /** The participants' dealings (checked with checkDealing). */
  dealings: ReadonlyMap<number, Dealing>;
  /** The survivors, as the chain records them (those who submitted a masked vector). */
  survivors: ReadonlySet<number>;
  /** The survivors' masked vectors (those that could be read). */
  masked: ReadonlyMap<number, RingVector>;
  /** The survivors' reveals. */
  reveals: ReadonlyMap<number, Reveal>;
}

/** A revealed share that cannot be used, and why (verify fails the revealer by name). */
export interface RevealProblem {
  revealer: number;
  dealer: number | null;
  problem: string;
}

/** ±1: how u's masked vector carries its pairwise mask with v. */
const sign = (u: number, v: number): 1 | -1 => (u < v ? 1 : -1);

/** The masked vector of `me` for its weighted, quantized update `x`, against the participants' keys. */
export function maskVector(
  ctx: SecureContext,
  me: number,
  secrets: RoundSecrets,
  x: RingVector,
  participants: readonly RoundKeys[],
): RingVector {
  const y = addInto(BigUint64Array.from(x), prg(unhex(secrets.seed), x.length));
  for (const p of participants) {
    if (p.identity === me) continue;
    const s = pairwiseSeed(ctx, me, secrets.maskSecret, p.identity, p.maskKey);
    addInto(y, prg(s, x.length), sign(me, p.identity));
  }
  return y;
}

/**
 * The reveals' usable shares per dealer and kind (in increasing revealer order), and every problem: a reveal of
 * the wrong round, a share of the wrong kind for the dealer's fate, both kinds for one dealer, a share that does
 * not match the dealer's commitment.
 */
export function checkReveals(p: PublicRound): { shares: Map<number, string[]>; problems: RevealProblem[] } {
  const shares = new Map<number, string[]>();
  const problems: RevealProblem[] = [];
  for (const revealer of [...p.reveals.keys()].sort((a, b) => a - b)) {
    const r = p.reveals.get(revealer)!;
    if (r?.format !== REVEAL_FORMAT || r.task !== p.task || r.round !== p.round || r.revealer !== revealer) {
      problems.push({ revealer, dealer: null, problem: `not a ${REVEAL_FORMAT} document of this round` });
      continue;
    }
    const entries = Array.isArray(r.shares) ? r.shares : [];
    const count = new Map<number, number>();
    for (const e of entries) count.set(e?.dealer, (count.get(e?.dealer) ?? 0) + 1);
    const reported = new Set<unknown>();
    for (const e of entries) {
      const problem = shareProblem(p, revealer, e, count.get(e?.dealer)!);
      if (!problem) shares.set(e.dealer, [...(shares.get(e.dealer) ?? []), e.share]);
      else if (!reported.has(e?.dealer)) {
        reported.add(e?.dealer); // one problem per dealer: both shares of one client are one offence
        problems.push({ revealer, dealer: typeof e?.dealer === "number" ? e.dealer : null, problem });
      }
    }
  }
  return { shares, problems };
}

function shareProblem(
  p: PublicRound,
  revealer: number,
  e: { dealer: number; kind: ShareKind; share: string },
  times: number,
): string | null {
  const dealing = p.dealings.get(e?.dealer);
  if (!dealing) return `reveals a share of identity ${e?.dealer}, which dealt none`;
  if (times > 1) {
    const rule = "seed and key shares of one client must never both be revealed";
    return `reveals ${times} shares of identity ${e.dealer}: ${rule}`;
  }
  const want: ShareKind = p.survivors.has(e.dealer) ? "seed" : "key";
  if (e.kind !== want)
    return `reveals the ${e.kind} share of identity ${e.dealer}, which ${want === "seed" ? "survived" : "dropped"}`;
  const entry = dealing.shares.find((s) => s.recipient === revealer);
  const share = typeof e.share === "string" && /^0x[0-9a-f]{66}$/.test(e.share) ? e.share : null;
  const committed = e.kind === "seed" ? entry?.seedShareDigest : entry?.keyShareDigest;
  if (!entry || !share || shareDigest(p, e.dealer, revealer, e.kind, unhex(share)) !== committed)
    return `its ${e.kind} share of identity ${e.dealer} does not match the dealer's commitment`;
  return null;
}

/**
 * The exact signed integer sum Σ n_u·q_u over the survivors. Throws SecureDataError when a survivor's masked vector
 * or dealing could not be read, or a secret cannot be reconstructed (fewer than t good shares) or reconstructs to
 * something other than the dealer committed to.
 */
export async function unmaskSum(p: PublicRound): Promise<{ sum: Float64Array; problems: RevealProblem[] }> {
  const { shares, problems } = checkReveals(p);
  const survivors = [...p.survivors].sort((a, b) => a - b);
  const unread = survivors.filter((u) => !p.masked.has(u) || !p.dealings.has(u));
  if (unread.length)
    throw new SecureDataError(`survivors [${unread.join(", ")}] have no usable masked vector or dealing`);
  const n = p.masked.get(survivors[0]!)?.length ?? 0;
  const sum = new BigUint64Array(n);
  const secretOf = async (dealer: number) => {
    const got = shares.get(dealer) ?? [];
    if (got.length < p.threshold)
      throw new SecureDataError(`${got.length} good shares of identity ${dealer}, the threshold is ${p.threshold}`);
    return reconstruct(got.slice(0, p.threshold));
  };
  for (const u of survivors) {
    addInto(sum, p.masked.get(u)!);
    const seed = await secretOf(u);
    if (hex(sha256(seed)) !== p.dealings.get(u)!.seedDigest)
      throw new SecureDataError(`the seed of identity ${u} reconstructs to one it did not commit to`);
    addInto(sum, prg(seed, n), -1);
  }
  for (const v of [...p.dealings.keys()].filter((d) => !p.survivors.has(d)).sort((a, b) => a - b)) {
    const secret = hex(await secretOf(v));
    if (publicKeyOf(secret) !== p.keys.get(v)?.maskKey)
      throw new SecureDataError(`the mask key of identity ${v} reconstructs to one it did not advertise`);
    for (const u of survivors) {
      const s = pairwiseSeed(p, v, secret, u, p.keys.get(u)!.maskKey);
      addInto(sum, prg(s, n), sign(u, v) === 1 ? -1 : 1);
    }
  }
  return { sum: signed(sum), problems };
}

/** The values a secure round aggregates, in a fixed order: per module (sorted), A's then B's (B's only with onlyB). */
export function updateVector(update: LoraWeights, start: LoraWeights, onlyB: boolean): Float64Array {
  const out: number[] = [];
  for (const m of [...start.keys()].sort()) {
    const s = start.get(m)!;
    const u = update.get(m);
    if (!u || u.A.length !== s.A.length || u.B.length !== s.B.length)
      throw new SecureDataError(`module ${m} differs in shape from the round's start adapter`);
    if (!onlyB) for (let i = 0; i < s.A.length; i++) out.push(u.A[i]! - s.A[i]!);
    for (let i = 0; i < s.B.length; i++) out.push(u.B[i]! - s.B[i]!);
  }
  return Float64Array.from(out);
}

/** The round's weighted quantized update: what a client masks. */
export function weightedUpdate(delta: Float64Array, clip: number, bits: number, numExamples: number): RingVector {
  return quantize(Float32Array.from(delta), clip, bits, numExamples);
}

/** The global adapter: start + sum / (2^bits × Σ n), each value rounded once to float32. */
export function meanAdapter(
  start: LoraWeights,
  sum: Float64Array,
  bits: number,
  totalExamples: number,
  onlyB: boolean,
): LoraWeights {
  const div = 2 ** bits * totalExamples;
  const out: LoraWeights = new Map();
  let k = 0;
  const next = (s: Float32Array) => s.map((x) => Math.fround(x + sum[k++]! / div));
  for (const m of [...start.keys()].sort()) {
    const s = start.get(m)!;
    const A = onlyB ? Float32Array.from(s.A) : next(s.A);
    out.set(m, { A, B: next(s.B) });
  }
  if (k !== sum.length) throw new SecureDataError(`the sum has ${sum.length} values, the adapter ${k}`);
  // the start adapter's module order, so that serialization gives the same bytes as any other global adapter
  return new Map([...start.keys()].map((m) => [m, out.get(m)!]));
}
