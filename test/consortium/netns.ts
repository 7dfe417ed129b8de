/**
 * A consortium across separate network stacks: Linux network namespaces joined by veth pairs on a private bridge,
 * made by the test itself. The chain in one namespace, the aggregator in another, three hospitals each in its own,
 * every party with its own store and address; peers are found through the chain (each node announces itself
 * on-chain). Three rounds, then a verifier in a fresh namespace with an empty store passes `fok verify`, fetching
 * every block from the participants. Needs root and iproute2 (`ip netns`); skipped with a warning elsewhere.
 */
import { expect } from "chai";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

// Hardhat's public development accounts: admin, aggregator, three hospitals
const KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
];
const ADDRESSES = [
  "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
  "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
  "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
  "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65",
];

const tag = (process.pid % 46656).toString(36);
const net = `10.213.${process.pid % 250}`;
const PARTIES = ["chain", "agg", "h1", "h2", "h3", "ver"] as const;
type Party = (typeof PARTIES)[number];
const ns = (p: Party) => `fok${tag}-${p}`;
const ipOf = (p: Party) => `${net}.${PARTIES.indexOf(p) + 2}`;
const BRIDGE = `fokbr${tag}`;

const ip = (...args: string[]) => execFileSync("ip", args, { stdio: ["ignore", "ignore", "pipe"] });

