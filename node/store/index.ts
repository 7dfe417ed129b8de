/**
 * The adapter store: content-addressed blobs (adapters, base models, metrics) in IPFS. Every read is verified block
 * by block against the CID and, where given, against the sha256 recorded on-chain.
 *
 * Default: Helia embedded in the process, persisted in a folder, with no outside networking at all. Optional: a
 * libp2p node (TCP + noise + yamux + identify + bitswap) that serves and fetches blocks from peers dialed by
 * multiaddr, and HTTP trustless gateways (see gateway.ts) to serve and fetch from.
 */
import { sha256Hex } from "../digest.js";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { createHeliaLight, type Helia } from "helia";
import { withLibp2pLight, type HeliaWithLibp2p } from "@helia/libp2p";
import { withBitswap } from "@helia/bitswap";
import { tcp } from "@libp2p/tcp";
import { noise } from "@libp2p/noise";
import { yamux } from "@libp2p/yamux";
import { identify } from "@libp2p/identify";
import { multiaddr } from "@multiformats/multiaddr";
import { peerIdFromString } from "@libp2p/peer-id";
import { FsBlockstore } from "blockstore-fs";
import { MemoryBlockstore } from "blockstore-core";
import { FsDatastore } from "datastore-fs";
import { MemoryDatastore } from "datastore-core";
import { CarReader, CarWriter } from "@ipld/car";
import type { CID } from "multiformats/cid";
import {
  dagLimitsFor,
  getBlock,
  importBytes,
  parseCid,
  readFile,
  verifyBlock,
  walkDag,
  type BlockSource,
  type VerifiedNode,
} from "./dag.js";
import { fetchCarFromGateway } from "./gateway-client.js";
import {
  BlobTooLargeError,
  CidMismatchError,
  DigestMismatchError,
  FetchTimeoutError,
  InvalidCarError,
  NotFoundError,
  StoreError,
} from "./errors.js";

export * from "./errors.js";
export { GatewayResponseError } from "./gateway-client.js";
export { cidOf, dagLimitsFor, KUBO_CIDV1, UNIXFS_V1_2025, type DagLimits } from "./dag.js";

export interface AbortOptions {
  signal?: AbortSignal;
}

export interface GetOptions extends AbortOptions {
  /** 0x-prefixed or bare hex sha256 the bytes must have (the digest recorded on-chain). */
  expectedSha256?: string;
  /**
   * The largest this blob may be, in bytes: each kind of blob has its own (an adapter's follows from the task's
   * model and LoRA config). Default, and never more than, the store's `maxBlobBytes`.
   */
  maxBytes?: number;
}

export interface BlobStat {
  cid: string;
  /** File size in bytes. */
  size: number;
  /** Number of blocks in its DAG. */
  blocks: number;
  pinned: boolean;
}

/** A content-addressed, verifying blob store. */
export interface AdapterStore {
  /** Stores and pins `bytes`; returns the CID `ipfs add --cid-version=1` gives them. */
  add(bytes: Uint8Array, options?: AbortOptions): Promise<string>;
  /** The verified bytes of `cid`, fetched from peers or gateways when not local. */
  get(cid: string, options?: GetOptions): Promise<Uint8Array>;
  /** Whether the root block of `cid` is held locally. */
  has(cid: string): Promise<boolean>;
  pins(): Promise<string[]>;
  unpin(cid: string): Promise<void>;
  stat(cid: string, options?: AbortOptions): Promise<BlobStat>;
  /** The DAG of `cid` as a CARv1 stream (verified as it is read). */
  exportCar(cid: string, options?: AbortOptions): AsyncIterable<Uint8Array>;
  /** Imports a CAR: every block is verified first; one bad block and nothing is stored. Roots are pinned. */
  importCar(car: Uint8Array, options?: AbortOptions): Promise<string[]>;
  /** Multiaddrs this node listens on for bitswap (empty without libp2p). */
  multiaddrs(): string[];
  /** Dials a peer's multiaddr (with /p2p/<peer id>). */
  dial(addr: string, options?: AbortOptions): Promise<void>;
  /** Peer ids this node has an open connection to (empty without libp2p). */
  connectedPeers(): string[];
  /** Verified raw bytes of one block held locally (for a gateway serving `?format=raw`); null if absent. */
  localBlock(cid: string): Promise<Uint8Array | null>;
  close(): Promise<void>;
}

