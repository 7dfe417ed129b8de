/**
 * What every `fok` command shares: the flags, their parsing, the output streams, and the chain, store and model
 * each command builds from its flags.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { JsonRpcProvider, Network, NonceManager, Wallet, isAddress, type Signer } from "ethers";
import { FokError, InvalidArgumentError } from "../errors.js";
import {
  FederationLedger,
  PRIVACY_MODES,
  chainRequest,
  checkEvm,
  type Deployment,
  type DpParams,
  type PrivacyMode,
} from "../chain/index.js";
import { noiseMultiplierFor } from "../dp/accountant.js";
import { DEFAULT_DP_DELTA } from "../dp/privacy.js";
import { createStore, type AdapterStore } from "../store/index.js";
import { DEFAULT_LORA_CONFIG, validateLoraConfig, type LoraConfig } from "../model/lora.js";
import { loadBaseModel, parseBaseModel, type BaseModel } from "../model/checkpoint.js";
import {
  DEFAULT_MAX_EXAMPLES,
  DEFAULT_MAX_UPDATE_NORM,
  defaultThreshold,
  loraConfigHash,
} from "../federation/task-config.js";
import { DEFAULT_DEMO } from "../federation/demo.js";
import { PeerBook } from "../federation/peers.js";

/** Where a command writes, and what stops a command that serves until told to stop. */
export interface CliIO {
  /** One line of the command's output (stdout). */
  out(line: string): void;
  /** Raw bytes to stdout (`store get`, `store export` without --out). */
  outBytes(bytes: Uint8Array): void;
  /** Progress and logs (stderr). */
  log(line: string): void;
  /** Resolves when a serving command (dashboard, store serve) should stop: Ctrl-C at the terminal. */
  stopped: Promise<void>;
  /** Set to non-zero for a command that ran but failed its purpose (verify found a failure). */
  exitCode: number;
  /** Run when the command ends, whichever way (closes the RPC connections it opened). */
  cleanup: (() => void)[];
}

/**
 * The folder a party keeps its state in — the deployment file and its store — unless --deployment / --store-dir
 * say otherwise: $FOK_HOME, default `.fok` in the folder fok runs in.
 */
export const FOK_HOME = process.env.FOK_HOME || ".fok";

