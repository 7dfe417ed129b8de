/** `fok client run`: one hospital's client against any chain, on its own data. */
import { availableParallelism, freemem } from "node:os";
import { join } from "node:path";
import type { Signer } from "ethers";
import { InvalidArgumentError } from "../errors.js";
import { initBackend } from "../model/backend.js";
import { nativeProducts } from "../model/kernels.js";
import { adapterByteLimit } from "../model/adapter.js";
import { loadJsonl, loadTextFolder } from "../data/loaders.js";
import { loadWordnetMedical } from "../data/corpora.js";
import { splitClients } from "../data/partition.js";
import { tokenizeDocuments } from "../data/tokens.js";
import type { Document } from "../data/types.js";
import { FederationClient } from "../federation/client.js";
import { InlineTrainer } from "../federation/trainer-pool.js";
import { autoThreads, GradientPool, workerBytesEstimate } from "../train/parallel.js";
import { workerBaseBytes } from "../model/checkpoint.js";
import {
  int,
  ledgerFrom,
  loraFrom,
  parse,
  signerFrom,
  taskModel,
  withPeers,
  withStore,
  type CliIO,
  type Values,
} from "./options.js";

export async function clientCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  if (sub !== "run") throw new InvalidArgumentError(`unknown: fok client ${sub ?? ""}`);
  const { values: v } = parse(rest);
  const threadsFlag = (v.threads as string | undefined) ?? process.env.FOK_THREADS ?? "auto";
  const fixedThreads = threadsFlag === "auto" ? null : Number(threadsFlag);
  if (fixedThreads !== null && !(Number.isInteger(fixedThreads) && fixedThreads >= 1)) {
    const name = v.threads === undefined ? "$FOK_THREADS" : "--threads";
    throw new InvalidArgumentError(`${name} must be a positive integer or auto, got ${threadsFlag}`);
  }
  const reserve = int(v, "reserve-cores");
  const signer = await signerFrom(v, io);
  // --relayer-key: the identity only signs; this other account sends (and pays for) the transactions
  const relayer = (v["relayer-key"] as string | undefined) ?? process.env.FOK_RELAYER_KEY;
  const sender = relayer ? await signerFrom({ ...v, "private-key": relayer, keystore: undefined }, io) : signer;
  const ledger = await ledgerFrom(v, io, sender);
  const lora = loraFrom(v);
  await withStore(v, async (store) => {
    await initBackend();
    const { task, base } = await taskModel(v, ledger, store, lora);
    const docs = await clientDocuments(v, io);
    const [split] = splitClients([{ name: "local", docs }], 0.1, 1);
    const data = {
      trainTokens: await tokenizeDocuments(base.tokenizer, split!.train),
      heldOutTokens: await tokenizeDocuments(base.tokenizer, split!.heldOut),
      numExamples: split!.train.length,
    };
    const maxAdapterBytes = adapterByteLimit(base.model.config, lora);
    const held = split!.heldOut.length;
    io.log(`client: ${split!.train.length} training documents (${data.trainTokens.length} tokens), ${held} held out`);
    // --threads N: one adapter trained data-parallel over N threads, N − 1 of them workers with their own base copy
    let threads = fixedThreads;
    if (threads === null) {
      const baseF32Bytes = 4 * [...base.model.params.values()].reduce((a, p) => a + p.size, 0);
      const auto = autoThreads({
        cores: availableParallelism(),
        reserve,
        freeBytes: freemem(),
        workerBytes: workerBytesEstimate(baseF32Bytes, nativeProducts() !== null),
      });
      threads = auto.threads;
      io.log(`client: --threads auto: ${threads} thread${threads > 1 ? "s" : ""} (${auto.why})`);
    }
    let pool: GradientPool | undefined;
    if (threads > 1) {
      const baseBytes = await workerBaseBytes(base, v.base as string);
      pool = await GradientPool.start({ baseBytes, lora }, threads);
      io.cleanup.push(() => void pool!.close());
      const workers = `${threads - 1} worker${threads > 2 ? "s" : ""}`;
      io.log(`client: training on ${threads} threads (data-parallel: this one and ${workers})`);
    }
    const onStep = (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => {
      if (s.step % 10 === 0 || s.step === s.steps) {
        io.log(`  step ${s.step}/${s.steps} loss ${s.loss.toFixed(3)} ${Math.round(s.tokensPerSec)} tok/s`);
      }
    };
    const trainer = await InlineTrainer.fromBase(base, lora, data, onStep, pool);
    const client = new FederationClient({
      ledger,
      signer,
      relay: Boolean(v.relay) || Boolean(relayer),
      store,
      task,
      trainer,
      train: { steps: Number(v.steps), batchSize: Number(v["batch-size"]), lr: Number(v.lr), warmupSteps: 5 },
      stateDir: join(v["store-dir"] as string, "..", "client-state", String(await (signer as Signer).getAddress())),
      maxAdapterBytes,
      model: base.model.config,
      lora,
      log: io.log,
    });
    io.log(`client: identity ${await client.identity()}, task ${task}`);
    // the node is announced from the identity's own key (a relayer only carries its submissions)
    const announcer = relayer ? ledger.connect(signer) : ledger;
    await withPeers(v, announcer, store, task, io, { announce: true }, () => client.run());
  });
}

/** The hospital's documents: --data FILE.jsonl, --text-dir DIR or --wordnet-category NAME. */
async function clientDocuments(v: Values, io: CliIO): Promise<Document[]> {
  let docs: Document[];
  if (v.data) {
    const r = await loadJsonl(v.data as string, { skipMalformed: true });
    if (r.skipped.length) io.log(`skipped ${r.skipped.length} malformed records, first: ${r.skipped[0]!.message}`);
    docs = r.items;
  } else if (v["text-dir"]) {
    const r = await loadTextFolder(v["text-dir"] as string, { skipMalformed: true });
    if (r.skipped.length) io.log(`skipped ${r.skipped.length} malformed files, first: ${r.skipped[0]!.message}`);
    docs = r.items;
  } else if (v["wordnet-category"]) {
    docs = (await loadWordnetMedical()).filter((d) => d.label === v["wordnet-category"]);
  } else {
    throw new InvalidArgumentError(
      "give the client's data: --data FILE.jsonl, --text-dir DIR or --wordnet-category NAME",
    );
  }
  if (docs.length < 2) throw new InvalidArgumentError(`only ${docs.length} documents; a client needs at least 2`);
  return docs;
}
