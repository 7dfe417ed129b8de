/**
 * `fok`: the Flow of Knowledge command line. Run `fok help` for the commands. Every command that touches a chain
 * takes --rpc (default $FOK_RPC_URL or http://127.0.0.1:8545) and a key (--private-key, $FOK_PRIVATE_KEY, or
 * --keystore FILE with $FOK_KEYSTORE_PASSWORD); every command that touches the store takes --store-dir and
 * optional --peer / --gateway / --listen.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { JsonRpcProvider, NonceManager, Wallet, type Signer } from "ethers";
import { FokError, InvalidArgumentError } from "../errors.js";
import {
  FederationLedger,
  IdentityStatus,
  bytes32Id,
  decodeStrategy,
  deployContracts,
  type Deployment,
} from "../chain/index.js";
import { createStore, type AdapterStore } from "../store/index.js";
import { serveGateway } from "../store/gateway.js";
import { DEFAULT_DEMO, formatDemoReport, runDemo } from "../federation/demo.js";
import { DEFAULT_LORA_CONFIG, type LoraConfig } from "../model/lora.js";
import { loraConfigHash, modelFingerprint } from "../federation/task-config.js";
import { STRATEGIES } from "../aggregate/index.js";

const HELP = `fok — federated LoRA fine-tuning with on-chain provenance

  fok demo [--clients 4] [--rounds 3] [--steps 40] [--strategy fedavg] [--local-only] [--no-workers] [--json]
      a whole federation in one process: in-process chain, embedded IPFS, aggregator and clients

  fok chain deploy [--out .fok/deployment.json]
  fok identity register --address ADDR --institution NAME [--metadata-cid CID] [--base models/base]
  fok identity list [--json]
  fok identity suspend|reinstate|revoke --id N
  fok task create --aggregator ADDR [--base models/base] [--strategy fedavg] [--rounds 3] [--min-updates 2]
                  [--duration 3600]
  fok client run --task T (--data notes.jsonl | --text-dir DIR | --wordnet-category NAME) [--steps 40]
                 [--relay | --relayer-key HEX]   (relay: the identity signs, another account sends)
  fok aggregator run --task T [--expected N]
  fok inspect [--task T] [--id IDENTITY] [--json]
  fok dashboard [--port 8090] [--host 127.0.0.1]    a local page over the chain and the store
  fok verify --task T [--round R] [--held-out FILE.jsonl] [--json]   re-check a task from the chain and the bytes alone; exit 1 on failure
  fok store add FILE | get CID [--out FILE] | export CID [--out x.car] | import x.car | serve [--gateway-port 8080]

  chain:  --rpc URL  --private-key HEX | --keystore FILE  --deployment FILE (default .fok/deployment.json)
  store:  --store-dir DIR (default .fok/store)  --peer MULTIADDR  --gateway URL  --listen MULTIADDR
  model:  --base DIR  --lora-r 8  --lora-alpha 16  --lora-targets q,v
  strategies: ${STRATEGIES.join(", ")}`;

const COMMON: ParseArgsConfig["options"] = {
  rpc: { type: "string" },
  "private-key": { type: "string" },
  keystore: { type: "string" },
  deployment: { type: "string", default: ".fok/deployment.json" },
  "store-dir": { type: "string", default: ".fok/store" },
  peer: { type: "string", multiple: true },
  gateway: { type: "string", multiple: true },
  listen: { type: "string", multiple: true },
  base: { type: "string", default: "models/base" },
  "lora-r": { type: "string", default: String(DEFAULT_LORA_CONFIG.r) },
  "lora-alpha": { type: "string", default: String(DEFAULT_LORA_CONFIG.alpha) },
  "lora-targets": { type: "string", default: DEFAULT_LORA_CONFIG.targetModules.join(",") },
  json: { type: "boolean", default: false },
  out: { type: "string" },
  id: { type: "string" },
  address: { type: "string" },
  institution: { type: "string" },
  "metadata-cid": { type: "string" },
  task: { type: "string" },
  aggregator: { type: "string" },
  strategy: { type: "string", default: "fedavg" },
  rounds: { type: "string", default: "3" },
  round: { type: "string" },
  "held-out": { type: "string" },
  "min-updates": { type: "string", default: "2" },
  duration: { type: "string", default: "3600" },
  data: { type: "string" },
  "text-dir": { type: "string" },
  "wordnet-category": { type: "string" },
  steps: { type: "string", default: "40" },
  "batch-size": { type: "string", default: "8" },
  lr: { type: "string", default: "5e-3" },
  relay: { type: "boolean", default: false },
  "relayer-key": { type: "string" },
  expected: { type: "string" },
  clients: { type: "string", default: String(DEFAULT_DEMO.clients) },
  "no-workers": { type: "boolean", default: false },
  "local-only": { type: "boolean", default: false },
  "gateway-port": { type: "string", default: "8080" },
  "gateway-host": { type: "string", default: "127.0.0.1" },
  port: { type: "string", default: "8090" },
  host: { type: "string", default: "127.0.0.1" },
};

type Values = Record<string, string | boolean | string[] | undefined>;

const int = (v: Values, k: string): number => {
  const n = Number(v[k]);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`--${k} must be a non-negative integer, got ${v[k]}`);
  return n;
};
const str = (v: Values, k: string): string => {
  const s = v[k];
  if (typeof s !== "string" || s === "") throw new InvalidArgumentError(`--${k} is required`);
  return s;
};
const log = (line: string) => process.stderr.write(line + "\n");

function loraFrom(v: Values): LoraConfig {
  return {
    r: int(v, "lora-r"),
    alpha: Number(v["lora-alpha"]),
    dropout: 0,
    targetModules: String(v["lora-targets"]).split(",").filter(Boolean),
  };
}

async function signerFrom(v: Values): Promise<Signer> {
  const provider = new JsonRpcProvider((v.rpc as string) ?? process.env.FOK_RPC_URL ?? "http://127.0.0.1:8545");
  const pk = (v["private-key"] as string) ?? process.env.FOK_PRIVATE_KEY;
  if (v.keystore) {
    const password = process.env.FOK_KEYSTORE_PASSWORD;
    if (password === undefined)
      throw new InvalidArgumentError("--keystore needs the password in $FOK_KEYSTORE_PASSWORD");
    return new NonceManager(
      (await Wallet.fromEncryptedJson(await readFile(v.keystore as string, "utf8"), password)).connect(provider),
    );
  }
  // NonceManager: back-to-back transactions from one key must not reuse a nonce the node has not reported yet
  if (pk) return new NonceManager(new Wallet(pk, provider));
  // a local development node (npx hardhat node) unlocks its accounts
  return provider.getSigner(0);
}

async function ledgerFrom(v: Values, signer?: Signer): Promise<FederationLedger> {
  let deployment: Deployment;
  try {
    deployment = JSON.parse(await readFile(v.deployment as string, "utf8"));
  } catch {
    throw new InvalidArgumentError(
      `no deployment at ${v.deployment}; run \`fok chain deploy\` first or pass --deployment`,
    );
  }
  return new FederationLedger(deployment, signer ?? (await signerFrom(v)));
}

async function storeFrom(v: Values): Promise<AdapterStore> {
  return createStore({
    dir: v["store-dir"] as string,
    peers: (v.peer as string[] | undefined) ?? [],
    gateways: (v.gateway as string[] | undefined) ?? [],
    listen: (v.listen as string[] | undefined) ?? [],
  });
}

async function main(argv: string[]): Promise<void> {
  const [cmd, sub, ...rest] = argv;
  const parse = (args: string[]) =>
    parseArgs({ args, options: COMMON, allowPositionals: true, strict: true }) as {
      values: Values;
      positionals: string[];
    };
  switch (cmd) {
    case undefined:
    case "help":
    case "--help":
    case "-h":
      console.log(HELP);
      return;
    case "demo": {
      const { values: v } = parse([sub, ...rest].filter((x): x is string => x !== undefined));
      const report = await runDemo({
        clients: int(v, "clients"),
        rounds: int(v, "rounds"),
        steps: int(v, "steps"),
        batchSize: int(v, "batch-size"),
        lr: Number(v.lr),
        strategy: v.strategy as string,
        workers: !v["no-workers"],
        storeDir: v["store-dir"] === ".fok/store" ? undefined : (v["store-dir"] as string),
        baseDir: v.base as string,
        lora: loraFrom(v),
        localOnly: Boolean(v["local-only"]),
      });
      if (v.json) console.log(JSON.stringify(report, (_, x) => (typeof x === "bigint" ? x.toString() : x), 2));
      else console.log(formatDemoReport(report));
      return;
    }
    case "chain": {
      if (sub !== "deploy") throw new InvalidArgumentError(`unknown: fok chain ${sub ?? ""}`);
      const { values: v } = parse(rest);
      const ledger = await deployContracts(await signerFrom(v));
      const out = (v.out as string) ?? (v.deployment as string);
      await mkdir(dirname(out), { recursive: true });
      await writeFile(out, JSON.stringify(ledger.deployment, null, 2) + "\n");
      console.log(
        `LLMIdentity ${ledger.deployment.identity}\nFederation  ${ledger.deployment.federation}\nchain ${ledger.deployment.chainId}, block ${ledger.deployment.deployBlock}; written to ${out}`,
      );
      return;
    }
    case "identity": {
      const { values: v } = parse(rest);
      const ledger = await ledgerFrom(v);
      if (sub === "register") {
        const base = JSON.parse(
          await readFile(join(v.base as string, "pretrain-report.json"), "utf8").catch(() => "{}"),
        );
        const fingerprint = base.sha256
          ? modelFingerprint(base.sha256, loraConfigHash(loraFrom(v)))
          : bytes32Id("unspecified");
        const id = await ledger.registerIdentity(
          str(v, "address"),
          str(v, "institution"),
          fingerprint,
          (v["metadata-cid"] as string) ?? "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
        );
        console.log(`identity ${id} registered to ${v.address}`);
      } else if (sub === "list") {
        const ids = await ledger.readIdentities();
        if (v.json) console.log(JSON.stringify(ids, null, 2));
        else
          for (const i of ids)
            console.log(
              `${String(i.tokenId).padStart(4)}  ${IdentityStatus[i.status].padEnd(9)} ${i.signer}  institution ${i.institutionId.slice(0, 12)}…  keys: ${i.events.filter((e) => e.kind === "keyRotated").length + 1}`,
            );
      } else if (sub === "suspend" || sub === "reinstate" || sub === "revoke") {
        const id = int(v, "id");
        await ledger[sub](id);
        console.log(`identity ${id}: ${sub}d`);
      } else throw new InvalidArgumentError(`unknown: fok identity ${sub ?? ""}`);
      return;
    }
    case "task": {
      if (sub !== "create") throw new InvalidArgumentError(`unknown: fok task ${sub ?? ""}`);
      const { values: v } = parse(rest);
      const ledger = await ledgerFrom(v);
      const store = await storeFrom(v);
      try {
        const bytes = await readFile(join(v.base as string, "model.safetensors"));
        const cid = await store.add(bytes);
        const { sha256Hex } = await import("../store/index.js");
        const task = await ledger.createTask({
          baseModelCid: cid,
          baseModelSha256: sha256Hex(bytes),
          loraConfigHash: loraConfigHash(loraFrom(v)),
          aggregator: str(v, "aggregator"),
          strategy: v.strategy as string,
          minUpdates: int(v, "min-updates"),
          roundDuration: int(v, "duration"),
          maxRounds: int(v, "rounds"),
        });
        console.log(`task ${task} created (base model ${cid})`);
      } finally {
        await store.close();
      }
      return;
    }
    case "client":
    case "aggregator": {
      if (sub !== "run") throw new InvalidArgumentError(`unknown: fok ${cmd} ${sub ?? ""}`);
      const { values: v } = parse(rest);
      const { runClientCommand, runAggregatorCommand } = await import("./run.js");
      const signer = await signerFrom(v);
      // --relayer-key: the identity only signs; this other account sends (and pays for) the transactions
      const sender = v["relayer-key"]
        ? await signerFrom({ ...v, "private-key": v["relayer-key"], keystore: undefined })
        : signer;
      if (v["relayer-key"]) v.relay = true;
      const ledger = await ledgerFrom(v, sender);
      const store = await storeFrom(v);
      try {
        if (cmd === "client") await runClientCommand(v, ledger, signer, store, loraFrom(v), log);
        else await runAggregatorCommand(v, ledger, store, loraFrom(v), log);
      } finally {
        await store.close();
      }
      return;
    }
    case "inspect": {
      const { values: v } = parse([sub, ...rest].filter((x): x is string => x !== undefined));
      const ledger = await ledgerFrom(v);
      const identities = await ledger.readIdentities();
      const total = Number(await ledger.federation.totalTasks());
      const tasks = [];
      for (let t = 1; t <= total; t++) if (!v.task || Number(v.task) === t) tasks.push(await ledger.readTaskHistory(t));
      if (v.id !== undefined) {
        // one identity's whole contribution history
        const id = int(v, "id");
        const who = identities.find((i) => i.tokenId === id);
        if (!who) throw new InvalidArgumentError(`no identity ${id}`);
        const history = tasks.flatMap((t) =>
          t.rounds.flatMap((r) =>
            r.submissions
              .filter((s) => s.identity === id)
              .map((s) => {
                const k = r.finalized?.contributors.indexOf(id) ?? -1;
                return {
                  task: t.task,
                  round: r.round,
                  cid: s.cid,
                  adapterSha256: s.adapterSha256,
                  numExamples: s.numExamples,
                  transactionHash: s.transactionHash,
                  aggregated: k >= 0,
                  weight: k >= 0 ? r.finalized!.weights[k]! : 0n,
                  globalCid: r.finalized?.globalCid ?? null,
                };
              }),
          ),
        );
        if (v.json) {
          console.log(
            JSON.stringify(
              { identity: who, contributions: history },
              (_, x) => (typeof x === "bigint" ? x.toString() : x),
              2,
            ),
          );
          return;
        }
        console.log(
          `identity ${id}: ${IdentityStatus[who.status]}, signer ${who.signer}, institution ${who.institutionId}`,
        );
        for (const e of who.events)
          console.log(`  ${e.kind} (key ${e.signer}) in block ${e.blockNumber}, tx ${e.transactionHash}`);
        for (const c of history) {
          const share = c.aggregated
            ? `${(Number((c.weight * 10000n) / 10n ** 18n) / 100).toFixed(2)}% of ${c.globalCid}`
            : "not aggregated";
          console.log(`  task ${c.task} round ${c.round}: ${c.cid} (${c.numExamples} examples) → ${share}`);
        }
        return;
      }
      if (v.json) {
        console.log(JSON.stringify({ identities, tasks }, (_, x) => (typeof x === "bigint" ? x.toString() : x), 2));
        return;
      }
      console.log("identities:");
      for (const i of identities) console.log(`  ${i.tokenId}  ${IdentityStatus[i.status]}  ${i.signer}`);
      for (const t of tasks) {
        console.log(
          `task ${t.task}: strategy ${t.strategy}, ${t.rounds.length}/${t.maxRounds} rounds, base ${t.baseModelCid}${t.completed ? ", completed" : ""}`,
        );
        for (const r of t.rounds) {
          console.log(`  round ${r.round} from ${r.startCid}`);
          for (const s of r.submissions)
            console.log(
              `    identity ${s.identity} submitted ${s.cid} (${s.numExamples} examples${s.relayer ? `, relayed by ${s.relayer}` : ""})`,
            );
          if (r.finalized) {
            const shares = r.finalized.weights.map((w) => (Number((w * 10000n) / 10n ** 18n) / 100).toFixed(2) + "%");
            console.log(
              `    → global ${r.finalized.globalCid} by ${decodeStrategy(r.finalized.strategyId)} from [${r.finalized.contributors.map((c, i) => `${c}: ${shares[i]}`).join(", ")}]`,
            );
          }
        }
      }
      return;
    }
    case "dashboard": {
      const { values: v } = parse([sub, ...rest].filter((x): x is string => x !== undefined));
      const ledger = await ledgerFrom(v);
      const store = await storeFrom(v);
      const { serveDashboard } = await import("../dashboard/server.js");
      const dash = await serveDashboard({ ledger, store, host: v.host as string, port: Number(v.port) });
      console.log(`dashboard ${dash.url} (Ctrl-C to stop)`);
      await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
      await dash.close();
      await store.close();
      return;
    }
    case "verify": {
      const { values: v } = parse([sub, ...rest].filter((x): x is string => x !== undefined));
      const ledger = await ledgerFrom(v);
      const store = await storeFrom(v);
      try {
        const { verifyTask, formatVerifyReport } = await import("../provenance/verify.js");
        const { loadBaseModel } = await import("../model/checkpoint.js");
        const { initBackend } = await import("../model/backend.js");
        await initBackend(undefined, true);
        const history = await ledger.readTaskHistory(int(v, "task"));
        // the model layout comes from the task's own base model, fetched and checked against the chain
        const baseBytes = await store
          .get(history.baseModelCid, { expectedSha256: history.baseModelSha256 })
          .catch(async () => (await loadBaseModel(v.base as string)).bytes);
        const { parseBaseModel } = await import("../model/checkpoint.js");
        const base = parseBaseModel(baseBytes);
        let heldOut: { loss: (w: import("../model/adapter.js").LoraWeights) => Promise<number> } | undefined;
        if (v["held-out"]) {
          // leave-one-out effect on this held-out text (JSONL), scored with the task's base model
          const { loadJsonl } = await import("../data/loaders.js");
          const { tokenizeDocuments } = await import("../data/tokens.js");
          const { evaluateLoss } = await import("../train/evaluate.js");
          const { LoraAdapter } = await import("../model/lora.js");
          const tokens = await tokenizeDocuments(base.tokenizer, (await loadJsonl(v["held-out"] as string)).items);
          heldOut = {
            loss: async (w) => {
              const a = LoraAdapter.init(base.gpt.config, loraFrom(v));
              a.assign(w);
              const r = await evaluateLoss(base.gpt, a, tokens, { seqLen: base.gpt.config.blockSize, batchSize: 16 });
              a.dispose();
              return r.meanLoss;
            },
          };
        }
        const report = await verifyTask(ledger, store, history.task, {
          model: base.gpt.config,
          lora: loraFrom(v),
          round: v.round === undefined ? undefined : Number(v.round),
          heldOut,
        });
        console.log(v.json ? JSON.stringify(report, null, 2) : formatVerifyReport(report));
        if (!report.ok) process.exitCode = 1;
      } finally {
        await store.close();
      }
      return;
    }
    case "store": {
      const { values: v, positionals } = parse(rest);
      const store = await storeFrom(v);
      try {
        if (sub === "add") {
          console.log(await store.add(await readFile(positionals[0] ?? str(v, "out"))));
        } else if (sub === "get") {
          const bytes = await store.get(positionals[0]!);
          if (v.out) await writeFile(v.out as string, bytes);
          else process.stdout.write(bytes);
        } else if (sub === "export") {
          const chunks: Uint8Array[] = [];
          for await (const c of store.exportCar(positionals[0]!)) chunks.push(c);
          if (v.out) await writeFile(v.out as string, Buffer.concat(chunks));
          else process.stdout.write(Buffer.concat(chunks));
        } else if (sub === "import") {
          console.log((await store.importCar(await readFile(positionals[0]!))).join("\n"));
        } else if (sub === "serve") {
          const gw = await serveGateway(store, { host: v["gateway-host"] as string, port: int(v, "gateway-port") });
          console.log(`gateway ${gw.url}`);
          for (const m of store.multiaddrs()) console.log(`libp2p ${m}`);
          await new Promise<void>((resolve) => process.once("SIGINT", () => resolve()));
          await gw.close();
        } else throw new InvalidArgumentError(`unknown: fok store ${sub ?? ""}`);
      } finally {
        await store.close();
      }
      return;
    }
    default:
      throw new InvalidArgumentError(`unknown command ${cmd}; see \`fok help\``);
  }
}

try {
  await main(process.argv.slice(2));
  process.exit(process.exitCode ?? 0);
} catch (e) {
  const err = e as Error;
  const short = (err as { shortMessage?: string; code?: string }).shortMessage;
  if (err instanceof FokError || (err.name === "TypeError" && /Unknown option|Unexpected argument/.test(err.message))) {
    process.stderr.write(`fok: ${err.name}: ${err.message}\n`);
  } else if (short) {
    process.stderr.write(`fok: ${(err as { code?: string }).code}: ${short}\n`); // ethers errors carry whole transactions
  } else {
    process.stderr.write(`fok: ${err.stack ?? err.message}\n`);
  }
  process.exit(1);
}
