/**
 * Every `fok` command run as a user runs it: against a `hardhat node` on 127.0.0.1 started here, with the
 * committed base model, a store folder and a deployment file of its own. Each command runs in-process through
 * `runCli` with its output captured; the process entry point (node/cli/fok.ts) is run once as a child process.
 */
import { expect } from "chai";
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { HELP, runCli } from "../../node/cli/main.js";
import type { CliIO } from "../../node/cli/options.js";
import { sha256Hex } from "../../node/digest.js";
import { FederationLedger, identityMetadata } from "../../node/chain/index.js";
import { cidOf } from "../../node/store/index.js";
import { readBaseBytes } from "../../node/model/checkpoint.js";
import { buildTokenizerJson } from "../../node/model/tokenizer.js";
import { randomWeights, tinyLlamaConfig, writeHubCheckpoint } from "../fixtures/tiny-llama.js";
import { JsonRpcProvider, Wallet } from "ethers";

// Hardhat's public development accounts (the README's consortium walkthrough uses the same)
const KEYS = [
  "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80", // admin / registrar / task admin
  "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d", // aggregator
  "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a", // hospital A
  "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6", // hospital B
  "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a", // relayer
];
const ADDRESSES = [
  "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
  "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
  "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
  "0x90F79bf6EB2c4f870365E785982E1f101E93b906",
];

/** A captured run: stdout lines, stderr lines, exit code. */
interface Run {
  code: number;
  out: string[];
  err: string[];
  bytes: Uint8Array[];
}