export const OPTIONS: ParseArgsConfig["options"] = {
  rpc: { type: "string" },
  "private-key": { type: "string" },
  keystore: { type: "string" },
  deployment: { type: "string", default: join(FOK_HOME, "deployment.json") },
  "store-dir": { type: "string", default: join(FOK_HOME, "store") },
  peer: { type: "string", multiple: true },
  gateway: { type: "string", multiple: true },
  listen: { type: "string", multiple: true },
  announce: { type: "string", multiple: true },
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
  registrar: { type: "string" },
  "task-admin": { type: "string" },
  admin: { type: "string" },
  consent: { type: "string" },
  "consent-deadline": { type: "string" },
  "valid-for": { type: "string", default: "86400" },
  strategy: { type: "string", default: "fedavg" },
  privacy: { type: "string", default: "open" },
  threshold: { type: "string" },
  "dp-epsilon": { type: "string" },
  "dp-noise": { type: "string" },
  "dp-delta": { type: "string" },
  rounds: { type: "string", default: "3" },
  round: { type: "string" },
  "held-out": { type: "string" },
  "min-updates": { type: "string", default: "2" },
  duration: { type: "string", default: "3600" },
  "max-examples": { type: "string", default: String(DEFAULT_MAX_EXAMPLES) },
  "max-update-norm": { type: "string", default: String(DEFAULT_MAX_UPDATE_NORM) },
  data: { type: "string" },
  "text-dir": { type: "string" },
  "wordnet-category": { type: "string" },
  steps: { type: "string", default: "40" },
  "batch-size": { type: "string", default: "4" },
  threads: { type: "string" }, // default $FOK_THREADS, else auto (client.ts)
  "reserve-cores": { type: "string", default: "0" },
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

export type Values = Record<string, string | boolean | string[] | undefined>;

/** Parses a command's flags (unknown flags are an error); positionals are returned apart. */
export function parse(args: readonly (string | undefined)[]): { values: Values; positionals: string[] } {
  const present = args.filter((x): x is string => x !== undefined);
  return parseArgs({ args: present, options: OPTIONS, allowPositionals: true, strict: true }) as {
    values: Values;
    positionals: string[];
  };
}

/** A non-negative integer flag. */
export function int(v: Values, k: string): number {
  if (v[k] === undefined) throw new InvalidArgumentError(`--${k} is required`);
  const n = Number(v[k]);
  if (!Number.isInteger(n) || n < 0)
    throw new InvalidArgumentError(`--${k} must be a non-negative integer, got ${v[k]}`);
  return n;
}

/** A positive finite number flag. */
export function positive(v: Values, k: string): number {
  const n = Number(v[k]);
  if (v[k] === undefined || v[k] === "" || !Number.isFinite(n) || n <= 0)
    throw new InvalidArgumentError(`--${k} must be a positive number, got ${v[k]}`);
  return n;
}

/** A required string flag. */
export function str(v: Values, k: string): string {
  const s = v[k];
  if (typeof s !== "string" || s === "") throw new InvalidArgumentError(`--${k} is required`);
  return s;
}

export function loraFrom(v: Values): LoraConfig {
  const targetModules = String(v["lora-targets"]).split(",").filter(Boolean);
  const lora = { r: int(v, "lora-r"), alpha: Number(v["lora-alpha"]), dropout: 0, targetModules };
  try {
    validateLoraConfig(lora);
  } catch (e) {
    throw new InvalidArgumentError(`LoRA flags: ${(e as Error).message}`);
  }
  return lora;
}

/** The chain endpoint did not answer a JSON-RPC request. */
export class RpcUnavailableError extends FokError {
  constructor(
    readonly url: string,
    reason: string,
  ) {
    super(`cannot reach the chain at ${url}: ${reason}`);
  }
}

/** How long the first request to the chain may take before the command gives up, ms. */
const RPC_PROBE_TIMEOUT_MS = 10_000;

/**
 * A provider for --rpc ($FOK_RPC_URL, default http://127.0.0.1:8545), after one `eth_chainId` answered (ethers
 * would otherwise retry an unreachable endpoint forever, printing to stdout) and its EVM passed checkEvm. Closed
 * when the command ends.
 */
export async function providerFrom(v: Values, io: CliIO): Promise<JsonRpcProvider> {
  const url = (v.rpc as string) ?? process.env.FOK_RPC_URL ?? "http://127.0.0.1:8545";
  let chainId: bigint;
  try {
    const res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      signal: AbortSignal.timeout(RPC_PROBE_TIMEOUT_MS),
    });
    const body = (await res.json()) as { result?: string; error?: { message?: string } };
    if (typeof body.result !== "string") throw new Error(body.error?.message ?? `HTTP ${res.status}, no chain id`);
    chainId = BigInt(body.result);
  } catch (e) {
    const err = e as Error & { cause?: { code?: string; message?: string } };
    throw new RpcUnavailableError(url, err.cause?.code ?? err.cause?.message ?? err.message.split("\n")[0]!);
  }
  const provider = new JsonRpcProvider(chainRequest(url), Network.from(chainId), { staticNetwork: true });
  io.cleanup.push(() => provider.destroy());
  await checkEvm(provider, `the chain at ${url} (chain id ${chainId})`);
  return provider;
}

