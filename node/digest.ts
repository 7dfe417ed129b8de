import { createHash } from "node:crypto";

/** sha256 of bytes (or a string's UTF-8) as 0x-prefixed hex: the digest format recorded on-chain. */
export function sha256Hex(data: Uint8Array | string): string {
  return "0x" + createHash("sha256").update(data).digest("hex");
}