export interface StoreOptions {
  /** Folder for blocks and the datastore; in memory when omitted. */
  dir?: string;
  /** Largest blob `add` and `get` accept, in bytes. Default 1 GiB. */
  maxBlobBytes: number;
  /** How long `get` may wait for peers and gateways, in ms. Default 30 000. */
  fetchTimeoutMs: number;
  /**
   * libp2p listen multiaddrs, e.g. `/ip4/127.0.0.1/tcp/0`. Empty (the default) means no libp2p at all: nothing
   * listens and nothing is dialed. Other hosts than 127.0.0.1 only when the user asks for them.
   */
  listen: string[];
  /** Peers to dial at start (multiaddrs ending in /p2p/<peer id>). */
  peers: string[];
  /** Trustless gateway base URLs to fetch from, e.g. `http://127.0.0.1:8080`. */
  gateways: string[];
}

const DEFAULTS: StoreOptions = {
  maxBlobBytes: 1 << 30,
  fetchTimeoutMs: 30_000,
  listen: [],
  peers: [],
  gateways: [],
};

/** The most multiaddrs one peer announcement may carry. */
export const MAX_ANNOUNCED_ADDRS = 8;

/**
 * The multiaddrs of a peer announcement read from the chain (hostile text: anyone can announce): space-separated,
 * at most MAX_ANNOUNCED_ADDRS, each ip4/ip6/dns4/dns6 + tcp + p2p/<peer id>, all with the same peer id. Throws
 * StoreError naming what is wrong.
 */
export function parseAnnouncement(text: string): string[] {
  const parts = text.split(" ").filter((x) => x.length > 0);
  if (parts.length === 0 || parts.length > MAX_ANNOUNCED_ADDRS)
    throw new StoreError(`a peer announcement holds 1 to ${MAX_ANNOUNCED_ADDRS} multiaddrs, this one ${parts.length}`);
  const peers = new Set<string>();
  for (const p of parts) {
    let names: string[];
    let peer: string | undefined;
    try {
      const ma = multiaddr(p);
      names = ma.getComponents().map((c) => c.name);
      peer = ma.getComponents().find((c) => c.name === "p2p")?.value;
    } catch (e) {
      throw new StoreError(`not a multiaddr: ${JSON.stringify(p.slice(0, 80))} (${(e as Error).message})`);
    }
    const shape = names.join("/");
    if (!/^(ip4|ip6|dns4|dns6)\/tcp\/p2p$/.test(shape) || !peer)
      throw new StoreError(`a peer address must be ip4|ip6|dns4|dns6/tcp/p2p, got /${shape}`);
    try {
      peerIdFromString(peer);
    } catch {
      throw new StoreError(`not a peer id: ${JSON.stringify(peer.slice(0, 80))}`);
    }
    peers.add(peer);
  }
  if (peers.size !== 1) throw new StoreError(`one announcement names one peer, this one ${peers.size}`);
  return parts;
}

/** Opens (creating if needed) a store; start-up dials `peers`. */
export async function createStore(options: Partial<StoreOptions> = {}): Promise<AdapterStore> {
  const opts: StoreOptions = { ...DEFAULTS, ...options };
  let blockstore, datastore;
  if (opts.dir) {
    await mkdir(opts.dir, { recursive: true });
    blockstore = new FsBlockstore(join(opts.dir, "blocks"));
    datastore = new FsDatastore(join(opts.dir, "datastore"));
    await blockstore.open();
    await datastore.open();
  } else {
    blockstore = new MemoryBlockstore();
    datastore = new MemoryDatastore();
  }
  let helia: Helia | HeliaWithLibp2p<{ identify: unknown }> = createHeliaLight({ blockstore, datastore });
  if (opts.listen.length > 0 || opts.peers.length > 0) {
    helia = withBitswap(
      withLibp2pLight(helia, {
        addresses: { listen: opts.listen },
        transports: [tcp()],
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
        services: { identify: identify() },
      }) as HeliaWithLibp2p<{ identify: unknown }>,
    );
  }
  await helia.start();
  const store = new HeliaStore(helia, opts, blockstore as LocalBlocks);
  for (const p of opts.peers) await store.dial(p);
  return store;
}

/** The narrow blockstore surface the store reads and writes without networking. */
type LocalBlocks = BlockSource & {
  has(cid: CID): Promise<boolean> | boolean;
  put(cid: CID, bytes: Uint8Array): Promise<unknown> | unknown;
};

class HeliaStore implements AdapterStore {
  constructor(
    private readonly helia: Helia,
    private readonly opts: StoreOptions,
    /** The bare local blockstore: reads from it never touch the network. */
    private readonly local: LocalBlocks,
  ) {}

  private get libp2p() {
    return "libp2p" in this.helia ? (this.helia as HeliaWithLibp2p<{ identify: unknown }>).libp2p : null;
  }

