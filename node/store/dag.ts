/**
 * Kubo-compatible importing and a verifying UnixFS reader. Every block read goes through {@link verifyBlock}, so a
 * corrupted disk, a lying peer or a tampered gateway response is caught whatever produced the bytes.
 */
import { importer, type ImporterOptions } from "ipfs-unixfs-importer";
import { fixedSize } from "ipfs-unixfs-importer/chunker";
import { balanced } from "ipfs-unixfs-importer/layout";
import { UnixFS } from "ipfs-unixfs";
import * as dagPb from "@ipld/dag-pb";
import * as raw from "multiformats/codecs/raw";
import { CID } from "multiformats/cid";
import { sha256 } from "multiformats/hashes/sha2";
import { createHash } from "node:crypto";
import { BlobTooLargeError, CidMismatchError, DagLimitError, UnsupportedContentError } from "./errors.js";

/** The importer settings `ipfs add --cid-version=1` uses: CIDv1, raw leaves, 256 KiB chunks, balanced, 174 links. */
export const KUBO_CIDV1: Partial<ImporterOptions> = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 262_144 }),
  layout: balanced({ maxChildrenPerNode: 174 }),
  reduceSingleLeafToSelf: true,
};

/** What importing needs of a blockstore. */
export interface BlockSink {
  put(cid: CID, bytes: Uint8Array, options?: { signal?: AbortSignal }): Promise<unknown> | unknown;
}

/** What reading needs of a blockstore. */
export interface BlockSource {
  get(
    cid: CID,
    options?: { signal?: AbortSignal },
  ): Promise<Uint8Array> | Uint8Array | Iterable<Uint8Array> | AsyncIterable<Uint8Array>;
}

/**
 * IPIP-499's `unixfs-v1-2025` profile (CIDv1, raw leaves, 1 MiB chunks, 1024 links), for stores that want it; not
 * our default, because the DESIGN fixes `ipfs add --cid-version=1` CIDs.
 */
export const UNIXFS_V1_2025: Partial<ImporterOptions> = {
  cidVersion: 1,
  rawLeaves: true,
  chunker: fixedSize({ chunkSize: 1_048_576 }),
  layout: balanced({ maxChildrenPerNode: 1024 }),
  reduceSingleLeafToSelf: true,
};

/** Imports `bytes` as one UnixFS file into `sink`; returns the root CID. */
export async function importBytes(
  sink: BlockSink,
  bytes: Uint8Array,
  signal?: AbortSignal,
  profile: Partial<ImporterOptions> = KUBO_CIDV1,
): Promise<CID> {
  let root: CID | undefined;
  const blockstore = { put: async (cid: CID, block: Uint8Array) => (await sink.put(cid, block, { signal }), cid) };
  for await (const entry of importer([{ content: bytes }], blockstore as never, profile)) {
    root = entry.cid;
  }
  if (!root) throw new UnsupportedContentError("importer produced no root");
  return root;
}

/** The CID `ipfs add --cid-version=1` would give `bytes`, without storing anything. */
export async function cidOf(bytes: Uint8Array, profile: Partial<ImporterOptions> = KUBO_CIDV1): Promise<CID> {
  return importBytes({ put: () => undefined }, bytes, undefined, profile);
}

/** Parses a CID string; a typed error for garbage. */
export function parseCid(cid: string | CID): CID {
  if (typeof cid !== "string") return cid;
  try {
    return CID.parse(cid);
  } catch (e) {
    throw new UnsupportedContentError(`not a CID: ${JSON.stringify(cid)}`, { cause: e });
  }
}

/** Throws CidMismatchError unless `bytes` hash to `cid` (sha2-256 only; identity CIDs carry their bytes). */
export function verifyBlock(cid: CID, bytes: Uint8Array, where: string): void {
  if (cid.multihash.code === 0x00) {
    if (!equalBytes(cid.multihash.digest, bytes)) throw new CidMismatchError(cid.toString(), where);
    return;
  }
  if (cid.multihash.code !== sha256.code) {
    throw new UnsupportedContentError(`${cid}: hash function 0x${cid.multihash.code.toString(16)} is not sha2-256`);
  }
  const digest = createHash("sha256").update(bytes).digest();
  if (!equalBytes(digest, cid.multihash.digest)) throw new CidMismatchError(cid.toString(), where);
}

