/**
 * A consortium across separate network stacks: Linux network namespaces joined by veth pairs on a private bridge,
 * made by the test itself. The chain in one namespace, the aggregator in another, three hospitals each in its own,
 * every party with its own store and address; peers are found through the chain (each node announces itself
 * on-chain). Three rounds, then a verifier in a fresh namespace with an empty store passes `fok verify`, fetching
 * every block from the participants. Needs root and iproute2 (`ip netns`); skipped with a warning elsewhere.
 */
import { expect } from "chai";
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { appendFileSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { JsonRpcProvider } from "ethers";
import { FederationLedger } from "../../node/chain/index.js";
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
const PARTIES = ["chain", "agg", "h1", "h2", "h3", "ver", "admin"] as const;
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
function inNs(party: Party, cmd: string[], env: Record<string, string> = {}): Run {
  const proc = spawn("ip", ["netns", "exec", ns(party), ...cmd], {
    cwd: process.cwd(),
    // FOK_THREADS=1: the parties share this machine's cores (each hospital of the walkthrough would take them all)
    env: { ...process.env, CI: "true", HARDHAT_DISABLE_TELEMETRY: "true", FOK_THREADS: "1", ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const run: Run = { proc, out: [], err: [], done: Promise.resolve(0) };
  // FOK_NETNS_LOGS=<folder>: every process's lines, time-stamped, in a file per process (for a failure's story)
  const logs = process.env.FOK_NETNS_LOGS;
  const lines = (into: string[], stream: string) => {
    let partial = "";
    return (d: Buffer) => {
      const parts = (partial + d.toString()).split("\n");
      partial = parts.pop()!; // a line the next chunk ends
      into.push(...parts.filter(Boolean));
      if (logs) {
        const stamp = new Date().toISOString().slice(11, 23);
        const text = parts.map((l) => `${stamp} ${l}\n`).join("");
        appendFileSync(join(logs, `${party}-${proc.pid}.${stream}`), text);
      }
    };
  };
  proc.stdout!.on("data", lines(run.out, "out"));
  proc.stderr!.on("data", lines(run.err, "err"));
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

async function untilAsync(ok: () => Promise<boolean>, ms = 90_000): Promise<void> {
  for (const t0 = Date.now(); !(await ok().catch(() => false)); await new Promise((r) => setTimeout(r, 100)))
    if (Date.now() - t0 > ms) throw new Error("timed out waiting");
}

/** Drops every packet between `a` and `b` (both directions), or lets them through again: a partition. */
function partition(a: Party, b: Party, state: "on" | "off"): void {
  for (const [from, to] of [
    [a, b],
    [b, a],
  ] as const)
    ip("-n", ns(from), "route", state === "on" ? "add" : "del", "blackhole", `${ipOf(to)}/32`);
}

/** Takes `party`'s link to the bridge down or up (its namespace keeps running, cut off). */
function linkOf(party: Party, state: "up" | "down"): void {
  ip("link", "set", `fk${tag}${PARTIES.indexOf(party)}`, state);
}

/**
 * The README's consortium walkthrough across machines: the shell block after its `walkthrough` marker, one section
 * per machine (a comment naming the address, `on 10.0.0.N`, then its commands), each as the party of that address
 * in this network, with its addresses moved into the test's subnet.
 */
async function walkthrough(): Promise<{ party: Party; title: string; script: string }[]> {
  const readme = await readFile("README.md", "utf8");
  const marker = readme.indexOf("<!-- walkthrough:");
  const start = readme.indexOf("```sh\n", marker) + 6;
  const block = readme.slice(start, readme.indexOf("\n```", start));
  return block.split("\n\n").map((section) => {
    const title = section.split("\n")[0]!;
    const octet = Number(/ on 10\.0\.0\.(\d+)\b/.exec(title)?.[1]);
    const party = PARTIES.find((p) => ipOf(p) === `${net}.${octet}`);
    if (!party) throw new Error(`README walkthrough: no party at 10.0.0.${octet} in "${title}"`);
    return { party, title, script: section.replaceAll("10.0.0.", `${net}.`) };
  });
}

/** Runs a walkthrough section with bash in its party's namespace, with `home` as its HOME. */
const runSection = (s: { party: Party; script: string }, home: string) =>
  inNs(s.party, ["bash", "-euo", "pipefail", "-c", s.script], { HOME: home });

async function until(ok: () => boolean, ms = 60_000): Promise<void> {
  for (const t0 = Date.now(); !ok(); await new Promise((r) => setTimeout(r, 100)))
    if (Date.now() - t0 > ms) throw new Error("timed out waiting");
}

describe("a consortium across network namespaces", function () {
  this.timeout(600_000);
  let dir: string;
  let chain: Run | undefined;
  let sections: Awaited<ReturnType<typeof walkthrough>> = [];
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
    sections = await walkthrough();
    expect(sections.map((x) => x.party)).to.deep.equal(["chain", "admin", "agg", "h1", "h2", "h3", "ver"]);
    // the chain's node keeps this machine's home (Hardhat's caches); every other party gets one of its own
    chain = runSection(sections[0]!, process.env.HOME ?? dir);
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

  const rpc = () => `http://${ipOf("chain")}:8545`;
  // every party keeps its own folder, $HOME/fok as the walkthrough's $FOK_HOME: its store and its deployment file
  const home = (folder: string) => join(dir, folder, "fok");
  const flags = (folder: string, key?: number) => [
    "--rpc",
    rpc(),
    ...(key === undefined ? [] : ["--private-key", KEYS[key]!]),
    "--deployment",
    join(home(folder), "deployment.json"),
    "--store-dir",
    join(home(folder), "store"),
  ];
  const listen = (p: Party) => ["--listen", `/ip4/${ipOf(p)}/tcp/4001`];
  const train = (task: number) => ["--task", String(task), "--steps", "2", "--batch-size", "2"];
  const DATA = { h1: [2, "disease"], h2: [3, "drug"], h3: [4, "symptom"] } as const;
  const hospital = (p: "h1" | "h2" | "h3", task: number) =>
    fok(p, ["client", "run", ...train(task), "--wordnet-category", DATA[p][1], ...listen(p), ...flags(p, DATA[p][0])]);

  let serving: Run[] = [];
  /** The participants keep serving their blocks after a task (the same store: the same peer id and address). */
  const serveAll = async () => {
    serving = (["agg", "h1", "h2", "h3"] as const).map((p) =>
      fok(p, ["store", "serve", ...listen(p), "--store-dir", join(home(p), "store")]),
    );
    running.push(...serving);
    for (const node of serving) await until(() => node.out.some((l) => l.startsWith("libp2p /ip4/")));
  };
  const stopServing = async () => {
    for (const node of serving) process.kill(-node.proc.pid!, "SIGKILL");
    await Promise.all(serving.map((node) => node.done));
    serving = [];
  };

  it("runs the README walkthrough across machines: 3 rounds, peers from the chain, verify passes", async function () {
    const [, admin, ...rest] = sections;
    const verifier = rest.pop()!;
    const adminRun = runSection(admin!, join(dir, "admin"));
    running.push(adminRun);
    expect(await adminRun.done, adminRun.err.join("\n")).to.equal(0);
    // the admin hands every party its deployment file
    for (const p of ["agg", "h1", "h2", "h3", "ver"]) {
      await mkdir(home(p), { recursive: true });
      await copyFile(join(home("admin"), "deployment.json"), join(home(p), "deployment.json"));
    }
    // the aggregator and the hospitals: the task, then serving what each holds
    const parties = rest.map((x) => runSection(x, join(dir, x.party)));
    running.push(...parties);
    const [aggregator, ...hospitals] = parties as [Run, Run, Run, Run];
    const finished = () =>
      aggregator.err.includes("aggregator: task 1 done, 3 rounds finalized by this run") &&
      hospitals.every((h) => h.err.includes("task 1 completed"));
    const failed = () => parties.some((r) => r.err.some((l) => l.startsWith("fok: ")) || r.proc.exitCode !== null);
    await until(() => finished() || failed(), 480_000);
    expect(failed(), parties.map((r) => r.err.join("\n")).join("\n----\n")).to.equal(false);
    await until(() => parties.every((r) => r.out.some((l) => l.startsWith("libp2p /ip4/"))));
    serving = parties;
    // each hospital and the aggregator found each other's node through the chain (nobody passed --peer): one of
    // the two dialed, whichever refreshed first
    const aggregatorNode = `connected to ${ADDRESSES[1]}'s node at /ip4/${ipOf("agg")}/tcp/4001/p2p/`;
    const found = hospitals.map(
      (h, i) =>
        h.err.some((l) => l.startsWith(aggregatorNode)) ||
        aggregator.err.some((l) => l.startsWith(`connected to ${ADDRESSES[i + 2]}'s node at /ip4/${net}.`)),
    );
    expect(found).to.deep.equal([true, true, true]);
    // the verifier, in a fresh namespace with an empty store and no key, fetches every block from the participants
    const verified = runSection(verifier, join(dir, "ver"));
    running.push(verified);
    const code = await verified.done;
    const failures = verified.out.filter((l) => l.startsWith("FAIL"));
    expect([code, failures], [...verified.err, ...verified.out.slice(-5)].join("\n")).to.deep.equal([0, []]);
    expect(verified.out.at(-1)).to.match(/^VERIFIED: task 1, \d+ checks passed$/);
    const reached = verified.err.filter((l) => l.startsWith("connected to ")).map((l) => l.split("'s node")[0]);
    expect(reached.sort()).to.deep.equal([1, 2, 3, 4].map((k) => `connected to ${ADDRESSES[k]}`).sort());
    expect(
      verified.out.filter((l) => l.startsWith("PASS  round 3 identity") && l.includes("update digest")),
    ).to.have.length(3);
  });

  it("survives the chain cut, the aggregator killed, a hospital cut for a round, a partition", async function () {
    const reader = new FederationLedger(
      JSON.parse(await readFile(join(home("admin"), "deployment.json"), "utf8")),
      new JsonRpcProvider(rpc(), undefined, { staticNetwork: true, cacheTimeout: -1 }),
    );
    await stopServing(); // their stores are the ones the task's processes open now
    // task 2: 5 rounds of 90 s (room for a client back from a cut: its retries back off to 10 s, a fetch that times
    // out after 30 s), at least 2 of the 3 hospitals; hospital 3 trains longer (its cut must come first)
    const create = ["task", "create", "--aggregator", ADDRESSES[1]!, "--rounds", "5", "--min-updates", "2"];
    await fokOk("agg", [...create, "--duration", "90", ...flags("admin", 0)]);
    const startAggregator = () =>
      fok("agg", ["aggregator", "run", "--task", "2", "--expected", "3", ...listen("agg"), ...flags("agg", 1)]);
    let aggregator = startAggregator();
    const hospitals = (["h1", "h2"] as const).map((p) => hospital(p, 2));
    const h3 = fok(
      "h3",
      ["client", "run", ...train(2), "--steps", "12", "--wordnet-category", "symptom"].concat(
        listen("h3"),
        flags("h3", 4),
      ),
    );
    running.push(aggregator, ...hospitals, h3);
    const round = async (r: number) => reader.readRound(2, r);
    // 1. once every process is up, the chain's endpoint goes away for 8 s during round 1 and comes back: nothing
    // exits (a command that cannot reach the chain when it starts says so in one line and exits, by design)
    await untilAsync(async () => (await round(1)) !== null);
    await until(() => [...hospitals, h3].every((h) => h.err.some((l) => l.startsWith("client: identity"))), 120_000);
    linkOf("chain", "down");
    await new Promise((r) => setTimeout(r, 8_000));
    linkOf("chain", "up");
    // 2. the aggregator is killed once round 2 has a submission, and restarted on the same store
    await untilAsync(async () => ((await round(2))?.submissions.length ?? 0) >= 1);
    process.kill(-aggregator.proc.pid!, "SIGKILL");
    await aggregator.done;
    aggregator = startAggregator();
    running.push(aggregator);
    // 3. hospital 3 is cut off for all of round 3 (from the moment it opens); it rejoins for round 4
    await untilAsync(async () => (await round(3)) !== null);
    linkOf("h3", "down");
    await untilAsync(async () => Boolean((await round(3))?.finalized), 120_000).catch((e: Error) => {
      const tail = (r: Run) =>
        r.err
          .filter((l) => !l.startsWith("  step"))
          .slice(-12)
          .join("\n");
      throw new Error(`${e.message}\n${[aggregator, ...hospitals, h3].map(tail).join("\n----\n")}`);
    });
    linkOf("h3", "up");
    // 4. once hospital 3 trains round 5, it and the aggregator cannot reach each other (both still reach the chain):
    // it submits, the aggregator cannot fetch the update, declares it unavailable on-chain and finalizes without it;
    // the partition heals after the round
    const training5 = (l: string) => l.startsWith("round 5: training from");
    await until(() => h3.err.some(training5), 240_000);
    partition("h3", "agg", "on");
    await untilAsync(async () => Boolean((await round(5))?.finalized), 240_000);
    partition("h3", "agg", "off");
    const codes = await Promise.all([aggregator, ...hospitals, h3].map((r) => r.done));
    expect(codes, [aggregator, ...hospitals, h3].map((r) => r.err.join("\n")).join("\n----\n")).to.deep.equal([
      0, 0, 0, 0,
    ]);
    const history = await reader.readTaskHistory(2);
    const finalizations = await Promise.all([1, 2, 3, 4, 5].map((r) => reader.finalizations(2, r)));
    expect(finalizations.map((f) => f.length)).to.deep.equal([1, 1, 1, 1, 1]); // each round finalized exactly once
    expect(history.rounds.map((r) => r.finalized?.contributors)).to.deep.equal([
      [1, 2, 3],
      [1, 2, 3],
      [1, 2],
      [1, 2, 3],
      [1, 2],
    ]);
    // nothing submitted twice, nothing lost: each identity once per round (hospital 3 not in its cut round 3)
    const submitters = history.rounds.map((r) => r.submissions.map((x) => x.identity).sort());
    expect(submitters).to.deep.equal([
      [1, 2, 3],
      [1, 2, 3],
      [1, 2],
      [1, 2, 3],
      [1, 2, 3],
    ]);
    expect(history.rounds.map((r) => r.unavailable.map((d) => d.identities))).to.deep.equal([[], [], [], [], [[3]]]);
    expect(aggregator.err).to.include("round 5: declared on-chain that the updates of [3] were unavailable");
    // hospital 3's client says what became of its updates: in round 4's global adapter, declared unavailable in 5
    const outcome = (r: number) => h3.err.find((l) => l.startsWith(`round ${r}: aggregated with weight `)) ?? "";
    expect(outcome(4)).to.match(/^round 4: aggregated with weight \d+\.\d\d%$/);
    const tx = history.rounds[4]!.unavailable[0]!.transactionHash;
    expect(h3.err).to.include(
      `round 5: the aggregator declared this update unavailable and left it out (tx ${tx}); it is pinned here, ` +
        "for anyone who disputes that",
    );
    const all = [aggregator, ...hospitals, h3].flatMap((r) => r.err);
    expect(all.some((l) => l.startsWith("chain unreachable"))).to.equal(true);
    await serveAll();
    const verified = fok("ver", ["verify", "--task", "2", ...listen("ver"), ...flags("ver")]);
    running.push(verified);
    expect(await verified.done, verified.out.filter((l) => l.startsWith("FAIL")).join("\n")).to.equal(0);
    // the partitioned update reaches the verifier now: checked like any other, the aggregator's claim a note
    expect(verified.out.filter((l) => l.startsWith("NOTE"))).to.deep.equal([
      `NOTE  round 5 identity 3  availability: the aggregator declared this update unavailable (block ${
        history.rounds[4]!.unavailable[0]!.blockNumber
      }) and left it out; whether it was, verify cannot check (readable now)`,
    ]);
    expect(verified.out.some((l) => l.startsWith("PASS  round 5 identity 3  update digest"))).to.equal(true);
  });
});