  async add(bytes: Uint8Array, options: AbortOptions = {}): Promise<string> {
    if (bytes.length > this.opts.maxBlobBytes) throw new BlobTooLargeError(bytes.length, this.opts.maxBlobBytes);
    const cid = await importBytes(this.helia.blockstore, bytes, options.signal);
    await this.pin(cid, options.signal);
    return cid.toString();
  }

  async get(cidString: string, options: GetOptions = {}): Promise<Uint8Array> {
    const cid = parseCid(cidString);
    const maxBytes = Math.min(options.maxBytes ?? this.opts.maxBlobBytes, this.opts.maxBlobBytes);
    const signal = AbortSignal.any([
      AbortSignal.timeout(this.opts.fetchTimeoutMs),
      ...(options.signal ? [options.signal] : []),
    ]);
    const local = await this.local.has(cid);
    const sources: string[] = [];
    if (!local) {
      const peers = this.libp2p?.getPeers().map((p) => p.toString()) ?? [];
      sources.push(...this.opts.gateways, ...peers);
      if (sources.length === 0) throw new NotFoundError(cidString);
      // Gateways first: one CAR request each, verified whole, then read locally. A gateway that has nothing, fails
      // or lies does not stop the others or the peers from being tried.
      const failures = await this.fetchFromGateways(cid, maxBytes, signal);
      if (failures.length === this.opts.gateways.length && peers.length === 0 && failures.length > 0) {
        if (signal.aborted && !options.signal?.aborted) {
          throw new FetchTimeoutError(cidString, sources, this.opts.fetchTimeoutMs);
        }
        throw failures.at(-1)!;
      }
    }
    try {
      // helia.blockstore fetches missing blocks over bitswap; readFile re-verifies every block either way.
      const where = local ? "local store" : `peers ${sources.join(", ")}`;
      const bytes = await readFile(this.helia.blockstore as BlockSource, cid, where, maxBytes, signal);
      if (options.expectedSha256 !== undefined) checkSha256(cidString, bytes, options.expectedSha256);
      return bytes;
    } catch (e) {
      if (signal.aborted && !(e instanceof StoreError) && !options.signal?.aborted) {
        throw new FetchTimeoutError(cidString, sources, this.opts.fetchTimeoutMs);
      }
      throw e;
    }
  }

  /**
   * Tries each gateway in turn until one serves the whole DAG of `cid`, verified, within `maxBytes`: only then are
   * its blocks stored (and `cid` pinned). Returns the failures of the gateways tried.
   */
  private async fetchFromGateways(cid: CID, maxBytes: number, signal: AbortSignal): Promise<Error[]> {
    const failures: Error[] = [];
    for (const gw of this.opts.gateways) {
      try {
        const car = await fetchCarFromGateway(gw, cid.toString(), maxBytes, signal);
        await this.storeVerifiedDag(car, cid, maxBytes, signal);
        return failures;
      } catch (e) {
        failures.push(e as Error);
        if (signal.aborted) break;
      }
    }
    return failures;
  }

  async has(cid: string): Promise<boolean> {
    return this.local.has(parseCid(cid));
  }

  async pins(): Promise<string[]> {
    const out: string[] = [];
    for await (const p of this.helia.pins.ls()) out.push(p.cid.toString());
    return out.sort();
  }

  async unpin(cid: string): Promise<void> {
    for await (const _ of this.helia.pins.rm(parseCid(cid))) void _;
  }

  async stat(cidString: string, options: AbortOptions = {}): Promise<BlobStat> {
    const cid = parseCid(cidString);
    let size = 0;
    let blocks = 0;
    const limits = dagLimitsFor(this.opts.maxBlobBytes);
    for await (const node of walkDag(this.local, cid, "local store", limits, options.signal)) {
      blocks++;
      if (node.data) size += node.data.length;
    }
    return { cid: cidString, size, blocks, pinned: await this.helia.pins.isPinned(cid) };
  }

  async *exportCar(cidString: string, options: AbortOptions = {}): AsyncIterable<Uint8Array> {
    const cid = parseCid(cidString);
    const { writer, out } = CarWriter.create([cid]);
    const pump = (async () => {
      try {
        const limits = dagLimitsFor(this.opts.maxBlobBytes);
        for await (const node of walkDag(this.local, cid, "local store", limits, options.signal)) {
          await writer.put({ cid: node.cid, bytes: node.bytes });
        }
      } finally {
        await writer.close();
      }
    })();
    yield* out;
    await pump;
  }

