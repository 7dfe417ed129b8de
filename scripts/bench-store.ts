/**
 * Adapter-store throughput: add+pin and verified get for 1, 20 and 100 MB, locally (fs-backed Helia) and from a
 * peer on loopback (bitswap and trustless gateway), beside a plain file write/read of the same bytes as the ceiling.
 *
 *   npx tsx scripts/bench-store.ts [--json] [--sizes 1,20,100]
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createStore } from "../node/store/index.js";
import { sha256Hex } from "../node/digest.js";
import { deterministicBytes } from "../node/testing/deterministic.js";

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const sizesMb = (arg("--sizes") ?? "1,20,100").split(",").map(Number);
const MB = 1024 * 1024;

async function time<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await fn();
  return [v, (performance.now() - t) / 1000];
}

type Row = { sizeMb: number; op: string; seconds: number; mbPerS: number };
const rows: Row[] = [];
const push = (sizeMb: number, op: string, seconds: number) =>
  rows.push({ sizeMb, op, seconds, mbPerS: sizeMb / seconds });

const work = await mkdtemp(join(tmpdir(), "fok-bench-store-"));
try {
  for (const size of sizesMb) {
    const bytes = deterministicBytes(size * MB, `bench-${size}`);
    const digest = sha256Hex(bytes);

    // ceiling: a plain file write (with fsync-free close) and read of the same bytes
    const file = join(work, `plain-${size}`);
    push(size, "plain file write", (await time(() => writeFile(file, bytes)))[1]);
    push(size, "plain file read", (await time(() => readFile(file)))[1]);

    const dir = join(work, `store-${size}`);
    const store = await createStore({ dir });
    const [cid, addS] = await time(() => store.add(bytes));
    push(size, "store add+pin (fs)", addS);
    push(size, "store get, verified (fs)", (await time(() => store.get(cid, { expectedSha256: digest })))[1]);
    await store.close();

    // a second process serves the same bytes over bitswap and a gateway on loopback
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(import.meta.dirname, "../node/testing/store-peer.ts"), String(size * MB)],
      {
        stdio: ["pipe", "pipe", "inherit"],
        env: { ...process.env },
      },
    );
    const line: string = await new Promise((r) => createInterface({ input: child.stdout! }).once("line", r));
    const info = JSON.parse(line) as { cid: string; multiaddrs: string[]; gateway: string };
    const peerBytes = deterministicBytes(size * MB, "peer-process");
    const viaBitswap = await createStore({
      dir: join(work, `bitswap-${size}`),
      peers: [info.multiaddrs[0]!],
      fetchTimeoutMs: 300_000,
    });
    push(
      size,
      "get from peer, bitswap (loopback)",
      (await time(() => viaBitswap.get(info.cid, { expectedSha256: sha256Hex(peerBytes) })))[1],
    );
    await viaBitswap.close();
    const viaGateway = await createStore({
      dir: join(work, `gateway-${size}`),
      gateways: [info.gateway],
      fetchTimeoutMs: 300_000,
    });
    push(
      size,
      "get from peer, gateway CAR (loopback)",
      (await time(() => viaGateway.get(info.cid, { expectedSha256: sha256Hex(peerBytes) })))[1],
    );
    await viaGateway.close();
    child.stdin!.end();
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

if (process.argv.includes("--json")) console.log(JSON.stringify(rows, null, 2));
else {
  console.log("| size | operation | seconds | MB/s |\n| ---: | --- | ---: | ---: |");
  for (const r of rows) console.log(`| ${r.sizeMb} MB | ${r.op} | ${r.seconds.toFixed(3)} | ${r.mbPerS.toFixed(1)} |`);
}
