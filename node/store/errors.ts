import { FokError } from "../errors.js";

/** Base of every adapter-store error. */
export class StoreError extends FokError {}

/** A block's bytes do not hash to its CID (corrupted on disk, tampered in transit, or a lying peer). */
export class CidMismatchError extends StoreError {
  constructor(
    readonly cid: string,
    readonly where: string,
  ) {
    super(`block ${cid} from ${where} does not match its CID`);
  }
}

/** The content's sha256 differs from the digest recorded on-chain. */
export class DigestMismatchError extends StoreError {
  constructor(
    readonly cid: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`content ${cid} has sha256 ${actual}, expected ${expected}`);
  }
}

/** A blob is larger than the configured maximum. */
export class BlobTooLargeError extends StoreError {
  constructor(
    readonly size: number,
    readonly maxBytes: number,
    readonly cid?: string,
  ) {
    super(`${cid ? `content ${cid}` : "blob"} is ${size} bytes, more than the maximum ${maxBytes}`);
  }
}

/** A CID could not be fetched in time from any source. */
export class FetchTimeoutError extends StoreError {
  constructor(
    readonly cid: string,
    readonly sources: string[],
    readonly timeoutMs: number,
  ) {
    const from = sources.length ? sources.join(", ") : "no peers or gateways";
    super(`could not fetch ${cid} within ${timeoutMs} ms from ${from}`);
  }
}

/** The CID is not in the local store and there is nowhere else to look. */
export class NotFoundError extends StoreError {
  constructor(readonly cid: string) {
    super(`${cid} is not in the store and no peers or gateways are configured`);
  }
}

/** A CAR file is malformed or holds a block that does not match its CID; nothing from it was stored. */
export class InvalidCarError extends StoreError {}

/** A CID string or DAG node that is not something this store can read (not UnixFS raw/dag-pb with sha2-256). */
export class UnsupportedContentError extends StoreError {}

/**
 * Walking a DAG went past one of its limits (blocks visited, bytes read, depth): a DAG bomb (a few KB of blocks
 * that link to each other over and over), or content larger than this kind of blob may be. Nothing was stored.
 */
export class DagLimitError extends StoreError {
  constructor(
    readonly cid: string,
    readonly limit: "blocks" | "bytes" | "depth",
    readonly max: number,
  ) {
    super(`DAG ${cid} goes past the limit of ${max} ${limit === "depth" ? "levels" : limit}; refused`);
  }
}
