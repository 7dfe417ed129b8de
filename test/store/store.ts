import { expect } from "chai";
import { rejection } from "../../node/testing/rejection.js";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import {
  BlobTooLargeError,
  CidMismatchError,
  DigestMismatchError,
  FetchTimeoutError,
  InvalidCarError,
  NotFoundError,
  UNIXFS_V1_2025,
  cidOf,
  createStore,
  type AdapterStore,
} from "../../node/store/index.js";
import { sha256Hex } from "../../node/digest.js";
import { serveGateway } from "../../node/store/gateway.js";
import { deterministicBytes } from "../../node/testing/deterministic.js";

const utf8 = (s: string) => new TextEncoder().encode(s);

async function collect(it: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of it) parts.push(p);
  return Buffer.concat(parts);
}

describe("node/store", function () {
  describe("CIDs agree with Kubo", function () {
    it("gives `ipfs add --cid-version=1` CIDs for small files", async function () {
      expect((await cidOf(utf8("hello world"))).toString()).to.equal(
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
      );
      // kubo test/sharness/t0124-gateway-ipns-record: `echo "Hello IPFS" | ipfs add --cid-version 1`
      expect((await cidOf(utf8("Hello IPFS\n"))).toString()).to.equal(
        "bafkreidfdrlkeq4m4xnxuyx6iae76fdm4wgl5d4xzsb77ixhyqwumhz244",
      );
      expect((await cidOf(new Uint8Array(0))).toString()).to.equal(
        "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
      );
    });

    it("matches Kubo's 256 KiB / 174-link tree at 174 chunks and one over (second level)", async function () {
      // kubo test/cli/cid_profiles_test.go, profile unixfs-v0-2015: the same chunker and balanced layout as ours,
      // with CIDv0 dag-pb leaves; the tree shape is what these two vectors pin down.
      const v0 = { ...(await import("../../node/store/dag.js")).KUBO_CIDV1, cidVersion: 0 as const, rawLeaves: false };
      const at = deterministicBytes(174 * 262_144, "v0-seed");
      expect((await cidOf(at, v0)).toString()).to.equal("QmUbBALi174SnogsUzLpYbD4xPiBSFANF4iztWCsHbMKh2");
      const over = deterministicBytes(175 * 262_144, "v0-seed");
      expect((await cidOf(over, v0)).toString()).to.equal("QmepeWtdmS1hHXx1oZXsPUv6bMrfRRKfZcoPPU4eEfjnbf");
    });

    it("matches Kubo on a raw-leaf CIDv1 file one byte over a chunk", async function () {
      // kubo / IPIP-499 unixfs-v1-2025 vector: 1 MiB + 1 bytes, seed chunk-v1-seed
      const data = deterministicBytes(1_048_577, "chunk-v1-seed");
      expect((await cidOf(data, UNIXFS_V1_2025)).toString()).to.equal(
        "bafybeigmix7t42i6jacydtquhet7srwvgpizfg7gjbq7627d35mjomtu64",
      );
    });
  });

  describe("embedded store", function () {
    let dir: string;
    let store: AdapterStore;
    beforeEach(async function () {
      dir = await mkdtemp(join(tmpdir(), "fok-store-"));
      store = await createStore({ dir, maxBlobBytes: 8 * 1024 * 1024 });
    });
    afterEach(async function () {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("adds, pins, reads back verified bytes, and stats", async function () {
      const bytes = deterministicBytes(600_000, "adapter");
      const cid = await store.add(bytes);
      expect(cid).to.equal((await cidOf(bytes)).toString());
      expect(Buffer.compare(await store.get(cid, { expectedSha256: sha256Hex(bytes) }), bytes)).to.equal(0);
      expect(await store.has(cid)).to.equal(true);
      expect(await store.pins()).to.deep.equal([cid]);
      // 600,000 bytes = 3 leaves of 256 KiB (the last partial) + 1 root
      expect(await store.stat(cid)).to.deep.equal({ cid, size: 600_000, blocks: 4, pinned: true });
      await store.unpin(cid);
      expect(await store.pins()).to.deep.equal([]);
    });

    it("keeps blobs and pins across a restart", async function () {
      const bytes = deterministicBytes(300_000, "persist");
      const cid = await store.add(bytes);
      await store.close();
      store = await createStore({ dir });
      expect(await store.pins()).to.deep.equal([cid]);
      expect(Buffer.compare(await store.get(cid), bytes)).to.equal(0);
    });

    it("refuses bytes whose sha256 differs from the on-chain digest, returning nothing", async function () {
      const cid = await store.add(utf8("adapter bytes"));
      const wrong = sha256Hex(utf8("other bytes"));
      const err = await rejection(store.get(cid, { expectedSha256: wrong }));
      expect(err).to.be.instanceOf(DigestMismatchError);
      expect(err.name).to.equal("DigestMismatchError");
      expect((err as DigestMismatchError).expected).to.equal(wrong);
      expect((err as DigestMismatchError).actual).to.equal(sha256Hex(utf8("adapter bytes")));
    });

    it("detects a block corrupted on disk", async function () {
      const bytes = deterministicBytes(300_000, "corrupt");
      const cid = await store.add(bytes);
      // flip one byte in the largest block file (a 256 KiB leaf)
      const files: { path: string; size: number }[] = [];
      const walk = async (d: string) => {
        for (const e of await readdir(d, { withFileTypes: true })) {
          const p = join(d, e.name);
          if (e.isDirectory()) await walk(p);
          else files.push({ path: p, size: (await stat(p)).size });
        }
      };
      await walk(join(dir, "blocks"));
      const leaf = files.sort((a, b) => b.size - a.size)[0]!;
      const data = await readFile(leaf.path);
      data[1000] ^= 0xff;
      await writeFile(leaf.path, data);
      const err = await rejection(store.get(cid));
      expect(err).to.be.instanceOf(CidMismatchError);
      expect(err.message).to.match(/does not match its CID/);
    });

    it("rejects blobs over the size limit on add and on get", async function () {
      const big = new Uint8Array(8 * 1024 * 1024 + 1);
      const err = await rejection(store.add(big));
      expect(err).to.be.instanceOf(BlobTooLargeError);
      expect([(err as BlobTooLargeError).size, (err as BlobTooLargeError).maxBytes]).to.deep.equal([
        8 * 1024 * 1024 + 1,
        8 * 1024 * 1024,
      ]);
      const roomy = await createStore({ maxBlobBytes: 1 << 30 });
      const car = await collect(
        (async function* () {
          const cid = await roomy.add(big);
          yield* roomy.exportCar(cid);
        })(),
      );
      await roomy.close();
      const small = await createStore({ maxBlobBytes: 1024 * 1024 });
      const err2 = await rejection(small.importCar(car));
      expect(err2).to.be.instanceOf(BlobTooLargeError);
      await small.close();
    });

    it("says NotFoundError for a CID it lacks when it has no peers or gateways", async function () {
      const cid = (await cidOf(utf8("nowhere"))).toString();
      const err = await rejection(store.get(cid));
      expect(err).to.be.instanceOf(NotFoundError);
      expect((err as NotFoundError).cid).to.equal(cid);
    });
  });

  describe("CAR export and import", function () {
    it("round-trips a blob through a CAR into another store", async function () {
      const a = await createStore();
      const b = await createStore();
      const bytes = deterministicBytes(700_000, "car");
      const cid = await a.add(bytes);
      const car = await collect(a.exportCar(cid));
      expect(await b.importCar(car)).to.deep.equal([cid]);
      expect(await b.pins()).to.deep.equal([cid]);
      expect(Buffer.compare(await b.get(cid), bytes)).to.equal(0);
      await a.close();
      await b.close();
    });

    it("refuses a CAR with one lying block whole: nothing is stored", async function () {
      const a = await createStore();
      const b = await createStore();
      const bytes = deterministicBytes(700_000, "lying car");
      const cid = await a.add(bytes);
      const car = Buffer.from(await collect(a.exportCar(cid)));
      car[car.length - 10] ^= 0x01; // inside the last block's bytes
      const err = await rejection(b.importCar(car));
      expect(err).to.be.instanceOf(InvalidCarError);
      expect(err.message).to.match(/does not match its CID; nothing imported/);
      expect(await b.has(cid)).to.equal(false);
      expect(await b.pins()).to.deep.equal([]);
      expect((await rejection(b.importCar(utf8("not a car")))).name).to.equal("InvalidCarError");
      await a.close();
      await b.close();
    });
  });

  describe("between processes on loopback", function () {
    this.timeout(120_000);
    const SIZE = 20 * 1024 * 1024;
    let child: ChildProcess;
    let info: { cid: string; multiaddrs: string[]; gateway: string };

    before(async function () {
      child = spawn(
        process.execPath,
        ["--import", "tsx", join(import.meta.dirname, "../../node/testing/store-peer.ts"), String(SIZE)],
        {
          stdio: ["pipe", "pipe", "inherit"],
        },
      );
      const line: string = await new Promise((resolve, reject) => {
        createInterface({ input: child.stdout! }).once("line", resolve);
        child.once("exit", (code) => reject(new Error(`peer process exited with ${code}`)));
      });
      info = JSON.parse(line);
    });
    after(function () {
      child.stdin!.end();
    });

    it("listens on 127.0.0.1 only", function () {
      expect(info.multiaddrs.length).to.be.greaterThan(0);
      for (const m of info.multiaddrs) expect(m).to.match(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//);
      expect(info.gateway).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    });

    it("fetches a 20 MB adapter by bitswap, verified", async function () {
      const expected = deterministicBytes(SIZE, "peer-process");
      const store = await createStore({ peers: [info.multiaddrs[0]!] });
      const bytes = await store.get(info.cid, { expectedSha256: sha256Hex(expected) });
      expect(bytes.length).to.equal(SIZE);
      expect(await store.has(info.cid)).to.equal(true);
      await store.close();
    });

    it("fetches a 20 MB adapter from the trustless gateway, verified", async function () {
      const expected = deterministicBytes(SIZE, "peer-process");
      const store = await createStore({ gateways: [info.gateway] });
      const bytes = await store.get(info.cid, { expectedSha256: sha256Hex(expected) });
      expect(bytes.length).to.equal(SIZE);
      const raw = await fetch(`${info.gateway}/ipfs/${info.cid}?format=raw`);
      expect(raw.status).to.equal(200);
      expect(raw.headers.get("content-type")).to.equal("application/vnd.ipld.raw");
      const missing = await fetch(`${info.gateway}/ipfs/${(await cidOf(utf8("absent"))).toString()}?format=car`);
      expect(missing.status).to.equal(404);
      await store.close();
    });

    it("times out naming the CID and the peers tried", async function () {
      const absent = (await cidOf(utf8("absent everywhere"))).toString();
      const store = await createStore({ peers: [info.multiaddrs[0]!], fetchTimeoutMs: 1500 });
      const err = await rejection(store.get(absent));
      expect(err).to.be.instanceOf(FetchTimeoutError);
      expect((err as FetchTimeoutError).cid).to.equal(absent);
      expect((err as FetchTimeoutError).sources.join(" ")).to.contain(info.multiaddrs[0]!.split("/p2p/")[1]!);
      await store.close();
    });
  });

  it("rejects a gateway that serves tampered blocks, storing nothing", async function () {
    const honest = await createStore();
    const bytes = deterministicBytes(400_000, "tampered gateway");
    const cid = await honest.add(bytes);
    const car = Buffer.from(await collect(honest.exportCar(cid)));
    car[car.length - 1] ^= 0x80;
    const liar = createServer((_, res) => res.writeHead(200, { "content-type": "application/vnd.ipld.car" }).end(car));
    await new Promise<void>((r) => liar.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(liar.address() as AddressInfo).port}`;
    const store = await createStore({ gateways: [url] });
    const err = await rejection(store.get(cid));
    expect(err).to.be.instanceOf(InvalidCarError);
    expect(await store.has(cid)).to.equal(false);
    await store.close();
    await honest.close();
    liar.close();
  });

  it("serves the gateway on 127.0.0.1 by default", async function () {
    const store = await createStore();
    const gw = await serveGateway(store);
    expect(gw.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    await gw.close();
    await store.close();
  });
});
