/**
 * DAG bombs, per-blob size limits and gateways that fail or lie: every DAG operation is bounded (blocks, bytes,
 * depth) whatever blockstore holds the blocks, and a gateway that has nothing or serves something else does not stop
 * the others from being tried or get anything stored.
 */
import { expect } from "chai";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as dagPb from "@ipld/dag-pb";
import * as raw from "multiformats/codecs/raw";
import { CID } from "multiformats/cid";
import { sha256 } from "multiformats/hashes/sha2";
import { UnixFS } from "ipfs-unixfs";
import { CarWriter } from "@ipld/car";
import { FsBlockstore } from "blockstore-fs";
import { MemoryBlockstore } from "blockstore-core";
import {
  BlobTooLargeError,
  DagLimitError,
  GatewayResponseError,
  createStore,
  dagLimitsFor,
  type AdapterStore,
} from "../../node/store/index.js";
import { readFile, walkDag } from "../../node/store/dag.js";
import { rejection } from "../../node/testing/rejection.js";
import { deterministicBytes } from "../../node/testing/deterministic.js";

type Block = { cid: CID; bytes: Uint8Array };

async function block(bytes: Uint8Array, codec: number): Promise<Block> {
  return { cid: CID.createV1(codec, await sha256.digest(bytes)), bytes };
}

/** A UnixFS file node with no data of its own and `width` links to `child` (the same one each time). */
async function fanOut(child: CID, width: number): Promise<Block> {
  const Links = Array.from({ length: width }, () => ({ Hash: child, Tsize: 1 }));
  return block(dagPb.encode(dagPb.prepare({ Data: new UnixFS({ type: "file" }).marshal(), Links })), dagPb.code);
}

/** A DAG of `depth` blocks (about 23 KB) whose walk visits width^depth blocks (100^6 = 10^12 here). */
async function wideBomb(width = 100, depth = 6): Promise<Block[]> {
  const blocks = [await block(new TextEncoder().encode("x"), raw.code)];
  for (let i = 0; i < depth; i++) blocks.push(await fanOut(blocks.at(-1)!.cid, width));
  return blocks.reverse(); // root first
}

/** A chain of `depth` one-link nodes: deeper than any honest file. */
async function deepChain(depth = 40): Promise<Block[]> {
  return wideBomb(1, depth);
}

async function carOf(blocks: Block[]): Promise<Uint8Array> {
  const { writer, out } = CarWriter.create([blocks[0]!.cid]);
  const parts: Uint8Array[] = [];
  const reading = (async () => {
    for await (const p of out) parts.push(p);
  })();
  for (const b of blocks) await writer.put(b);
  await writer.close();
  await reading;
  return Buffer.concat(parts);
}

async function drain(it: AsyncIterable<unknown>): Promise<void> {
  for await (const _ of it) void _;
}

/** Runs `fn`, which must reject with DagLimitError naming `limit`, within `ms`. */
async function refusedWithin(ms: number, limit: DagLimitError["limit"], fn: () => Promise<unknown>) {
  const t0 = performance.now();
  const err = await rejection(fn());
  const took = performance.now() - t0;
  expect(err, String(err)).to.be.instanceOf(DagLimitError);
  expect((err as DagLimitError).limit).to.equal(limit);
  expect(took).to.be.below(ms);
}