/** The account a command acts as: --keystore, --private-key / $FOK_PRIVATE_KEY, or a dev node's first account. */
export async function signerFrom(v: Values, io: CliIO): Promise<Signer> {
  const provider = await providerFrom(v, io);
  const pk = (v["private-key"] as string) ?? process.env.FOK_PRIVATE_KEY;
  if (v.keystore) {
    const password = process.env.FOK_KEYSTORE_PASSWORD;
    if (password === undefined) {
      throw new InvalidArgumentError("--keystore needs the password in $FOK_KEYSTORE_PASSWORD");
    }
    const wallet = await Wallet.fromEncryptedJson(await readFile(v.keystore as string, "utf8"), password);
    return new NonceManager(wallet.connect(provider));
  }
  // NonceManager: back-to-back transactions from one key must not reuse a nonce the node has not reported yet
  if (pk) return new NonceManager(new Wallet(pk, provider));
  // a local development node (npx hardhat node) unlocks its accounts
  return provider.getSigner(0);
}

/** The deployment named by --deployment, seen through `signer` (default: the command's account). */
export async function ledgerFrom(v: Values, io: CliIO, signer?: Signer): Promise<FederationLedger> {
  const deployment = await deploymentFrom(v);
  return new FederationLedger(deployment, signer ?? (await signerFrom(v, io)));
}

/** The deployment seen through the RPC endpoint alone: for commands that only read, no key needed. */
export async function readerFrom(v: Values, io: CliIO): Promise<FederationLedger> {
  const deployment = await deploymentFrom(v);
  return new FederationLedger(deployment, await providerFrom(v, io));
}

async function deploymentFrom(v: Values): Promise<Deployment> {
  let deployment: Deployment;
  try {
    deployment = JSON.parse(await readFile(v.deployment as string, "utf8"));
  } catch {
    throw new InvalidArgumentError(
      `no deployment at ${v.deployment}; run \`fok chain deploy\` first or pass --deployment`,
    );
  }
  for (const k of ["identity", "federation"] as const) {
    if (!isAddress(deployment?.[k])) throw new InvalidArgumentError(`${v.deployment}: ${k} is not an address`);
  }
  return deployment;
}

/** A required address flag, checked (ethers would take any other string for an ENS name). */
export function address(v: Values, k: string): string {
  const a = str(v, k);
  if (!isAddress(a)) throw new InvalidArgumentError(`--${k} must be a 0x-prefixed 20-byte address, got ${a}`);
  return a;
}

/** A required task or identity id flag: a positive integer. */
export function id(v: Values, k: string): number {
  const n = int(v, k);
  if (n < 1) throw new InvalidArgumentError(`--${k} must be 1 or more, got ${v[k]}`);
  return n;
}

export async function storeFrom(v: Values): Promise<AdapterStore> {
  return createStore({
    dir: v["store-dir"] as string,
    peers: (v.peer as string[] | undefined) ?? [],
    gateways: (v.gateway as string[] | undefined) ?? [],
    listen: (v.listen as string[] | undefined) ?? [],
  });
}

