/**
 * The secrets of a secure round and how they travel (SecAgg+ of Bell et al. 2020 on Bonawitz et al. 2017's
 * protocol, with the chain as the bulletin board):
 *
 * - each participant makes per-round X25519 key pairs — one to receive shares, one to agree pairwise masks — and a
 *   random 32-byte self-mask seed; it advertises the two public keys on-chain;
 * - it Shamir-shares (threshold t) the seed and the mask secret key to every identity that advertised keys (itself
 *   included), encrypts each recipient's pair of shares with ChaCha20-Poly1305 under a key HKDF-derived from X25519,
 *   and pins the dealing with sha256 commitments to every share and to the seed; the dealing's digest goes on-chain;
 * - after the masked phase, each survivor reveals, for every dealer, the seed share if the dealer survived and the
 *   key share if it dropped — never both — in the clear, pinned, digest on-chain. Anyone checks each revealed share
 *   against the dealer's commitment and reconstructs what the unmasking needs (unmask.ts).
 *
 * Cryptography comes from audited libraries: @noble/curves (X25519), @noble/ciphers (ChaCha20-Poly1305, ChaCha20),
 * @noble/hashes (HKDF-SHA256, SHA-256), shamir-secret-sharing (GF(2^8) Shamir).
 */
import { x25519 } from "@noble/curves/ed25519.js";
import { chacha20poly1305 } from "@noble/ciphers/chacha.js";
import { hkdf } from "@noble/hashes/hkdf.js";
import { sha256 } from "@noble/hashes/sha2.js";
import { bytesToHex, hexToBytes, randomBytes } from "@noble/hashes/utils.js";
import { combine, split } from "shamir-secret-sharing";
import { SecureDataError } from "./ring.js";

/** Which task, round and threshold a secure object belongs to (bound into every key derivation and commitment). */
export interface SecureContext {
  task: number;
  round: number;
  threshold: number;
}

/** An identity's advertised public keys for one round (0x hex, 32 bytes each). */
export interface RoundKeys {
  identity: number;
  encryptionKey: string;
  maskKey: string;
}

/** What a participant keeps to itself for one round (hex). Lost with the client: it then cannot go on. */
export interface RoundSecrets {
  encryptionSecret: string;
  maskSecret: string;
  seed: string;
}

/** One recipient's encrypted pair of shares and the commitments anyone can check a revealed share against. */
export interface DealtShare {
  recipient: number;
  ciphertext: string;
  seedShareDigest: string;
  keyShareDigest: string;
}

export const DEALING_FORMAT = "fok-secure-shares/1";
export const REVEAL_FORMAT = "fok-secure-reveal/1";

/** A dealer's pinned shares: one entry per identity that advertised keys, in increasing identity order. */
export interface Dealing {
  format: typeof DEALING_FORMAT;
  task: number;
  round: number;
  dealer: number;
  threshold: number;
  /** sha256 of the self-mask seed: the reconstructed seed must match it. */
  seedDigest: string;
  shares: DealtShare[];
}

export type ShareKind = "seed" | "key";

/** A survivor's revealed shares: for each dealer, the seed share (dealer survived) or the key share (it dropped). */
export interface Reveal {
  format: typeof REVEAL_FORMAT;
  task: number;
  round: number;
  revealer: number;
  shares: { dealer: number; kind: ShareKind; share: string }[];
}

const hex = (b: Uint8Array) => `0x${bytesToHex(b)}`;
const unhex = (s: string) => hexToBytes(s.startsWith("0x") ? s.slice(2) : s);
const SHARE_BYTES = 33; // a 32-byte secret's Shamir share: 32 bytes and its x-coordinate

/** Fresh per-round secrets and the public keys to advertise. */
export function newRoundSecrets(): { secrets: RoundSecrets; encryptionKey: string; maskKey: string } {
  const enc = x25519.utils.randomSecretKey();
  const mask = x25519.utils.randomSecretKey();
  return {
    secrets: { encryptionSecret: hex(enc), maskSecret: hex(mask), seed: hex(randomBytes(32)) },
    encryptionKey: hex(x25519.getPublicKey(enc)),
    maskKey: hex(x25519.getPublicKey(mask)),
  };
}

/** The X25519 public key of a secret key (hex). */
export function publicKeyOf(secret: string): string {
  return hex(x25519.getPublicKey(unhex(secret)));
}

function derive(shared: Uint8Array, label: string): Uint8Array {
  return hkdf(sha256, shared, undefined, new TextEncoder().encode(`flow-of-knowledge/secure/v1/${label}`), 32);
}

function agree(secret: string, publicKey: string): Uint8Array {
  try {
    return x25519.getSharedSecret(unhex(secret), unhex(publicKey));
  } catch (e) {
    throw new SecureDataError(`key agreement failed: ${(e as Error).message}`);
  }
}

/** The pairwise mask seed of u and v (the same from either side). */
export function pairwiseSeed(ctx: SecureContext, mine: number, secret: string, other: number, key: string): Uint8Array {
  const [lo, hi] = mine < other ? [mine, other] : [other, mine];
  return derive(agree(secret, key), `mask/${ctx.task}/${ctx.round}/${lo}/${hi}`);
}

function shareKey(ctx: SecureContext, dealer: number, recipient: number, secret: string, key: string): Uint8Array {
  return derive(agree(secret, key), `share/${ctx.task}/${ctx.round}/${dealer}/${recipient}`);
}

/** The commitment to one share: sha256 over its context and bytes (a share is 256 random bits: hiding enough). */
export function shareDigest(ctx: SecureContext, dealer: number, recipient: number, kind: ShareKind, share: Uint8Array) {
  const label = new TextEncoder().encode(`${ctx.task}/${ctx.round}/${dealer}/${recipient}/${kind}/`);
  const buf = new Uint8Array(label.length + share.length);
  buf.set(label);
  buf.set(share, label.length);
  return hex(sha256(buf));
}

