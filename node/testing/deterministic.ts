import { createCipheriv, createHash } from "node:crypto";

/**
 * The deterministic bytes Kubo's CID-profile tests use: the ChaCha20 keystream with key sha256(seed), a zero nonce
 * and block counter 0 (kubo test/cli/testutils, js-ipfs-unixfs test/helpers/deterministic.ts).
 */
export function deterministicBytes(size: number, seed: string): Uint8Array {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("chacha20", key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}