/** Runs `fn` with the store of --store-dir, closing it afterwards. */
export async function withStore<T>(v: Values, fn: (store: AdapterStore) => Promise<T>): Promise<T> {
  const store = await storeFrom(v);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

/** How often a running command re-reads the announcements and dials the task's peers it is not connected to, ms. */
const PEER_REFRESH_MS = 5_000;

/**
 * Runs `fn` with the task's peers found from the chain: when the store has libp2p (--listen or --peer), a command
 * that holds a key first announces its node (--announce addresses, default every listen address), then every
 * announced node of the task's identities and aggregators is dialed, now and every few seconds until `fn` ends.
 */
export async function withPeers<T>(
  v: Values,
  ledger: FederationLedger,
  store: AdapterStore,
  task: number,
  io: CliIO,
  o: { announce: boolean },
  fn: () => Promise<T>,
): Promise<T> {
  if (store.multiaddrs().length === 0 && ((v.peer as string[] | undefined) ?? []).length === 0) return fn();
  const book = new PeerBook(ledger, store, task, io.log);
  if (o.announce) await book.announce((v.announce as string[] | undefined) ?? store.multiaddrs());
  const refresh = () => book.refresh().catch((e: Error) => io.log(`peer discovery: ${e.message.split("\n")[0]}`));
  await refresh();
  const timer = setInterval(() => void refresh(), PEER_REFRESH_MS);
  try {
    return await fn();
  } finally {
    clearInterval(timer);
  }
}

/** JSON with bigints as decimal strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value, (_, x) => (typeof x === "bigint" ? x.toString() : x), 2);
}

/** The task's base model, from --base or the store, checked against the task's on-chain digest and LoRA hash. */
export async function taskModel(v: Values, ledger: FederationLedger, store: AdapterStore, lora: LoraConfig) {
  const task = id(v, "task");
  const history = await ledger.readTaskHistory(task);
  if (loraConfigHash(lora) !== history.loraConfigHash) {
    throw new InvalidArgumentError(
      `LoRA config ${JSON.stringify(lora)} does not match task ${task}'s hash ${history.loraConfigHash}`,
    );
  }
  let base: BaseModel;
  try {
    base = await loadBaseModel(v.base as string); // a folder streams into the backend, never held whole
  } catch {
    base = parseBaseModel(await store.get(history.baseModelCid, { expectedSha256: history.baseModelSha256 }));
  }
  if (base.sha256 !== history.baseModelSha256) {
    base.model.dispose();
    throw new InvalidArgumentError(`base model ${base.sha256} is not task ${task}'s ${history.baseModelSha256}`);
  }
  return { task, history, base };
}

/**
 * --dp-epsilon ε_max (turns client-level DP on), --dp-delta δ (default 1e-5) and --dp-noise σ (default: the
 * smallest σ, to 1e-6 above, whose `rounds` rounds stay within ε_max). Undefined without --dp-epsilon.
 */
export function dpFrom(v: Values, rounds: number): DpParams | undefined {
  if (v["dp-epsilon"] === undefined) {
    for (const k of ["dp-noise", "dp-delta"])
      if (v[k] !== undefined) throw new InvalidArgumentError(`--${k} needs --dp-epsilon (the task's privacy budget)`);
    return undefined;
  }
  const epsilonMax = positive(v, "dp-epsilon");
  const delta = v["dp-delta"] === undefined ? DEFAULT_DP_DELTA : positive(v, "dp-delta");
  if (!(delta < 1)) throw new InvalidArgumentError(`--dp-delta must be below 1, got ${v["dp-delta"]}`);
  if (v["dp-noise"] !== undefined) return { noiseMultiplier: positive(v, "dp-noise"), delta, epsilonMax };
  const sigma = noiseMultiplierFor(epsilonMax, { sampleRate: 1, steps: rounds, delta });
  if (!Number.isFinite(sigma))
    throw new InvalidArgumentError(`no noise multiplier up to 10^4 keeps ${rounds} rounds within ε ${epsilonMax}`);
  return { noiseMultiplier: Math.ceil(sigma * 1e6) / 1e6, delta, epsilonMax };
}

/** --privacy open|secure and, in secure mode, --threshold (default: a majority of --min-updates, at least 2). */
export function privacyFrom(v: Values, minUpdates: number): { privacy: PrivacyMode; threshold?: number } {
  const privacy = v.privacy as PrivacyMode;
  if (!PRIVACY_MODES.includes(privacy))
    throw new InvalidArgumentError(
      `--privacy must be one of ${PRIVACY_MODES.join(", ")}, got ${JSON.stringify(v.privacy)}`,
    );
  if (privacy === "open") {
    if (v.threshold !== undefined) throw new InvalidArgumentError("--threshold applies to --privacy secure only");
    return { privacy };
  }
  return { privacy, threshold: v.threshold === undefined ? defaultThreshold(minUpdates) : int(v, "threshold") };
}