function captured(stop: Promise<void> = new Promise(() => {})): CliIO & { run: Omit<Run, "code"> } {
  const run = { out: [] as string[], err: [] as string[], bytes: [] as Uint8Array[] };
  return {
    run,
    out: (l) => run.out.push(...l.split("\n")),
    outBytes: (b) => run.bytes.push(b),
    log: (l) => run.err.push(l),
    stopped: stop,
    exitCode: 0,
    cleanup: [],
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  await new Promise((r) => server.close(r));
  return port;
}

describe("node/cli (every fok command against a hardhat node)", function () {
  this.timeout(600_000);
  let node: ChildProcess;
  let rpc: string;
  let dir: string;
  /** Flags every chain command takes here. */
  let chain: (key: number) => string[];

  async function fok(args: string[], stop?: Promise<void>): Promise<Run> {
    const io = captured(stop);
    const code = await runCli(args, io);
    return { code, ...io.run };
  }

  const threadsWas = process.env.FOK_THREADS;
  before(async function () {
    // clients train on one thread unless a test says otherwise (auto would start a worker per core in each)
    process.env.FOK_THREADS = "1";
    dir = await mkdtemp(join(tmpdir(), "fok-cli-"));
    const port = await freePort();
    rpc = `http://127.0.0.1:${port}`;
    node = spawn("npx", ["hardhat", "node", "--hostname", "127.0.0.1", "--port", String(port)], {
      env: { ...process.env, CI: "true", HARDHAT_DISABLE_TELEMETRY: "true" },
      stdio: ["ignore", "pipe", "pipe"],
      detached: true, // its own process group: npx and the node it starts stop together
    });
    await new Promise<void>((resolve, reject) => {
      let seen = "";
      node.stdout!.on("data", (d) => {
        seen += d;
        if (seen.includes("Started HTTP")) resolve();
      });
      node.once("exit", (c) => reject(new Error(`hardhat node exited ${c}: ${seen}`)));
    });
    const store = join(dir, "store");
    const deployment = join(dir, "deployment.json");
    chain = (key) => ["--rpc", rpc, "--private-key", KEYS[key]!, "--deployment", deployment, "--store-dir", store];
  });

  after(async function () {
    if (threadsWas === undefined) delete process.env.FOK_THREADS;
    else process.env.FOK_THREADS = threadsWas;
    if (node?.pid) process.kill(-node.pid);
    await rm(dir, { recursive: true, force: true });
  });

  it("help prints the usage; an unknown command is one line on stderr and exit 1", async function () {
    expect(await fok(["help"])).to.deep.equal({ code: 0, out: HELP.split("\n"), err: [], bytes: [] });
    const bad = await fok(["frobnicate"]);
    expect([bad.code, bad.err]).to.deep.equal([
      1,
      ["fok: InvalidArgumentError: unknown command frobnicate; see `fok help`"],
    ]);
    const flag = await fok(["inspect", "--no-such-flag"]);
    expect(flag.code).to.equal(1);
    expect(flag.err).to.have.length(1);
    expect(flag.err[0]).to.match(/^fok: TypeError: Unknown option '--no-such-flag'/);
  });

  it("chain deploy writes the deployment file", async function () {
    const r = await fok(["chain", "deploy", ...chain(0)]);
    expect(r.code).to.equal(0);
    const d = JSON.parse(await readFile(join(dir, "deployment.json"), "utf8"));
    expect(d.chainId).to.equal(31337);
    expect(r.out).to.deep.equal([
      `LLMIdentity ${d.identity}`,
      `Federation  ${d.federation}`,
      `chain 31337, block ${d.deployBlock}; written to ${join(dir, "deployment.json")}`,
    ]);
  });

  it("identity register, list, suspend and reinstate", async function () {
    for (const [i, name] of [
      [2, "St. Mary"],
      [3, "General"],
    ] as const) {
      const r = await fok(["identity", "register", "--address", ADDRESSES[i]!, "--institution", name, ...chain(0)]);
      // the institution's name is pinned as the identity's metadata document
      const metadata = (await cidOf(identityMetadata(name))).toString();
      expect(r.out).to.deep.equal([`identity ${i - 1} registered to ${ADDRESSES[i]} (metadata ${metadata})`]);
    }
    expect((await fok(["identity", "suspend", "--id", "2", ...chain(0)])).out).to.deep.equal(["identity 2: suspended"]);
    const list = await fok(["identity", "list", ...chain(0)]);
    expect(list.out.map((l) => l.split(/\s+/).slice(1, 4))).to.deep.equal([
      ["1", "Active", ADDRESSES[2]],
      ["2", "Suspended", ADDRESSES[3]],
    ]);
    expect((await fok(["identity", "reinstate", "--id", "2", ...chain(0)])).out).to.deep.equal([
      "identity 2: reinstated",
    ]);
    const json = JSON.parse((await fok(["identity", "list", "--json", ...chain(0)])).out.join("\n"));
    expect(json.map((i: { tokenId: number; status: number }) => [i.tokenId, i.status])).to.deep.equal([
      [1, 1],
      [2, 1],
    ]);
  });

  it("task create pins the base model and creates task 1", async function () {
    const r = await fok(["task", "create", "--aggregator", ADDRESSES[1]!, "--rounds", "1", ...chain(0)]);
    const cid = r.out[0]!.match(/^task 1 created \(base model (\S+)\)$/)?.[1];
    expect(cid).to.be.a("string");
    const stored = await fok(["store", "get", cid!, "--store-dir", join(dir, "store")]);
    expect(sha256Hex(Buffer.concat(stored.bytes))).to.equal(sha256Hex(await readFile("models/base/model.safetensors")));
  });

  it("aggregator run and two client runs (one relayed) complete the task", async function () {
    const common = ["--task", "1", "--steps", "2", "--batch-size", "2"];
    const drug = ["--wordnet-category", "drug", "--relayer-key", KEYS[4]!];
    const cores = availableParallelism();
    const [agg, a, b] = await Promise.all([
      fok(["aggregator", "run", "--task", "1", "--expected", "2", ...chain(1)]),
      fok(["client", "run", ...common, "--threads", "2", "--wordnet-category", "disease", ...chain(2)]),
      fok([
        "client",
        "run",
        ...common,
        "--threads",
        "auto",
        "--reserve-cores",
        String(cores - 1),
        ...drug,
        ...chain(3),
      ]),
    ]);
    expect([agg.code, a.code, b.code]).to.deep.equal([0, 0, 0]);
    expect(a.err).to.include("client: training on 2 threads (data-parallel: this one and 1 worker)");
    // --threads auto (the default): this machine's cores less those reserved
    expect(b.err).to.include(`client: --threads auto: 1 thread (${cores} cores, ${cores - 1} reserved)`);
    expect(agg.err.at(-1)).to.equal("aggregator: task 1 done, 1 rounds finalized by this run");
    expect(a.err).to.include("task 1 completed");
    expect(b.err.some((l) => /^round 1: submitted bafk/.test(l))).to.equal(true);
  });

  it("inspect shows the identities and the task's rounds, as text, JSON and for one identity", async function () {
    const r = await fok(["inspect", ...chain(0)]);
    expect(r.out.slice(0, 3)).to.deep.equal([
      "identities:",
      `  1  Active  ${ADDRESSES[2]}`,
      `  2  Active  ${ADDRESSES[3]}`,
    ]);
    expect(r.out[3]).to.match(/^task 1: strategy fedavg, 1\/1 rounds, base baf[a-z2-7]+, completed$/);
    expect(r.out[4]).to.equal(
      "  at least 2 contributors, at most 100000 examples per claim, update norm at most 20, rounds of 3600 s",
    );
    expect(r.out.filter((l) => l.includes("relayed by")).length).to.equal(1);
    expect(r.out.at(-1)).to.match(/^ {4}→ global bafk\S+ by fedavg from \[1: \d+\.\d\d%, 2: \d+\.\d\d%\]$/);
    const json = JSON.parse((await fok(["inspect", "--json", ...chain(0)])).out.join("\n"));
    expect(json.tasks[0].rounds[0].finalized.contributors).to.deep.equal([1, 2]);
    const one = await fok(["inspect", "--id", "2", ...chain(0)]);
    expect(one.out[0]).to.equal(
      `identity 2: Active, signer ${ADDRESSES[3]}, institution ${json.identities[1].institutionId}`,
    );
    expect(one.out.at(-1)).to.match(/^ {2}task 1 round 1: bafk\S+ \(\d+ examples\) → \d+\.\d\d% of bafk\S+$/);
  });

  it("refuses 61 wrong invocations, each with one line on stderr naming the problem and exit 1", async function () {
    const truncated = join(dir, "truncated-base");
    await mkdir(truncated, { recursive: true });
    const baseFile = await readFile("models/base/model.safetensors");
    await writeFile(join(truncated, "model.safetensors"), baseFile.subarray(0, 999));
    const headerLength = Number(baseFile.readBigUInt64LE(0)); // the real header, cut off by the truncation
    const s = ["--store-dir", join(dir, "store4")];
    const closed = `http://127.0.0.1:${await freePort()}`; // nothing listens there
    const agg = ["--aggregator", ADDRESSES[1]!];
    const cases: [string[], string][] = [
      [["frobnicate"], "InvalidArgumentError: unknown command frobnicate"],
      [["chain"], "InvalidArgumentError: unknown: fok chain"],
      [["chain", "launch", ...chain(0)], "InvalidArgumentError: unknown: fok chain launch"],
      [["identity", "destroy", ...chain(0)], "InvalidArgumentError: unknown: fok identity destroy"],
      [["identity", "register", ...chain(0)], "InvalidArgumentError: --address is required"],
      [
        ["identity", "register", "--address", "hospital-7", "--institution", "X", ...chain(0)],
        "--address must be a 0x-prefixed 20-byte address, got hospital-7",
      ],
      [
        ["identity", "register", "--address", ADDRESSES[3]!, ...chain(0)],
        "InvalidArgumentError: --institution is required",
      ],
      [["identity", "suspend", "--id", "abc", ...chain(0)], "--id must be a non-negative integer, got abc"],
      [["identity", "suspend", "--id", "0", ...chain(0)], "--id must be 1 or more, got 0"],
      [
        ["identity", "suspend", "--id", "99", ...chain(0)],
        "ChainRevertError: suspend reverted: LLMIdentityInvalidStatus(99, 0)",
      ],
      [
        ["identity", "suspend", "--id", "1", ...chain(3)],
        "ChainRevertError: suspend reverted: AccessControlUnauthorizedAccount",
      ],
      [
        ["identity", "list", ...chain(0), "--deployment", join(dir, "none.json")],
        "InvalidArgumentError: no deployment at",
      ],
      [
        ["identity", "list", ...chain(0), "--rpc", closed],
        `RpcUnavailableError: cannot reach the chain at ${closed}: ECONNREFUSED`,
      ],
      [
        ["identity", "list", ...chain(0), "--rpc", "not-a-url"],
        "RpcUnavailableError: cannot reach the chain at not-a-url",
      ],
      [["task", "frob", ...chain(0)], "InvalidArgumentError: unknown: fok task frob"],
      [["task", "create", ...chain(0)], "InvalidArgumentError: --aggregator is required"],
      [
        ["task", "create", "--aggregator", "bob", ...chain(0)],
        "--aggregator must be a 0x-prefixed 20-byte address, got bob",
      ],
      [
        ["task", "create", ...agg, "--base", join(dir, "nowhere"), ...chain(0)],
        `ENOENT: cannot open ${join(dir, "nowhere", "model.safetensors")}`,
      ],
      [
        ["task", "create", ...agg, "--base", truncated, ...chain(0)],
        `SafetensorsFormatError: header length ${headerLength} runs past the end of a 999-byte file`,
      ],
      [
        ["task", "create", ...agg, "--rounds", "0", ...chain(0)],
        "ChainRevertError: createTask reverted: FederationInvalidTaskConfig(2, 3600, 0, 100000, 20000000)",
      ],
      [
        ["task", "create", ...agg, "--lora-r", "0", ...chain(0)],
        "InvalidArgumentError: LoRA flags: LoRA r must be a positive integer, got 0",
      ],
      [
        ["task", "create", ...agg, "--lora-alpha", "x", ...chain(0)],
        "InvalidArgumentError: LoRA flags: LoRA alpha must be positive, got NaN",
      ],
      [
        ["task", "create", ...agg, "--strategy", "x".repeat(40), ...chain(0)],
        "InvalidArgumentError: strategy name too long",
      ],
      [["client", "run", ...chain(2)], "InvalidArgumentError: --task is required"],
      [["client", "run", "--task", "1", ...chain(2)], "InvalidArgumentError: give the client's data"],
      [
        ["client", "run", "--task", "1", "--data", join(dir, "none.jsonl"), ...chain(2)],
        `ENOENT: cannot open ${join(dir, "none.jsonl")}`,
      ],
      [
        ["client", "run", "--task", "1", "--text-dir", join(dir, "no-dir"), ...chain(2)],
        `ENOENT: cannot scandir ${join(dir, "no-dir")}`,
      ],
      [
        ["client", "run", "--task", "1", "--lora-r", "4", "--wordnet-category", "drug", ...chain(2)],
        "does not match task 1's hash",
      ],
      [
        ["client", "run", "--task", "7", "--wordnet-category", "drug", ...chain(2)],
        "ChainDataError: task 7: expected one TaskCreated event, found 0",
      ],
      [["client", "walk", ...chain(2)], "InvalidArgumentError: unknown: fok client walk"],
      [
        ["client", "run", "--task", "1", "--threads", "0", "--wordnet-category", "drug", ...chain(2)],
        "InvalidArgumentError: --threads must be a positive integer or auto, got 0",
      ],
      [
        ["client", "run", "--task", "1", "--threads", "two", "--wordnet-category", "drug", ...chain(2)],
        "InvalidArgumentError: --threads must be a positive integer or auto, got two",
      ],
      [
        ["client", "run", "--task", "1", "--reserve-cores", "1.5", "--wordnet-category", "drug", ...chain(2)],
        "InvalidArgumentError: --reserve-cores must be a non-negative integer, got 1.5",
      ],
      [["aggregator", "run", ...chain(1)], "InvalidArgumentError: --task is required"],
      [["aggregator", "go", ...chain(1)], "InvalidArgumentError: unknown: fok aggregator go"],
      [["inspect", "--task", "abc", ...chain(0)], "--task must be a non-negative integer, got abc"],
      [["inspect", "--task", "9", ...chain(0)], "InvalidArgumentError: no task 9"],
      [["inspect", "--id", "9", ...chain(0)], "InvalidArgumentError: no identity 9"],
      [["verify", ...chain(0)], "InvalidArgumentError: --task is required"],
      [["verify", "--task", "9", ...chain(0)], "InvalidArgumentError: no task 9"],
      [["dashboard", "--port", "http", ...chain(0)], "--port must be a non-negative integer, got http"],
      [["store", "add", join(dir, "none.bin"), ...s], `ENOENT: cannot open ${join(dir, "none.bin")}`],
      [["store", "get", ...s], "InvalidArgumentError: give a CID"],
      [["store", "import", join(dir, "none.car"), ...s], `ENOENT: cannot open ${join(dir, "none.car")}`],
      [["store", "frob", ...s], "InvalidArgumentError: unknown: fok store frob"],
      [["demo", "--clients", "many"], "--clients must be a non-negative integer, got many"],
      [
        ["task", "create", ...agg, "--max-update-norm=-1", ...chain(0)],
        "InvalidArgumentError: --max-update-norm must be a positive number, got -1",
      ],
      [
        ["task", "create", ...agg, "--min-updates", "5000", ...chain(0)],
        "ChainRevertError: createTask reverted: FederationInvalidTaskConfig(5000, 3600, 3, 100000, 20000000)",
      ],
      [
        ["task", "accept", "--task", "1", ...chain(3)],
        `ChainRevertError: acceptAggregator reverted: FederationNotPendingAggregator(1, "${ADDRESSES[3]}")`,
      ],
      [
        ["identity", "rotate", "--id", "1", "--address", ADDRESSES[3]!, "--consent", "0x1234", ...chain(0)],
        "InvalidArgumentError: --consent-deadline is required",
      ],
      [
        ["identity", "cancel-rotation", "--id", "1", ...chain(0)],
        "ChainRevertError: cancelKeyRotation reverted: LLMIdentityNoPendingRotation(1)",
      ],
      [["chain", "deploy", "--registrar", "bob", ...chain(0)], "--registrar must be a 0x-prefixed 20-byte address"],
      [["task", "create", ...agg, "--privacy", "hidden", ...chain(0)], "--privacy must be one of open, secure"],
      [["task", "create", ...agg, "--threshold", "2", ...chain(0)], "--threshold applies to --privacy secure only"],
      [
        ["task", "create", ...agg, "--privacy", "secure", "--strategy", "krum", ...chain(0)],
        "SecureConfigError: strategy krum needs each update on its own, which secure mode never reveals",
      ],
      [
        ["task", "create", ...agg, "--privacy", "secure", "--threshold", "5", ...chain(0)],
        "SecureConfigError: secure threshold 5 must be an integer with 2 <= threshold <= min updates (2) <= 255",
      ],
      [["task", "create", ...agg, "--dp-noise", "1", ...chain(0)], "--dp-noise needs --dp-epsilon"],
      [["task", "create", ...agg, "--dp-epsilon", "0", ...chain(0)], "--dp-epsilon must be a positive number, got 0"],
      [["task", "create", ...agg, "--dp-epsilon", "8", "--dp-delta", "2", ...chain(0)], "--dp-delta must be below 1"],
      [
        ["task", "create", ...agg, "--dp-epsilon", "1", "--dp-noise", "0.5", ...chain(0)],
        "DpConfigError: 3 rounds at noise multiplier 0.5 spend ε 21.44 at δ 0.00001, over the budget of 1: 0 rounds " +
          "fit, or a noise multiplier of at least 7.0068 keeps 3 rounds within it",
      ],
      [
        ["task", "create", ...agg, "--dp-epsilon", "8", "--strategy", "median", ...chain(0)],
        "DpConfigError: strategy median is not an average of clipped updates",
      ],
    ];
    const wrong: string[] = [];
    for (const [args, expected] of cases) {
      const r = await fok(args);
      const ok = r.code === 1 && r.err.length === 1 && r.err[0]!.startsWith("fok: ") && r.err[0]!.includes(expected);
      if (!ok || r.out.length > 0) wrong.push(`${args.slice(0, 3).join(" ")} → ${r.code} ${JSON.stringify(r.err)}`);
    }
    expect(wrong).to.deep.equal([]);
    expect(cases.length).to.equal(61); // as the title says
    // the thread count from the environment is named as such
    process.env.FOK_THREADS = "many";
    const env = await fok(["client", "run", "--task", "1", "--wordnet-category", "drug", ...chain(2)]).finally(
      () => (process.env.FOK_THREADS = "1"),
    );
    expect([env.code, env.err]).to.deep.equal([
      1,
      ["fok: InvalidArgumentError: $FOK_THREADS must be a positive integer or auto, got many"],
    ]);
  });

  it("separates roles, hands the aggregator over, rotates keys with consent, closes a stuck round", async function () {
    const d2 = join(dir, "deployment-roles.json");
    const flags = (key: number) => [...chain(key).slice(0, 4), "--deployment", d2, "--store-dir", join(dir, "store")];
    const ok = async (args: string[]) => {
      const r = await fok(args);
      expect([r.code, r.err]).to.deep.equal([0, []]);
      return r.out;
    };
    // the deployer hands registrar and task admin to their own accounts and keeps neither
    await ok([
      "chain",
      "deploy",
      ...flags(0),
      "--out",
      d2,
      "--registrar",
      ADDRESSES[3]!,
      "--task-admin",
      ADDRESSES[1]!,
    ]);
    const reader = new FederationLedger(JSON.parse(await readFile(d2, "utf8")), new JsonRpcProvider(rpc));
    expect(await reader.roles(ADDRESSES[0]!)).to.deep.include({ registrar: false, taskAdmin: false, admin: true });
    expect((await reader.roles(ADDRESSES[3]!)).registrar).to.equal(true);
    expect((await reader.roles(ADDRESSES[1]!)).taskAdmin).to.equal(true);
    await ok(["identity", "register", "--address", ADDRESSES[2]!, "--institution", "A", ...flags(3)]);
    // the hospital's key consents to its new key; the registrar runs the command the consent printed
    const relayerAddress = new Wallet(KEYS[4]!).address;
    const consent = await ok(["identity", "consent", "--id", "1", "--address", relayerAddress, ...flags(2)]);
    const printed = consent[1]!.trim().split(" ").slice(1); // "fok identity rotate --id 1 ..."
    expect(await ok([...printed, ...flags(3)])).to.deep.equal([`identity 1: key rotated to ${relayerAddress}`]);
    // without consent the registrar can only propose; the identity's (new) key cancels it
    const proposed = await ok(["identity", "rotate", "--id", "1", "--address", ADDRESSES[0]!, ...flags(3)]);
    expect(proposed[0]).to.include("proposed without consent");
    expect(await ok(["identity", "cancel-rotation", "--id", "1", ...flags(4)])).to.deep.equal([
      "identity 1: pending key rotation cancelled",
    ]);
    expect((await reader.identityRecord(1)).signer).to.equal(relayerAddress);
    // the task admin hands the task's aggregator role to another account, which accepts
    const create = ["task", "create", "--aggregator", ADDRESSES[1]!, "--min-updates", "1", "--duration", "60"];
    await ok([...create, "--rounds", "2", ...flags(1)]);
    await ok(["task", "propose-aggregator", "--task", "1", "--aggregator", ADDRESSES[0]!, ...flags(1)]);
    expect(await ok(["task", "accept", "--task", "1", ...flags(0)])).to.deep.equal([
      `task 1: ${ADDRESSES[0]} is now its aggregator`,
    ]);
    // a round nobody submitted to is closed after its deadline, and the next opens from the same adapter
    const agg = reader.connect(new Wallet(KEYS[0]!, new JsonRpcProvider(rpc)));
    await agg.openFirstRound(1, "bafkreiinit", sha256Hex(new Uint8Array([1])));
    const tooEarly = await fok(["task", "close", "--task", "1", ...flags(0)]);
    expect(tooEarly.err[0]).to.include("FederationTooEarlyToClose(1, 1,");
    await new JsonRpcProvider(rpc).send("evm_increaseTime", [61]);
    expect(await ok(["task", "close", "--task", "1", ...flags(0)])).to.deep.equal([
      "task 1: round 1 closed without a global adapter",
    ]);
    const round2 = await reader.readRound(1, 2);
    expect([round2!.startCid, (await reader.readRound(1, 1))!.closed!.closedBy]).to.deep.equal([
      "bafkreiinit",
      ADDRESSES[0],
    ]);
    // a Llama-family Hub folder is a base: the task commits to its canonical bundle
    const llama = join(dir, "tiny-llama");
    const llamaConfig = tinyLlamaConfig({ vocab_size: 260 });
    await writeHubCheckpoint(llama, llamaConfig, randomWeights(llamaConfig), { dtype: "BF16", shards: 2 });
    await writeFile(join(llama, "tokenizer.json"), buildTokenizerJson([]));
    await writeFile(join(llama, "generation_config.json"), JSON.stringify({ eos_token_id: 256 }));
    const onLlama = ["task", "create", "--aggregator", ADDRESSES[1]!, "--base", llama, "--lora-targets", "q,k,v,o"];
    const created = await ok([...onLlama, ...flags(1)]);
    expect(created[0]).to.match(/^task 2 created \(base model baf[a-z2-7]+\)$/);
    // a DP task: σ chosen for the budget over its rounds, the plan printed, the settings on-chain and in inspect
    const dpTask = await ok([...create, "--rounds", "4", "--dp-epsilon", "8", "--max-update-norm", "0.5", ...flags(1)]);
    expect(dpTask[1]).to.equal(
      "  client-level DP (central noise, added by the aggregator): σ 1.275391 × clip 0.5, δ 0.00001; " +
        "ε after each round: 3.583, 5.327, 6.747, 8.000 (budget 8)",
    );
    expect(await reader.dp(3)).to.deep.equal({
      noiseMultiplier: 1.275391,
      delta: 1e-5,
      epsilonMax: 8,
      placement: "central",
      spent: 0,
    });
    const inspected = await ok(["inspect", "--task", "3", ...flags(0)]);
    expect(inspected.slice(4, 6)).to.deep.equal([
      "  privacy: open (updates published in the clear)",
      "  client-level DP (central noise, added by the aggregator): σ 1.275391 × clip 0.5, δ 0.00001; " +
        "ε spent 0.000 of 8 after 0 finalized rounds",
    ]);
    expect((await reader.taskInfo(2)).baseModelSha256).to.equal(sha256Hex(await readBaseBytes(llama)));
    // another model_type is named, in one line
    await writeFile(join(llama, "config.json"), JSON.stringify({ ...llamaConfig, model_type: "gemma" }));
    const gemma = await fok([...onLlama, ...flags(1)]);
    expect([gemma.code, gemma.err]).to.deep.equal([
      1,
      ['fok: UnsupportedModelError: config.json model_type = "gemma": supported: gpt2, llama, qwen2, mistral'],
    ]);
    const handover = (await reader.readTaskHistory(1)).aggregatorChanges[0]!;
    const shown = await fok(["inspect", "--task", "1", ...flags(0)]);
    expect(shown.out).to.include.members([
      `  aggregator ${ADDRESSES[1]} → ${ADDRESSES[0]} (block ${handover.blockNumber})`,
      `    → closed without a global adapter by ${ADDRESSES[0]}`,
    ]);
  });

  it("refuses a chain whose EVM cannot run the contracts (Ganache) in one line, deploying nothing", async function () {
    const { default: ganache } = await import("ganache");
    const server = ganache.server({
      logging: { quiet: true },
      wallet: { deterministic: true },
      chain: { chainId: 1337 },
    });
    const port = await freePort();
    await server.listen(port, "127.0.0.1");
    try {
      const url = `http://127.0.0.1:${port}`;
      // ganache's deterministic first account
      const key = "0x4f3edf983ac636a65a842ce7c78d9aa706d3b113bce9c46f30d7d21715b23b1d";
      const flags = ["--rpc", url, "--private-key", key, "--deployment", join(dir, "ganache.json")];
      const line =
        `fok: ChainCompatibilityError: the chain at ${url} (chain id 1337) cannot run the contracts, which need ` +
        "an EVM of Cancun or later (MCOPY, EIP-5656; PUSH0, EIP-3855): a probe of MCOPY and PUSH0 failed (VM " +
        "Exception while processing transaction: invalid opcode); use a node on the Cancun fork or later";
      const deploy = await fok(["chain", "deploy", ...flags]);
      expect([deploy.code, deploy.out, deploy.err]).to.deep.equal([1, [], [line]]);
      expect(await new JsonRpcProvider(url).getTransactionCount(new Wallet(key).address)).to.equal(0);
      expect(existsSync(join(dir, "ganache.json"))).to.equal(false);
      // every command that attaches checks it too
      await writeFile(
        join(dir, "ganache.json"),
        JSON.stringify({ chainId: 1337, identity: ADDRESSES[0], federation: ADDRESSES[1], deployBlock: 0 }),
      );
      const inspect = await fok(["inspect", ...flags]);
      expect([inspect.code, inspect.err]).to.deep.equal([1, [line]]);
    } finally {
      await server.close();
    }
  });

  it("read-only commands need no key: inspect, identity list and verify never read one", async function () {
    const noKey = chain(0).map((x, i, all) => (all[i - 1] === "--private-key" ? "not-a-key" : x));
    expect((await fok(["inspect", ...noKey])).code).to.equal(0);
    expect((await fok(["identity", "list", ...noKey])).code).to.equal(0);
    expect((await fok(["verify", "--task", "1", ...noKey])).code).to.equal(0);
    // a command that writes does read it, and says what is wrong with it in one line
    const write = await fok(["identity", "suspend", "--id", "1", ...noKey]);
    expect([write.code, write.err.length]).to.deep.equal([1, 1]);
  });

  it("verify passes from the chain and the store alone, and fails (exit 1) when the store lies", async function () {
    const r = await fok(["verify", "--task", "1", ...chain(0)]);
    expect(r.code).to.equal(0);
    expect(r.out.filter((l) => l.startsWith("FAIL"))).to.deep.equal([]);
    expect(r.out.at(-1)).to.match(/^VERIFIED: task 1, \d+ checks passed$/);
    const json = JSON.parse((await fok(["verify", "--task", "1", "--json", ...chain(0)])).out.join("\n"));
    expect(json.ok).to.equal(true);
    // an empty store holds none of the adapters: every digest check fails and the exit code says so
    const empty = await fok(["verify", "--task", "1", ...chain(0), "--store-dir", join(dir, "empty-store")]);
    expect(empty.code).to.equal(1);
    expect(empty.out.at(-1)).to.match(/^NOT VERIFIED: task 1, \d+ of \d+ checks failed$/);
  });

  it("dashboard serves the page and the state until stopped", async function () {
    let stop!: () => void;
    const stopped = new Promise<void>((r) => (stop = r));
    const io = captured(stopped);
    const running = runCli(["dashboard", "--port", "0", ...chain(0)], io);
    while (io.run.out.length === 0) await new Promise((r) => setTimeout(r, 50));
    const url = io.run.out[0]!.match(/^dashboard (http:\/\/127\.0\.0\.1:\d+) \(Ctrl-C to stop\)$/)![1]!;
    const state = (await (await fetch(`${url}/api/state`)).json()) as { tasks: { task: number; completed: boolean }[] };
    expect(state.tasks.map((t: { task: number; completed: boolean }) => [t.task, t.completed])).to.deep.equal([
      [1, true],
    ]);
    stop();
    expect(await running).to.equal(0);
  });

  it("store add, get, export, import and serve", async function () {
    const s = ["--store-dir", join(dir, "store2")];
    const file = join(dir, "blob.bin");
    await writeFile(file, "hello world");
    const added = await fok(["store", "add", file, ...s]);
    expect(added.out).to.deep.equal(["bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"]);
    const cid = added.out[0]!;
    await fok(["store", "get", cid, "--out", join(dir, "got.bin"), ...s]);
    expect(await readFile(join(dir, "got.bin"), "utf8")).to.equal("hello world");
    await fok(["store", "export", cid, "--out", join(dir, "x.car"), ...s]);
    const imported = await fok(["store", "import", join(dir, "x.car"), "--store-dir", join(dir, "store3")]);
    expect(imported.out).to.deep.equal([cid]);
    let stop!: () => void;
    const io = captured(new Promise<void>((r) => (stop = r)));
    const serving = runCli(["store", "serve", "--gateway-port", "0", ...s], io);
    while (io.run.out.length === 0) await new Promise((r) => setTimeout(r, 50));
    const gateway = io.run.out[0]!.match(/^gateway (http:\/\/127\.0\.0\.1:\d+)$/)![1]!;
    expect(await (await fetch(`${gateway}/ipfs/${cid}?format=raw`)).text()).to.equal("hello world");
    stop();
    expect(await serving).to.equal(0);
  });

  it("demo runs a whole federation in one process and reports it as JSON", async function () {
    const r = await fok(["demo", "--clients", "2", "--rounds", "1", "--steps", "2", "--no-workers", "--json"]);
    expect(r.code).to.equal(0);
    const report = JSON.parse(r.out.join("\n"));
    expect(report.rows.map((x: { identity: number }) => x.identity)).to.deep.equal([1, 2]);
    expect(report.history.rounds[0].finalized.contributors).to.deep.equal([1, 2]);
    expect(r.err.some((l) => l.startsWith("[demo] base model 0x"))).to.equal(true);
  });

  it("the fok process entry point runs a command and exits with its code", async function () {
    const run = promisify(execFile);
    const { stdout } = await run("npx", ["tsx", "node/cli/fok.ts", "help"]);
    expect(stdout.trimEnd()).to.equal(HELP);
    const failed = await run("npx", ["tsx", "node/cli/fok.ts", "nope"]).catch((e) => e);
    expect([failed.code, failed.stderr]).to.deep.equal([
      1,
      "fok: InvalidArgumentError: unknown command nope; see `fok help`\n",
    ]);
    expect(existsSync("bin/fok.mjs")).to.equal(true);
  });

  it("keeps a party's store and deployment file under $FOK_HOME when the flags do not name them", async function () {
    const run = promisify(execFile);
    const home = join(dir, "home");
    await writeFile(join(dir, "note.txt"), "a blob kept in $FOK_HOME/store");
    const env = { ...process.env, FOK_HOME: home };
    const added = await run("npx", ["tsx", "node/cli/fok.ts", "store", "add", join(dir, "note.txt")], { env });
    const cid = added.stdout.trim();
    // the same store, named by its folder: the blob is there
    const got = await fok(["store", "get", cid, "--store-dir", join(home, "store")]);
    expect([got.code, Buffer.concat(got.bytes).toString()]).to.deep.equal([0, "a blob kept in $FOK_HOME/store"]);
    const inspected = await run("npx", ["tsx", "node/cli/fok.ts", "inspect", "--rpc", rpc], { env }).catch((e) => e);
    const where = join(home, "deployment.json");
    expect([inspected.code, inspected.stderr]).to.deep.equal([
      1,
      `fok: InvalidArgumentError: no deployment at ${where}; run \`fok chain deploy\` first or pass --deployment\n`,
    ]);
  });

  it("shows strings from the chain with their terminal control characters replaced", async function () {
    const created = await fok(["task", "create", "--aggregator", ADDRESSES[1]!, ...chain(0)]);
    expect(created.out[0]).to.match(/^task 2 created/);
    // the aggregator chooses the start CID string: here one that would clear the screen and retitle the terminal
    const hostile = "\x1b[2J\x1b]0;pwned\x07\x9b31mevil";
    const deployment = JSON.parse(await readFile(join(dir, "deployment.json"), "utf8"));
    const provider = new JsonRpcProvider(rpc);
    const asAggregator = new FederationLedger(deployment, new Wallet(KEYS[1]!, provider));
    await asAggregator.openFirstRound(2, hostile, sha256Hex("start"));
    provider.destroy();
    const r = await fok(["inspect", "--task", "2", ...chain(0)]);
    const control = [...r.out.join("")].filter((c) => c < " " || (c >= "\x7f" && c <= "\x9f"));
    expect(control).to.deep.equal([]);
    expect(r.out).to.include("  round 1 from ?[2J?]0;pwned??31mevil");
  });

  it("on a Llama-family Hub folder: task create, aggregator and client runs with --base, verify", async function () {
    const llama = join(dir, "tiny-llama-task");
    const config = tinyLlamaConfig({ vocab_size: 260 });
    await writeHubCheckpoint(llama, config, randomWeights(config, 8), { dtype: "BF16", shards: 2 });
    await writeFile(join(llama, "tokenizer.json"), buildTokenizerJson([]));
    await writeFile(join(llama, "generation_config.json"), JSON.stringify({ eos_token_id: 256 }));
    const lora = ["--base", llama, "--lora-targets", "q,k,v,o,gate_proj"];
    const created = await fok(["task", "create", "--aggregator", ADDRESSES[1]!, "--rounds", "1", ...lora, ...chain(0)]);
    const task = created.out[0]!.match(/^task (\d+) created/)![1]!;
    const common = ["--task", task, "--steps", "2", "--batch-size", "2", ...lora];
    const [agg, a, b] = await Promise.all([
      fok(["aggregator", "run", "--task", task, "--expected", "2", ...lora, ...chain(1)]),
      // one client data-parallel: its worker parses the Hub folder's bundle from memory shared with this thread
      fok(["client", "run", ...common, "--threads", "2", "--wordnet-category", "disease", ...chain(2)]),
      fok(["client", "run", ...common, "--wordnet-category", "drug", ...chain(3)]),
    ]);
    expect([agg.code, a.code, b.code, agg.err.at(-1)]).to.deep.equal([
      0,
      0,
      0,
      `aggregator: task ${task} done, 1 rounds finalized by this run`,
    ]);
    expect(a.err).to.include("client: training on 2 threads (data-parallel: this one and 1 worker)");
    const verified = await fok(["verify", "--task", task, "--json", ...lora, ...chain(0)]);
    const report = JSON.parse(verified.out.join("\n")) as { ok: boolean; checks: { ok: boolean }[] };
    expect([verified.code, report.ok, report.checks.filter((c) => !c.ok)]).to.deep.equal([0, true, []]);
    expect(report.checks.length).to.be.above(5);
  });
});