describe("node/store limits", function () {
  const MAX = 1024 * 1024; // what these stores accept: 1 MiB blobs
  const limits = dagLimitsFor(MAX);

  it("dagLimitsFor: bytes, blocks and depth of a file of the given size", function () {
    expect(limits).to.deep.equal({ maxBytes: 1_179_648, maxBlocks: 1152, maxDepth: 16 });
    expect(dagLimitsFor(0)).to.deep.equal({ maxBytes: 65_536, maxBlocks: 1024, maxDepth: 16 });
  });

  describe("DAG bombs are refused in bounded time", function () {
    for (const [name, bomb, limit] of [
      ["wide (10^12 visits)", wideBomb, "blocks"],
      ["deep (40 levels)", deepChain, "depth"],
    ] as const) {
      it(`${name}: walk and read over a memory blockstore, which never checks an abort signal`, async function () {
        const blocks = await bomb();
        const mem = new MemoryBlockstore();
        for (const b of blocks) await mem.put(b.cid, b.bytes);
        const root = blocks[0]!.cid;
        await refusedWithin(5_000, limit, () => drain(walkDag(mem, root, "memory", limits)));
        await refusedWithin(5_000, limit, () => readFile(mem, root, "memory", MAX));
      });

      it(`${name}: get, stat, export over the file blockstore; import into file and memory stores`, async function () {
        const blocks = await bomb();
        const dir = await mkdtemp(join(tmpdir(), "fok-bomb-"));
        // blocks put straight into the folder a store then opens, as a disk another process wrote
        const fs = new FsBlockstore(join(dir, "blocks"));
        await fs.open();
        for (const b of blocks) await fs.put(b.cid, b.bytes);
        await fs.close();
        const onDisk = await createStore({ dir, maxBlobBytes: MAX });
        const root = blocks[0]!.cid.toString();
        await refusedWithin(5_000, limit, () => onDisk.get(root));
        await refusedWithin(5_000, limit, () => onDisk.stat(root));
        await refusedWithin(5_000, limit, () => drain(onDisk.exportCar(root)));
        await onDisk.close();
        const car = await carOf(blocks);
        for (const target of [
          await createStore({ maxBlobBytes: MAX }),
          await createStore({ dir, maxBlobBytes: MAX }),
        ]) {
          const fresh = blocks[0]!.cid;
          await refusedWithin(5_000, limit, () => target.importCar(car));
          expect(await target.pins()).to.not.include(fresh.toString());
          await target.close();
        }
        await rm(dir, { recursive: true, force: true });
      });
    }
  });

  describe("gateways", function () {
    let servers: Server[] = [];
    const serve = async (handler: Parameters<typeof createServer>[1]) => {
      const s = createServer(handler);
      await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
      servers.push(s);
      return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    };
    let honest: AdapterStore;
    beforeEach(async () => {
      honest = await createStore();
    });
    afterEach(async () => {
      for (const s of servers) s.close();
      servers = [];
      await honest.close();
    });

    it("one gateway's 404 stops fallback no more: the next gateway serves the blob", async function () {
      const bytes = deterministicBytes(300_000, "fallback");
      const cid = await honest.add(bytes);
      const car = await (async () => {
        const parts: Uint8Array[] = [];
        for await (const p of honest.exportCar(cid)) parts.push(p);
        return Buffer.concat(parts);
      })();
      const empty = await serve((_, res) => res.writeHead(404).end());
      const broken = await serve((_, res) => res.writeHead(200).end("not a car"));
      const good = await serve((_, res) => res.writeHead(200, { "content-type": "application/vnd.ipld.car" }).end(car));
      const store = await createStore({ gateways: [empty, broken, good] });
      expect(Buffer.from(await store.get(cid)).equals(Buffer.from(bytes))).to.equal(true);
      await store.close();
      // with only the empty one, its answer is the error
      const alone = await createStore({ gateways: [empty] });
      const err = await rejection(alone.get(cid));
      expect(err).to.be.instanceOf(GatewayResponseError);
      expect((err as GatewayResponseError).status).to.equal(404);
      await alone.close();
    });

    it("gateway CAR stored before check: a CAR of other roots and blocks stores and pins none", async function () {
      const wanted = await honest.add(deterministicBytes(1000, "wanted"));
      const planted = await block(new TextEncoder().encode("planted by the gateway"), raw.code);
      // the gateway answers with a CAR rooted at its own block, which lacks the requested DAG
      const car = await carOf([planted]);
      const liar = await serve((_, res) => res.writeHead(200).end(car));
      const store = await createStore({ gateways: [liar] });
      expect((await rejection(store.get(wanted))).message).to.include(`CAR lacks block ${wanted}`);
      expect([await store.has(planted.cid.toString()), await store.pins()]).to.deep.equal([false, []]);
      await store.close();
    });

    it("refuses a blob above the size asked for (an adapter's limit) before storing any of it", async function () {
      const bytes = deterministicBytes(300_000, "too big");
      const cid = await honest.add(bytes);
      const parts: Uint8Array[] = [];
      for await (const p of honest.exportCar(cid)) parts.push(p);
      const car = Buffer.concat(parts);
      const gw = await serve((_, res) => res.writeHead(200).end(car));
      const store = await createStore({ gateways: [gw] });
      const err = await rejection(store.get(cid, { maxBytes: 100_000 }));
      expect(err).to.be.instanceOf(BlobTooLargeError);
      expect(await store.has(cid)).to.equal(false);
      expect(Buffer.from(await store.get(cid, { maxBytes: 300_000 })).equals(Buffer.from(bytes))).to.equal(true);
      await store.close();
    });
  });
});