  async importCar(car: Uint8Array, options: AbortOptions = {}): Promise<string[]> {
    const { blocks, roots } = await readCar(car, this.opts.maxBlobBytes);
    if (roots.length === 0) throw new InvalidCarError("CAR has no roots");
    await this.storeDags(blocks, roots, this.opts.maxBlobBytes, options.signal);
    return roots.map(String);
  }

  /** Stores the DAG of `root` from `car` (a gateway's answer, whatever roots it names) and pins `root`. */
  private async storeVerifiedDag(car: Uint8Array, root: CID, maxBytes: number, signal: AbortSignal): Promise<void> {
    await this.storeDags((await readCar(car, maxBytes)).blocks, [root], maxBytes, signal);
  }

  /**
   * Stores and pins the DAG of each root, read from `blocks` alone. Every root must be a complete DAG within the
   * limits of a file of `maxBytes`, walked over those blocks, before anything is stored: one bad root and nothing is.
   * Only the blocks of those DAGs are stored, each once.
   */
  private async storeDags(blocks: Map<string, Uint8Array>, roots: CID[], maxBytes: number, signal?: AbortSignal) {
    const nodes = new Map<string, VerifiedNode>();
    for (const r of roots) for (const n of await completeDag(blocks, r, maxBytes, signal)) nodes.set(String(n.cid), n);
    for (const n of nodes.values()) await this.local.put(n.cid, n.bytes);
    for (const r of roots) await this.pin(r, signal);
  }

  /** Pins `cid` unless it is pinned already. */
  private async pin(cid: CID, signal?: AbortSignal): Promise<void> {
    if (!(await this.helia.pins.isPinned(cid))) for await (const _ of this.helia.pins.add(cid, { signal })) void _;
  }

  multiaddrs(): string[] {
    return this.libp2p?.getMultiaddrs().map(String) ?? [];
  }

  connectedPeers(): string[] {
    return this.libp2p?.getConnections().map((c) => c.remotePeer.toString()) ?? [];
  }

  async dial(addr: string, options: AbortOptions = {}): Promise<void> {
    const libp2p = this.libp2p;
    if (!libp2p) throw new StoreError("this store was opened without libp2p (no listen addresses or peers)");
    await libp2p.dial(multiaddr(addr), { signal: options.signal });
  }

  async localBlock(cidString: string): Promise<Uint8Array | null> {
    const cid = parseCid(cidString);
    if (!(await this.local.has(cid))) return null;
    const bytes = await getBlock(this.local, cid);
    verifyBlock(cid, bytes, "local store");
    return bytes;
  }

  async close(): Promise<void> {
    await this.helia.stop();
  }
}

/** A CAR's blocks (each verified against its CID) by CID string, and its roots. */
async function readCar(car: Uint8Array, maxBlobBytes: number) {
  let reader: CarReader;
  try {
    reader = await CarReader.fromBytes(car);
  } catch (e) {
    throw new InvalidCarError(`not a CAR file: ${(e as Error).message}`, { cause: e });
  }
  const blocks = new Map<string, Uint8Array>();
  let total = 0;
  const limit = dagLimitsFor(maxBlobBytes).maxBytes;
  for await (const b of reader.blocks()) {
    try {
      verifyBlock(b.cid, b.bytes, "CAR");
    } catch (e) {
      if (e instanceof CidMismatchError)
        throw new InvalidCarError(`block ${b.cid} does not match its CID; nothing imported`);
      throw e;
    }
    total += b.bytes.length;
    if (total > limit) throw new BlobTooLargeError(total, maxBlobBytes);
    blocks.set(b.cid.toString(), b.bytes);
  }
  return { blocks, roots: await reader.getRoots() };
}

/** Every node of the DAG under `root`, from `blocks` alone, verified, within the limits of a file of `maxBytes`. */
async function completeDag(
  blocks: Map<string, Uint8Array>,
  root: CID,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<VerifiedNode[]> {
  const source: BlockSource = {
    get: (cid) => {
      const b = blocks.get(cid.toString());
      if (!b) throw new InvalidCarError(`CAR lacks block ${cid} of the DAG ${root}; nothing imported`);
      return b;
    },
  };
  const nodes: VerifiedNode[] = [];
  for await (const n of walkDag(source, root, "CAR", dagLimitsFor(maxBytes), signal)) nodes.push(n);
  return nodes;
}

function checkSha256(cid: string, bytes: Uint8Array, expected: string): void {
  const want = (expected.startsWith("0x") ? expected : "0x" + expected).toLowerCase();
  const got = sha256Hex(bytes);
  if (got !== want) throw new DigestMismatchError(cid, want, got);
}
