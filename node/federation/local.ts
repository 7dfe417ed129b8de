/**
 * The one local-federation starter: deploy the contracts (or attach to a deployment), register one identity per
 * hospital, create the task, start the trainers, the aggregator and the clients; run the rounds; stop everything.
 * The demo, the experiment, the round benchmark and the end-to-end tests all build their federation here.
 */
import type { Signer } from "ethers";
import {
  deployContracts,
  identityMetadata,
  type DpParams,
  type FederationLedger,
  type PrivacyMode,
  type TaskParams,
} from "../chain/index.js";
import type { LoraConfig, ModelConfig } from "../model/lora.js";
import { createStore, type AdapterStore } from "../store/index.js";
import type { TrainConfig } from "../train/train.js";
import { Aggregator, type AggregatorOptions, type RoundReport } from "./aggregator.js";
import { FederationClient } from "./client.js";
import type { ClientDataset } from "./local-trainer.js";
import {
  DEFAULT_MAX_EXAMPLES,
  DEFAULT_MAX_UPDATE_NORM,
  checkTaskParams,
  defaultThreshold,
  loraConfigHash,
  modelFingerprint,
} from "./task-config.js";
import { adapterByteLimit } from "../model/adapter.js";
import { startTrainers, type RoundTrainer, type StepReport } from "./trainer-pool.js";

export interface LocalHospital {
  /** Shown in logs. */
  name: string;
  /** The institution registered on-chain (hashed to bytes32). Default: `name`. */
  institution?: string;
  /** The identity's metadata CID. Default: a metadata document with the institution's name, pinned here. */
  metadataCid?: string;
  /** Its own training data (a trainer is started for it), or a trainer of the caller's (not closed here). */
  data?: ClientDataset;
  trainer?: RoundTrainer;
  /** Where its client keeps per-round state (resume after a crash). Default: in memory. */
  stateDir?: string;
}

export interface LocalFederationOptions {
  /** Accounts: the admin, the aggregator, then one per hospital. */
  signers: Signer[];
  /** Attach to this deployment (seen through the admin) instead of deploying a new one. */
  ledger?: FederationLedger;
  /** The adapter store everyone shares. Default: a new in-memory store, closed by `close()`. */
  store?: AdapterStore;
  baseBytes: Uint8Array;
  baseModelSha256: string;
  model: ModelConfig;
  lora: LoraConfig;
  hospitals: LocalHospital[];
  strategy: string;
  rounds: number;
  /** Default: every hospital. */
  minUpdates?: number;
  /** Seconds. Default 3600. */
  roundDuration?: number;
  /** The most examples one identity may claim per round. Default DEFAULT_MAX_EXAMPLES. */
  maxExamples?: number;
  /** The task's bound on ‖update − start‖ (default DEFAULT_MAX_UPDATE_NORM). */
  maxUpdateNorm?: number;
  /** Secure aggregation (node/secure) or updates in the clear (default). */
  privacy?: PrivacyMode;
  /** Secure mode: survivors' shares needed to unmask. Default defaultThreshold(minUpdates). */
  threshold?: number;
  /** Client-level differential privacy (node/dp/privacy.ts): central noise in open mode, distributed in secure. */
  dp?: DpParams;
  /** The aggregator's central DP noise seed (reproducible simulations only; see AggregatorOptions.noiseSeed). */
  noiseSeed?: Uint8Array;
  /**
   * Create the task without checkTaskParams, as a creator calling the contract directly could (tests of what the
   * aggregator and verify do with such a task).
   */
  unchecked?: boolean;
  /** The aggregator finalizes once this many updates are in. Default: every hospital. */
  expectedUpdates?: number;
  train: Partial<TrainConfig>;
  /** Trainers started here: worker threads (default true) and their progress. */
  workers?: boolean;
  onStep?: (hospital: number, s: StepReport) => void;
  /** Chain poll interval, ms. Default 100. */
  pollMs?: number;
  log?: (line: string) => void;
  onGlobal?: AggregatorOptions["onGlobal"];
  /** Wraps each client's ledger and store (benchmarks time their calls). */
  instrument?: { ledger?(l: FederationLedger): FederationLedger; store?(s: AdapterStore): AdapterStore };
}

export interface LocalFederation {
  /** The deployment seen through the admin. */
  ledger: FederationLedger;
  store: AdapterStore;
  task: number;
  /** The base model's CID in the store (the task's `baseModelCid`). */
  baseModelCid: string;
  /** Identity token id of each hospital, in order. */
  identities: number[];
  aggregator: Aggregator;
  clients: FederationClient[];
  trainers: RoundTrainer[];
  /** Opens round 1 from a seeded initial adapter, or from `initialAdapter`'s bytes. */
  openFirstRound(init?: { seed?: number; initialAdapter?: Uint8Array }): Promise<string>;
  /** The aggregator and every client until the task completes (round 1 must be open). */
  run(): Promise<RoundReport[]>;
  /** Stops the trainers started here and the store made here. */
  close(): Promise<void>;
}

