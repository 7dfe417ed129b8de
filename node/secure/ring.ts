/**
 * The arithmetic of a secure round: an update's change from the round's start, clipped and quantized to fixed-point
 * integers, weighted by the client's public example count, then masked — all in the ring of integers modulo 2^48,
 * held exactly in float64 (every sum of two elements stays below 2^53). Masks come from ChaCha20 as the PRG.
 *
 * Overflow cannot happen by construction: the scale S = 2^k is the largest power of two for which
 * MAX_SECURE_PARTICIPANTS × maxExamples × (clip × S + 1) < 2^47, so the true weighted sum of any allowed round lies
 * in (−2^47, 2^47) and reads back exactly as a signed value. A task whose bounds leave S below 2^MIN_SCALE_BITS is
 * refused (SecureConfigError).
 */
import { chacha20 } from "@noble/ciphers/chacha.js";
import { FokError } from "../errors.js";

export const RING_BITS = 48;
const RING = 2 ** RING_BITS;
const HALF = 2 ** (RING_BITS - 1);
/** Bytes of PRG output per ring element. */
const ELEMENT_BYTES = 6;
/** Quantization coarser than 2^-8 of the clip bound is refused. */
export const MIN_SCALE_BITS = 8;
/** Finer than 2^-30 buys nothing over float32 updates. */
export const MAX_SCALE_BITS = 30;
/** Shamir shares over GF(2^8) number at most 255 (Federation.sol's MAX_SECURE_PARTICIPANTS). */
export const MAX_SECURE_PARTICIPANTS = 255;

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
  const room = (HALF - 1) / (MAX_SECURE_PARTICIPANTS * maxExamples) - 1; // clip × S must stay below this
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
export function quantize(delta: Float32Array, clip: number, bits: number, weight: number): Float64Array {
  const S = 2 ** bits;
  const out = new Float64Array(delta.length);
  for (let i = 0; i < delta.length; i++) {
    const d = delta[i]!;
    if (!Number.isFinite(d)) throw new SecureDataError(`update value ${i} is ${d}`);
    const q = Math.round(Math.min(clip, Math.max(-clip, d)) * S) * weight;
    out[i] = q < 0 ? q + RING : q;
  }
  return out;
}

/** The ring elements as signed integers (the true sum, when no overflow was possible). */
export function signed(v: Float64Array): Float64Array {
  return v.map((x) => (x >= HALF ? x - RING : x));
}

/** `n` ring elements expanded from a 32-byte seed by ChaCha20 (zero nonce: each seed is used for one stream). */
export function prg(seed: Uint8Array, n: number): Float64Array {
  if (seed.length !== 32) throw new SecureDataError(`a mask seed is 32 bytes, got ${seed.length}`);
  const bytes = chacha20(seed, new Uint8Array(12), new Uint8Array(n * ELEMENT_BYTES));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = i * ELEMENT_BYTES;
    out[i] = view.getUint32(o, true) + view.getUint16(o + 4, true) * 2 ** 32;
  }
  return out;
}

/** acc ← acc + sign × v (mod 2^48), in place. */
export function addInto(acc: Float64Array, v: Float64Array, sign: 1 | -1 = 1): Float64Array {
  if (acc.length !== v.length) throw new SecureDataError(`vector lengths differ: ${acc.length} and ${v.length}`);
  for (let i = 0; i < acc.length; i++) {
    let x = acc[i]! + (sign === 1 ? v[i]! : RING - v[i]!);
    if (x >= RING) x -= RING;
    acc[i] = x;
  }
  return acc;
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
const MAGIC = new TextEncoder().encode("FOKMASK1");

/** A masked vector as pinned: magic, a JSON header (length-prefixed), then 6 bytes little-endian per element. */
export function serializeMasked(h: Omit<MaskedHeader, "format" | "elements">, v: Float64Array): Uint8Array {
  const header = new TextEncoder().encode(JSON.stringify({ format: MASKED_FORMAT, ...h, elements: v.length }));
  const out = new Uint8Array(MAGIC.length + 4 + header.length + v.length * ELEMENT_BYTES);
  const view = new DataView(out.buffer);
  out.set(MAGIC);
  view.setUint32(MAGIC.length, header.length, true);
  out.set(header, MAGIC.length + 4);
  let o = MAGIC.length + 4 + header.length;
  for (const x of v) {
    view.setUint32(o, x % 2 ** 32, true);
    view.setUint16(o + 4, Math.floor(x / 2 ** 32), true);
    o += ELEMENT_BYTES;
  }
  return out;
}

/** Parses a masked vector; throws SecureDataError on anything malformed. */
export function parseMasked(bytes: Uint8Array): { header: MaskedHeader; vector: Float64Array } {
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
  const vector = new Float64Array(header.elements);
  for (let i = 0, o = start; i < header.elements; i++, o += ELEMENT_BYTES)
    vector[i] = view.getUint32(o, true) + view.getUint16(o + 4, true) * 2 ** 32;
  return { header, vector };
}