/** One block's bytes, whichever shape the blockstore returns them in (blockstore 7 yields chunks). */
export async function getBlock(source: BlockSource, cid: CID, signal?: AbortSignal): Promise<Uint8Array> {
  const got = await source.get(cid, { signal });
  if (got instanceof Uint8Array) return got;
  const parts: Uint8Array[] = [];
  for await (const p of got) parts.push(p);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

/** One verified block of a DAG and the CIDs it links to, in order. */
export interface VerifiedNode {
  cid: CID;
  bytes: Uint8Array;
  /** File data this node carries itself (raw leaf bytes, or a dag-pb node's inline data). */
  data: Uint8Array | null;
  links: CID[];
  /** Total file size the node claims (dag-pb roots); null for raw leaves. */
  fileSize: number | null;
}

/** Reads and verifies one block and decodes it as UnixFS. */
export async function readNode(
  source: BlockSource,
  cid: CID,
  where: string,
  signal?: AbortSignal,
): Promise<VerifiedNode> {
  const bytes = await getBlock(source, cid, signal);
  verifyBlock(cid, bytes, where);
  if (cid.code === raw.code) return { cid, bytes, data: bytes, links: [], fileSize: bytes.length };
  if (cid.code !== dagPb.code)
    throw new UnsupportedContentError(`${cid}: codec 0x${cid.code.toString(16)} is not raw or dag-pb`);
  const node = dagPb.decode(bytes);
  if (!node.Data) throw new UnsupportedContentError(`${cid}: dag-pb node without UnixFS data`);
  const fs = UnixFS.unmarshal(node.Data);
  if (fs.type !== "file" && fs.type !== "raw")
    throw new UnsupportedContentError(`${cid}: UnixFS ${fs.type}, not a file`);
  return {
    cid,
    bytes,
    data: fs.data && fs.data.length > 0 ? fs.data : null,
    links: node.Links.map((l) => l.Hash),
    fileSize: Number(fs.fileSize()),
  };
}

/** How many sibling blocks are requested at once while walking (bitswap round trips overlap). */
const PREFETCH = 8;

/**
 * What one walk of a DAG may cost, counted on every block visited (a block linked twice counts twice), whatever
 * blockstore serves it: a DAG bomb of a few KB whose nodes link to each other over and over is refused after this
 * much work, not walked for ever.
 */
export interface DagLimits {
  /** Blocks visited. */
  maxBlocks: number;
  /** Bytes of blocks read (data and DAG structure). */
  maxBytes: number;
  /** Levels below the root. */
  maxDepth: number;
}

/**
 * The limits for a file of at most `maxFileBytes`: its bytes plus a sixteenth for DAG structure plus 64 KiB, one
 * block per KiB of that (Kubo's 256 KiB chunks need one per 256 KiB) and at least 1,024, 16 levels (a Kubo tree of
 * 174-link nodes is 4 levels deep at 1 TiB).
 */
export function dagLimitsFor(maxFileBytes: number): DagLimits {
  const maxBytes = maxFileBytes + Math.ceil(maxFileBytes / 16) + 65_536;
  return { maxBytes, maxBlocks: Math.max(1024, Math.ceil(maxBytes / 1024)), maxDepth: 16 };
}

/** Counts one walk against its limits. */
class WalkBudget {
  private blocks = 0;
  private bytes = 0;

  constructor(
    private readonly root: CID,
    private readonly limits: DagLimits,
    private readonly signal?: AbortSignal,
  ) {}

  /** Before a block at `depth` is requested. */
  enter(depth: number): void {
    this.signal?.throwIfAborted(); // an in-memory blockstore never looks at the signal itself
    if (depth > this.limits.maxDepth) throw new DagLimitError(this.root.toString(), "depth", this.limits.maxDepth);
    if (++this.blocks > this.limits.maxBlocks) {
      throw new DagLimitError(this.root.toString(), "blocks", this.limits.maxBlocks);
    }
  }

  /** After a block of `size` bytes was read. */
  read(size: number): void {
    this.bytes += size;
    if (this.bytes > this.limits.maxBytes) throw new DagLimitError(this.root.toString(), "bytes", this.limits.maxBytes);
  }
}

/**
 * Every block of the DAG under `root`, verified, depth-first in file order; siblings are fetched ahead. Refused
 * with DagLimitError past `limits`.
 */
export async function* walkDag(
  source: BlockSource,
  root: CID,
  where: string,
  limits: DagLimits,
  signal?: AbortSignal,
): AsyncGenerator<VerifiedNode> {
  const budget = new WalkBudget(root, limits, signal);
  budget.enter(0);
  const node = await readNode(source, root, where, signal);
  budget.read(node.bytes.length);
  yield node;
  yield* walkLinks(source, node.links, where, budget, 1, signal);
}

async function* walkLinks(
  source: BlockSource,
  links: CID[],
  where: string,
  budget: WalkBudget,
  depth: number,
  signal?: AbortSignal,
): AsyncGenerator<VerifiedNode> {
  const pending: Promise<VerifiedNode>[] = [];
  let next = 0;
  while (next < links.length || pending.length > 0) {
    while (pending.length < PREFETCH && next < links.length) {
      budget.enter(depth);
      const p = readNode(source, links[next++]!, where, signal);
      p.catch(() => undefined); // surfaced when awaited in order below
      pending.push(p);
    }
    const node = await pending.shift()!;
    budget.read(node.bytes.length);
    yield node;
    if (node.links.length > 0) yield* walkLinks(source, node.links, where, budget, depth + 1, signal);
  }
}

/**
 * The file under `root`, every block verified; refuses files over `maxBytes` before fetching their leaves, and
 * DAGs past the limits of such a file ({@link dagLimitsFor}).
 */
export async function readFile(
  source: BlockSource,
  root: CID,
  where: string,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  let first = true;
  for await (const node of walkDag(source, root, where, dagLimitsFor(maxBytes), signal)) {
    if (first && node.fileSize !== null && node.fileSize > maxBytes) {
      throw new BlobTooLargeError(node.fileSize, maxBytes, root.toString());
    }
    first = false;
    if (node.data) {
      total += node.data.length;
      if (total > maxBytes) throw new BlobTooLargeError(total, maxBytes, root.toString());
      parts.push(node.data);
    }
  }
  return Buffer.concat(parts);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}