export async function startLocalFederation(o: LocalFederationOptions): Promise<LocalFederation> {
  const [admin, aggregatorAccount] = o.signers;
  const hospitalSigners = o.signers.slice(2, 2 + o.hospitals.length);
  if (!admin || !aggregatorAccount || hospitalSigners.length < o.hospitals.length) {
    throw new RangeError(`${o.hospitals.length} hospitals need ${o.hospitals.length + 2} accounts`);
  }
  const ledger = o.ledger ?? (await deployContracts(admin));
  const store = o.store ?? (await createStore());
  const started: RoundTrainer[] = [];
  try {
    const baseModelCid = await store.add(o.baseBytes);
    const task = await createTask(o, ledger, baseModelCid, await aggregatorAccount.getAddress());
    const identities = await registerHospitals(o, ledger, store, hospitalSigners);
    started.push(...(await startMissingTrainers(o)));
    let next = 0;
    const trainers = o.hospitals.map((h) => h.trainer ?? started[next++]!);
    const aggregator = new Aggregator({
      ledger: ledger.connect(aggregatorAccount),
      store,
      task,
      model: o.model,
      lora: o.lora,
      baseModelSha256: o.baseModelSha256,
      expectedUpdates: o.expectedUpdates ?? o.hospitals.length,
      pollMs: o.pollMs ?? 100,
      log: o.log && ((l) => o.log!(`[aggregator] ${l}`)),
      onGlobal: o.onGlobal,
      noiseSeed: o.noiseSeed,
    });
    const clients = o.hospitals.map((h, i) => {
      const signer = hospitalSigners[i]!;
      return new FederationClient({
        ledger: o.instrument?.ledger?.(ledger.connect(signer)) ?? ledger.connect(signer),
        signer,
        store: o.instrument?.store?.(store) ?? store,
        task,
        trainer: trainers[i]!,
        train: o.train,
        stateDir: h.stateDir,
        maxAdapterBytes: adapterByteLimit(o.model, o.lora),
        model: o.model,
        lora: o.lora,
        pollMs: o.pollMs ?? 100,
        log: o.log && ((l) => o.log!(`[client ${h.name}] ${l}`)),
      });
    });
    return {
      ledger,
      store,
      task,
      baseModelCid,
      identities,
      aggregator,
      clients,
      trainers,
      openFirstRound: (init = {}) =>
        init.initialAdapter ? aggregator.openFirstRoundFrom(init.initialAdapter) : aggregator.openFirstRound(init.seed),
      run: async () => (await Promise.all([aggregator.run(), ...clients.map((c) => c.run())]))[0],
      close: async () => {
        await Promise.all(started.map((t) => t.close()));
        if (!o.store) await store.close();
      },
    };
  } catch (e) {
    await Promise.all(started.map((t) => t.close()));
    if (!o.store) await store.close();
    throw e;
  }
}

async function createTask(o: LocalFederationOptions, ledger: FederationLedger, baseCid: string, aggregator: string) {
  const minUpdates = o.minUpdates ?? o.hospitals.length;
  const params: TaskParams = {
    privacy: o.privacy,
    threshold: o.privacy === "secure" ? (o.threshold ?? defaultThreshold(minUpdates)) : undefined,
    baseModelCid: baseCid,
    baseModelSha256: o.baseModelSha256,
    loraConfigHash: loraConfigHash(o.lora),
    aggregator,
    strategy: o.strategy,
    minUpdates,
    roundDuration: o.roundDuration ?? 3600,
    maxRounds: o.rounds,
    maxExamples: o.maxExamples ?? DEFAULT_MAX_EXAMPLES,
    maxUpdateNorm: o.maxUpdateNorm ?? DEFAULT_MAX_UPDATE_NORM,
    dp: o.dp,
  };
  if (!o.unchecked) checkTaskParams(params);
  return ledger.createTask(params);
}

async function registerHospitals(
  o: LocalFederationOptions,
  ledger: FederationLedger,
  store: AdapterStore,
  signers: Signer[],
) {
  const fingerprint = modelFingerprint(o.baseModelSha256, loraConfigHash(o.lora));
  const identities: number[] = [];
  for (const [i, h] of o.hospitals.entries()) {
    const address = await signers[i]!.getAddress();
    const institution = h.institution ?? h.name;
    const metadata = h.metadataCid ?? (await store.add(identityMetadata(institution)));
    identities.push(await ledger.registerIdentity(address, institution, fingerprint, metadata));
  }
  return identities;
}

/** Trainers for the hospitals that brought data rather than a trainer, in hospital order. */
async function startMissingTrainers(o: LocalFederationOptions): Promise<RoundTrainer[]> {
  const missing = o.hospitals.map((h, i) => ({ h, i })).filter(({ h }) => !h.trainer);
  for (const { h } of missing) if (!h.data) throw new RangeError(`hospital ${h.name} has neither data nor a trainer`);
  const onStep = o.onStep && ((k: number, s: StepReport) => o.onStep!(missing[k]!.i, s));
  return startTrainers(
    o.baseBytes,
    o.lora,
    missing.map(({ h }) => h.data!),
    { workers: o.workers ?? true, onStep },
  );
}