/** The namespaces, the bridge and one veth pair per party; throws where namespaces cannot be made. */
function buildNetwork(): void {
  ip("link", "add", BRIDGE, "type", "bridge");
  ip("addr", "add", `${net}.1/24`, "dev", BRIDGE);
  ip("link", "set", BRIDGE, "up");
  PARTIES.forEach((p, i) => {
    ip("netns", "add", ns(p));
    ip("link", "add", `fk${tag}${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns(p));
    ip("link", "set", `fk${tag}${i}`, "master", BRIDGE, "up");
    ip("-n", ns(p), "addr", "add", `${ipOf(p)}/24`, "dev", "eth0");
    ip("-n", ns(p), "link", "set", "eth0", "up");
    ip("-n", ns(p), "link", "set", "lo", "up");
  });
}

function tearDownNetwork(): void {
  for (const p of PARTIES) {
    try {
      ip("netns", "del", ns(p));
    } catch {
      // not made
    }
  }
  try {
    ip("link", "del", BRIDGE);
  } catch {
    // not made
  }
}

interface Run {
  proc: ChildProcess;
  out: string[];
  err: string[];
  done: Promise<number>;
}

/** A command inside `party`'s namespace, from the repository root, in its own process group. */
function inNs(party: Party, cmd: string[]): Run {
  const proc = spawn("ip", ["netns", "exec", ns(party), ...cmd], {
    cwd: process.cwd(),
    env: { ...process.env, CI: "true", HARDHAT_DISABLE_TELEMETRY: "true" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const run: Run = { proc, out: [], err: [], done: Promise.resolve(0) };
  const lines = (into: string[]) => {
    let partial = "";
    return (d: Buffer) => {
      const parts = (partial + d.toString()).split("\n");
      partial = parts.pop()!; // a line the next chunk ends
      into.push(...parts.filter(Boolean));
    };
  };
  proc.stdout!.on("data", lines(run.out));
  proc.stderr!.on("data", lines(run.err));
  run.done = new Promise((resolve) => proc.once("exit", (code) => resolve(code ?? -1)));
  return run;
}

const fok = (party: Party, args: string[]) =>
  inNs(party, [process.execPath, "--import", "tsx", "node/cli/fok.ts", ...args]);

/** Runs `fok` in `party`'s namespace to the end; its output, failing with its stderr when it exits non-zero. */
async function fokOk(party: Party, args: string[]): Promise<string[]> {
  const r = fok(party, args);
  const code = await r.done;
  if (code !== 0) throw new Error(`fok ${args.slice(0, 2).join(" ")} in ${party} exited ${code}: ${r.err.join("\n")}`);
  return r.out;
}

async function until(ok: () => boolean, ms = 60_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 100)))
    if (Date.now() - t0 > ms) throw new Error("timed out waiting");
}

describe("a consortium across network namespaces", function () {
  this.timeout(600_000);
  let dir: string;
  let chain: Run | undefined;
  const running: Run[] = [];

  before(async function () {
    try {
      tearDownNetwork();
      buildNetwork();
    } catch (e) {
      tearDownNetwork();
      console.warn(`    WARNING: skipped: network namespaces cannot be made here (${(e as Error).message.trim()})`);
      this.skip();
    }
    dir = await mkdtemp(join(tmpdir(), "fok-netns-"));
    chain = inNs("chain", ["npx", "hardhat", "node", "--hostname", ipOf("chain"), "--port", "8545"]);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`hardhat node did not start: ${chain!.err.join("\n")}`)), 120_000);
      chain!.proc.stdout!.on("data", (d: Buffer) => {
        if (d.toString().includes("Started HTTP")) {
          clearTimeout(t);
          resolve();
        }
      });
    });
  });

  after(async function () {
    for (const r of [...running, ...(chain ? [chain] : [])]) {
      try {
        process.kill(-r.proc.pid!, "SIGKILL");
      } catch {
        // ended
      }
    }
    tearDownNetwork();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("runs 3 rounds, every party on its own node, peers from the chain; a fresh verifier passes", async function () {
    const rpc = `http://${ipOf("chain")}:8545`;
    // every party keeps its own folder: its store and its copy of the deployment file
    const flags = (folder: string, key?: number) => [
      "--rpc",
      rpc,
      ...(key === undefined ? [] : ["--private-key", KEYS[key]!]),
      "--deployment",
      join(dir, folder, "deployment.json"),
      "--store-dir",
      join(dir, folder, "store"),
    ];
    await fokOk("agg", ["chain", "deploy", ...flags("admin", 0)]);
    for (const folder of ["agg", "h1", "h2", "h3", "ver"]) {
      await mkdir(join(dir, folder), { recursive: true });
      await copyFile(join(dir, "admin", "deployment.json"), join(dir, folder, "deployment.json"));
    }
    for (const k of [2, 3, 4])
      await fokOk("agg", [
        "identity",
        "register",
        "--address",
        ADDRESSES[k]!,
        "--institution",
        `h${k}`,
        ...flags("admin", 0),
      ]);
    const create = ["task", "create", "--aggregator", ADDRESSES[1]!, "--rounds", "3", "--min-updates", "3"];
    await fokOk("agg", [...create, ...flags("admin", 0)]);
    const listen = (p: Party) => ["--listen", `/ip4/${ipOf(p)}/tcp/4001`];
    const aggregator = fok("agg", [
      "aggregator",
      "run",
      "--task",
      "1",
      "--expected",
      "3",
      ...listen("agg"),
      ...flags("agg", 1),
    ]);
    const train = ["--task", "1", "--steps", "2", "--batch-size", "2"];
    const hospitals = (
      [
        ["h1", 2, "disease"],
        ["h2", 3, "drug"],
        ["h3", 4, "symptom"],
      ] as const
    ).map(([p, key, data]) =>
      fok(p, ["client", "run", ...train, "--wordnet-category", data, ...listen(p), ...flags(p, key)]),
    );
    running.push(aggregator, ...hospitals);
    const codes = await Promise.all(running.map((r) => r.done));
    const logs = running.map((r) => r.err.join("\n"));
    expect(codes, logs.join("\n----\n")).to.deep.equal([0, 0, 0, 0]);
    expect(aggregator.err).to.include("aggregator: task 1 done, 3 rounds finalized by this run");
    // each hospital and the aggregator found each other's node through the chain (nobody passed --peer): one of
    // the two dialed, whichever refreshed first
    const aggregatorNode = `connected to ${ADDRESSES[1]}'s node at /ip4/${ipOf("agg")}/tcp/4001/p2p/`;
    const found = hospitals.map(
      (h, i) =>
        h.err.some((l) => l.startsWith(aggregatorNode)) ||
        aggregator.err.some((l) => l.startsWith(`connected to ${ADDRESSES[i + 2]}'s node at /ip4/${net}.`)),
    );
    expect(found).to.deep.equal([true, true, true]);
    // the participants keep serving their blocks (the same store, so the same peer id and the announced address)
    const serving = (["agg", "h1", "h2", "h3"] as const).map((p) =>
      fok(p, ["store", "serve", ...listen(p), "--store-dir", join(dir, p, "store")]),
    );
    running.push(...serving);
    for (const node of serving) await until(() => node.out.some((l) => l.startsWith("libp2p /ip4/")));
    // a verifier in a fresh namespace, with an empty store and no key, fetches every block from the participants
    const verified = fok("ver", ["verify", "--task", "1", ...listen("ver"), ...flags("ver")]);
    running.push(verified);
    const code = await verified.done;
    const failed = verified.out.filter((l) => l.startsWith("FAIL"));
    expect([code, failed], [...verified.err, ...verified.out.slice(-5)].join("\n")).to.deep.equal([0, []]);
    expect(verified.out.at(-1)).to.match(/^VERIFIED: task 1, \d+ checks passed$/);
    const reached = verified.err.filter((l) => l.startsWith("connected to ")).map((l) => l.split("'s node")[0]);
    expect(reached.sort()).to.deep.equal([1, 2, 3, 4].map((k) => `connected to ${ADDRESSES[k]}`).sort());
    expect(
      verified.out.filter((l) => l.startsWith("PASS  round 3 identity") && l.includes("update digest")),
    ).to.have.length(3);
  });
});