/** The dealer's shares of its seed and mask secret to every identity in `recipients` (its own keys among them). */
export async function deal(
  ctx: SecureContext,
  dealer: number,
  secrets: RoundSecrets,
  recipients: readonly RoundKeys[],
): Promise<Dealing> {
  const sorted = [...recipients].sort((a, b) => a.identity - b.identity);
  if (sorted.length < ctx.threshold)
    throw new SecureDataError(`${sorted.length} identities advertised keys, the threshold is ${ctx.threshold}`);
  const seed = unhex(secrets.seed);
  const seedShares = await split(seed, sorted.length, ctx.threshold);
  const keyShares = await split(unhex(secrets.maskSecret), sorted.length, ctx.threshold);
  const shares = sorted.map((r, i) => {
    const plain = new Uint8Array(2 * SHARE_BYTES);
    plain.set(seedShares[i]!);
    plain.set(keyShares[i]!, SHARE_BYTES);
    const key = shareKey(ctx, dealer, r.identity, secrets.encryptionSecret, r.encryptionKey);
    return {
      recipient: r.identity,
      ciphertext: hex(chacha20poly1305(key, new Uint8Array(12)).encrypt(plain)),
      seedShareDigest: shareDigest(ctx, dealer, r.identity, "seed", seedShares[i]!),
      keyShareDigest: shareDigest(ctx, dealer, r.identity, "key", keyShares[i]!),
    };
  });
  return { format: DEALING_FORMAT, ...ctx, dealer, seedDigest: hex(sha256(seed)), shares };
}

/** Checks a dealing's form against the round: its dealer, threshold and one share per key-advertising identity. */
export function checkDealing(ctx: SecureContext, dealer: number, advertised: readonly number[], d: unknown): Dealing {
  const x = d as Dealing;
  const bad = (why: string) => new SecureDataError(`dealing of identity ${dealer}: ${why}`);
  if (x?.format !== DEALING_FORMAT) throw bad(`not a ${DEALING_FORMAT} document`);
  if (x.task !== ctx.task || x.round !== ctx.round || x.dealer !== dealer || x.threshold !== ctx.threshold)
    throw bad(`made for task ${x.task} round ${x.round} dealer ${x.dealer} threshold ${x.threshold}`);
  const ids = [...advertised].sort((a, b) => a - b);
  if (!Array.isArray(x.shares) || x.shares.map((s) => s?.recipient).join() !== ids.join())
    throw bad(`its recipients are not the identities that advertised keys [${ids.join(", ")}]`);
  const isHex = (s: unknown, bytes: number) =>
    typeof s === "string" && new RegExp(`^0x[0-9a-f]{${2 * bytes}}$`).test(s);
  const wellFormed = x.shares.every(
    (s) => isHex(s.ciphertext, 2 * SHARE_BYTES + 16) && isHex(s.seedShareDigest, 32) && isHex(s.keyShareDigest, 32),
  );
  if (!wellFormed || !isHex(x.seedDigest, 32)) throw bad("a share or digest is malformed");
  return x;
}

/** Decrypts the recipient's pair of shares from a dealing and checks them against the dealer's commitments. */
export function openShares(
  ctx: SecureContext,
  dealing: Dealing,
  recipient: number,
  secrets: RoundSecrets,
  dealerKeys: RoundKeys,
): { seed: Uint8Array; key: Uint8Array } {
  const entry = dealing.shares.find((s) => s.recipient === recipient);
  if (!entry) throw new SecureDataError(`dealing of identity ${dealing.dealer} has no share for ${recipient}`);
  const key = shareKey(ctx, dealing.dealer, recipient, secrets.encryptionSecret, dealerKeys.encryptionKey);
  let plain: Uint8Array;
  try {
    plain = chacha20poly1305(key, new Uint8Array(12)).decrypt(unhex(entry.ciphertext));
  } catch {
    throw new SecureDataError(`share from identity ${dealing.dealer} to ${recipient} does not decrypt`);
  }
  const seed = plain.slice(0, SHARE_BYTES);
  const k = plain.slice(SHARE_BYTES);
  if (
    shareDigest(ctx, dealing.dealer, recipient, "seed", seed) !== entry.seedShareDigest ||
    shareDigest(ctx, dealing.dealer, recipient, "key", k) !== entry.keyShareDigest
  )
    throw new SecureDataError(`share from identity ${dealing.dealer} to ${recipient} does not match its commitment`);
  return { seed, key: k };
}

/**
 * What survivor `revealer` publishes: for each dealer, the seed share when the dealer survived, the key share when
 * it dropped — decided by the chain's record of who submitted, never by the aggregator's word.
 */
export function reveal(
  ctx: SecureContext,
  revealer: number,
  survivors: ReadonlySet<number>,
  opened: ReadonlyMap<number, { seed: Uint8Array; key: Uint8Array }>,
): Reveal {
  const shares = [...opened.keys()]
    .sort((a, b) => a - b)
    .map((dealer) => {
      const kind: ShareKind = survivors.has(dealer) ? "seed" : "key";
      return { dealer, kind, share: hex(opened.get(dealer)![kind]) };
    });
  return { format: REVEAL_FORMAT, task: ctx.task, round: ctx.round, revealer, shares };
}

/** Reconstructs a secret from shares (hex); the caller checks it against the dealer's commitment. */
export async function reconstruct(shares: readonly string[]): Promise<Uint8Array> {
  try {
    return await combine(shares.map(unhex));
  } catch (e) {
    throw new SecureDataError(`shares do not combine: ${(e as Error).message}`);
  }
}

export { hex, unhex };
