/**
 * The arithmetic of a secure round: an update's change from the round's start, clipped and quantized to fixed-point
 * integers, weighted by the client's public example count, then masked — all in the ring of integers modulo 2^64
 * (BigUint64Array: every store wraps). Masks come from ChaCha20 as the PRG, 8 bytes per element.
 *
 * Overflow cannot happen by construction: the scale S = 2^k is the largest power of two (at most 2^MAX_SCALE_BITS)
 * for which MAX_SECURE_PARTICIPANTS × maxExamples × (clip × S + 1) < 2^63, so the true weighted sum of any allowed
 * round lies in (−2^63, 2^63) and reads back exactly as a signed value. A task whose bounds leave S below
 * 2^MIN_SCALE_BITS is refused (SecureConfigError).
 */
import { chacha20 } from "@noble/ciphers/chacha.js";
import { endianness } from "node:os";
import { FokError } from "../errors.js";

export const RING_BITS = 64;
/** Bytes per ring element, in PRG output and in a masked vector. */
const ELEMENT_BYTES = 8;
/** Quantization coarser than 2^-16 is refused. */
export const MIN_SCALE_BITS = 16;
/** Finer than 2^-30 buys nothing over float32 updates. */
export const MAX_SCALE_BITS = 30;
/** Shamir shares over GF(2^8) number at most 255 (Federation.sol's MAX_SECURE_PARTICIPANTS). */
export const MAX_SECURE_PARTICIPANTS = 255;

/** A vector of ring elements. */
export type RingVector = BigUint64Array;

/** A secure task's bounds cannot be quantized without risk of overflow (or only too coarsely). */
export class SecureConfigError extends FokError {}

/** A masked vector, a share or a reveal is malformed or inconsistent with the chain. */
export class SecureDataError extends FokError {}

/**
 * log2 of the quantization scale for a task with per-round example cap `maxExamples` and clip bound `clip` (the
 * task's max update norm: an L2-clipped update has no coordinate beyond it).
 */
export function scaleBits(maxExamples: number, clip: number): number {
  if (!(Number.isInteger(maxExamples) && maxExamples >= 1) || !(clip > 0 && Number.isFinite(clip)))
    throw new SecureConfigError(`secure mode needs a positive example cap and clip bound, got ${maxExamples}, ${clip}`);
  // clip × S + 1 must stay below 2^63 / (participants × examples); computed in float64 with a safety margin of 2^-20
  const room = (2 ** 63 * (1 - 2 ** -20)) / (MAX_SECURE_PARTICIPANTS * maxExamples) - 1;
  const k = Math.min(MAX_SCALE_BITS, Math.floor(Math.log2(room / clip)));
  if (!(k >= MIN_SCALE_BITS)) {
    throw new SecureConfigError(
      `secure mode cannot quantize updates of norm up to ${clip} from up to ${MAX_SECURE_PARTICIPANTS} clients of ` +
        `up to ${maxExamples} examples each in a 2^${RING_BITS} ring at a resolution of 2^-${MIN_SCALE_BITS} or ` +
        "finer without risk of overflow: lower the example cap or the max update norm",
    );
  }
  return k;
}

/** round(clamp(delta, ±clip) × 2^bits) × weight, as ring elements. */
export function quantize(delta: ArrayLike<number>, clip: number, bits: number, weight: number): RingVector {
  const S = 2 ** bits;
  const w = BigInt(weight);
  const out = new BigUint64Array(delta.length);
  for (let i = 0; i < delta.length; i++) {
    const d = delta[i]!;
    if (!Number.isFinite(d)) throw new SecureDataError(`update value ${i} is ${d}`);
    out[i] = BigInt(Math.round(Math.min(clip, Math.max(-clip, d)) * S)) * w; // stored mod 2^64
  }
  return out;
}

/** The ring elements read as signed integers (the true sum, when no overflow was possible), as numbers. */
export function signed(v: RingVector): Float64Array {
  return Float64Array.from(v, (x) => Number(BigInt.asIntN(64, x)));
}

