/**
 * Gaussian noise for DP rounds, and the check verify runs on a centrally noised global adapter.
 *
 * Normals come from ChaCha20 keyed with 32 random bytes from the operating system (a seed only where a run must be
 * reproducible: the experiment), turned into normals by Box–Muller over 53-bit uniforms. Floating-point samplers
 * have known side channels in the low bits (Mironov 2012, for Laplace); this one is the textbook sampler, not a
 * hardened discrete one (README, threat model).
 */
import { chacha20 } from "@noble/ciphers/chacha.js";
import { randomBytes } from "@noble/hashes/utils.js";
import { FokError } from "../errors.js";
import type { LoraWeights } from "../model/adapter.js";

/** Standard normal draws, `n` at a time. */
export type NormalSource = (n: number) => Float64Array;

/** A source of standard normals from ChaCha20 under `seed` (32 bytes; default: fresh OS randomness). */
export function normalSource(seed: Uint8Array = randomBytes(32)): NormalSource {
  if (seed.length !== 32) throw new FokError(`a noise seed is 32 bytes, got ${seed.length}`);
  const key = Uint8Array.from(seed);
  let stream = 0;
  return (n) => {
    const pairs = Math.ceil(n / 2);
    // one nonce per call: no keystream byte is used twice
    const nonce = new Uint8Array(12);
    new DataView(nonce.buffer).setUint32(0, stream++, true);
    const bytes = chacha20(key, nonce, new Uint8Array(pairs * 16));
    const words = new Uint32Array(bytes.buffer, bytes.byteOffset, pairs * 4);
    const out = new Float64Array(pairs * 2);
    for (let i = 0; i < pairs; i++) {
      // uniforms in (0, 1]: 53 random bits each
      const u1 = ((words[4 * i]! >>> 5) * 2 ** 26 + (words[4 * i + 1]! >>> 6) + 1) / 2 ** 53;
      const u2 = ((words[4 * i + 2]! >>> 5) * 2 ** 26 + (words[4 * i + 3]! >>> 6)) / 2 ** 53;
      const r = Math.sqrt(-2 * Math.log(u1));
      out[2 * i] = r * Math.cos(2 * Math.PI * u2);
      out[2 * i + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out.subarray(0, n);
  };
}

/** `w` plus N(0, std²) on every value (on B only with `onlyB`), each value rounded once to float32; a new map. */
export function addNoise(w: LoraWeights, std: number, onlyB: boolean, normals: NormalSource): LoraWeights {
  const noisy = (x: Float32Array) => {
    const z = normals(x.length);
    return Float32Array.from(x, (v, i) => v + std * z[i]!);
  };
  return new Map([...w].map(([m, { A, B }]) => [m, { A: onlyB ? Float32Array.from(A) : noisy(A), B: noisy(B) }]));
}

/** What the values a central-DP round added to the plain average look like, against the declared noise. */
export interface NoiseCheck {
  /** Values compared. */
  count: number;
  /** Their root mean square, and what the declared noise has (σC/n). */
  rms: number;
  expected: number;
  /** The largest relative deviation of the rms that a correct draw passes, and the mean's bound. */
  tolerance: number;
  mean: number;
  /** Null when both are within bounds; else what is wrong. */
  problem: string | null;
}

/**
 * Compares `global − plain` (the published adapter minus the uniform average of the listed updates, value by value,
 * over B only with `onlyB`) with N(0, expected²): the rms must be within 6/√(2d) of `expected` relative (a false
 * alarm about once in 10^9 draws) and the mean within 6·expected/√d. It catches noise left out, scaled down or
 * added to too few values; it cannot tell noise from a chosen perturbation of the same size.
 */
export function checkNoise(global: LoraWeights, plain: LoraWeights, expected: number, onlyB: boolean): NoiseCheck {
  let sum = 0;
  let sq = 0;
  let count = 0;
  let frozen = 0;
  for (const [m, g] of global) {
    const p = plain.get(m);
    if (!p) throw new FokError(`module ${m} is not in the plain average`);
    const pairs: [Float32Array, Float32Array][] = onlyB
      ? [[g.B, p.B]]
      : [
          [g.A, p.A],
          [g.B, p.B],
        ];
    if (onlyB) for (let i = 0; i < g.A.length; i++) if (g.A[i] !== p.A[i]) frozen++;
    for (const [a, b] of pairs) {
      for (let i = 0; i < a.length; i++) {
        const r = a[i]! - b[i]!;
        sum += r;
        sq += r * r;
        count++;
      }
    }
  }
  const rms = Math.sqrt(sq / Math.max(1, count));
  const mean = sum / Math.max(1, count);
  const tolerance = 6 / Math.sqrt(2 * Math.max(1, count));
  const meanBound = (6 * expected) / Math.sqrt(Math.max(1, count));
  let problem: string | null = null;
  if (frozen) problem = `${frozen} values of the frozen A differ from the average`;
  else if (!(Math.abs(rms / expected - 1) <= tolerance))
    problem =
      `the noise has rms ${rms.toExponential(4)} where σC/n is ${expected.toExponential(4)} ` +
      `(±${(tolerance * 100).toFixed(2)}%)`;
  else if (!(Math.abs(mean) <= meanBound))
    problem = `the noise has mean ${mean.toExponential(4)}, beyond ±${meanBound.toExponential(4)}`;
  return { count, rms, expected, tolerance, mean, problem };
}