/** `n` ring elements expanded from a 32-byte seed by ChaCha20 (zero nonce: each seed is used for one stream). */
export function prg(seed: Uint8Array, n: number): RingVector {
  if (seed.length !== 32) throw new SecureDataError(`a mask seed is 32 bytes, got ${seed.length}`);
  const bytes = chacha20(seed, new Uint8Array(12), new Uint8Array(n * ELEMENT_BYTES));
  return littleEndian(bytes, n);
}

/** acc ← acc + sign × v (mod 2^64), in place. */
export function addInto(acc: RingVector, v: RingVector, sign: 1 | -1 = 1): RingVector {
  if (acc.length !== v.length) throw new SecureDataError(`vector lengths differ: ${acc.length} and ${v.length}`);
  if (sign === 1) for (let i = 0; i < acc.length; i++) acc[i]! += v[i]!;
  else for (let i = 0; i < acc.length; i++) acc[i]! -= v[i]!;
  return acc;
}

const LE = endianness() === "LE";

/** n little-endian uint64 values from bytes (copied). */
function littleEndian(bytes: Uint8Array, n: number): RingVector {
  // a copy into a fresh buffer (a Node Buffer's slice shares its pool, so .buffer would be the whole pool)
  if (LE) return new BigUint64Array(Uint8Array.from(bytes.subarray(0, n * ELEMENT_BYTES)).buffer);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return BigUint64Array.from({ length: n }, (_, i) => view.getBigUint64(i * ELEMENT_BYTES, true));
}

/** What a masked vector's bytes say about themselves. */
export interface MaskedHeader {
  format: typeof MASKED_FORMAT;
  task: number;
  round: number;
  identity: number;
  elements: number;
  scaleBits: number;
}

const MASKED_FORMAT = "fok-secure-masked/1";
const MAGIC = new TextEncoder().encode("FOKMASK2");

/** A masked vector as pinned: magic, a JSON header (length-prefixed), then 8 bytes little-endian per element. */
export function serializeMasked(h: Omit<MaskedHeader, "format" | "elements">, v: RingVector): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ format: MASKED_FORMAT, ...h, elements: v.length }));
  const out = new Uint8Array(MAGIC.length + 4 + header.length + v.length * ELEMENT_BYTES);
  const view = new DataView(out.buffer);
  out.set(MAGIC);
  view.setUint32(MAGIC.length, header.length, true);
  out.set(header, MAGIC.length + 4);
  const o = MAGIC.length + 4 + header.length;
  if (LE) out.set(new Uint8Array(v.buffer, v.byteOffset, v.byteLength), o);
  else v.forEach((x, i) => view.setBigUint64(o + i * ELEMENT_BYTES, x, true));
  return out;
}

/** Parses a masked vector; throws SecureDataError on anything malformed. */
export function parseMasked(bytes: Uint8Array): { header: MaskedHeader; vector: RingVector } {
  const bad = (why: string) => new SecureDataError(`masked vector: ${why}`);
  if (bytes.length < MAGIC.length + 4 || !MAGIC.every((b, i) => bytes[i] === b)) throw bad("bad magic");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const len = view.getUint32(MAGIC.length, true);
  const start = MAGIC.length + 4 + len;
  if (start > bytes.length) throw bad("header runs past the end");
  let header: MaskedHeader;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(MAGIC.length + 4, start)));
  } catch {
    throw bad("header is not JSON");
  }
  const ints = ["task", "round", "identity", "elements", "scaleBits"] as const;
  if (header?.format !== MASKED_FORMAT || !ints.every((k) => Number.isSafeInteger(header[k]) && header[k] >= 0))
    throw bad(`header is not a ${MASKED_FORMAT} header`);
  if (bytes.length - start !== header.elements * ELEMENT_BYTES)
    throw bad(`${bytes.length - start} bytes of data for ${header.elements} elements`);
  return { header, vector: littleEndian(bytes.subarray(start), header.elements) };
}
