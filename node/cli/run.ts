/** `fok client run` and `fok aggregator run`: one hospital's client, or the aggregator, against any chain. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Signer } from "ethers";
import { InvalidArgumentError } from "../errors.js";
import type { FederationLedger } from "../chain/index.js";
import type { AdapterStore } from "../store/index.js";
import { parseBaseModel } from "../model/checkpoint.js";
import { initBackend } from "../model/backend.js";
import type { LoraConfig } from "../model/lora.js";
import { loadJsonl, loadTextFolder } from "../data/loaders.js";
import { loadWordnetMedical } from "../data/corpora.js";
import { splitClients } from "../data/partition.js";
import { tokenizeDocuments } from "../data/tokens.js";
import type { Document } from "../data/types.js";
import { FederationClient } from "../federation/client.js";
import { Aggregator } from "../federation/aggregator.js";
import { InlineTrainer } from "../federation/trainer-pool.js";
import { loraConfigHash } from "../federation/task-config.js";

type Values = Record<string, string | boolean | string[] | undefined>;

/** The task's base model, from --base or the store, checked against the task's on-chain digest and LoRA hash. */
async function taskModel(v: Values, ledger: FederationLedger, store: AdapterStore, lora: LoraConfig) {
  const task = Number(v.task);
  if (!Number.isInteger(task) || task < 1) throw new InvalidArgumentError("--task is required");
  const history = await ledger.readTaskHistory(task);
  if (loraConfigHash(lora) !== history.loraConfigHash) {
    throw new InvalidArgumentError(
      `LoRA config ${JSON.stringify(lora)} does not match task ${task}'s hash ${history.loraConfigHash}`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(v.base as string, "model.safetensors"));
  } catch {
    bytes = await store.get(history.baseModelCid, { expectedSha256: history.baseModelSha256 });
  }
  const base = parseBaseModel(bytes);
  if (base.sha256 !== history.baseModelSha256)
    throw new InvalidArgumentError(`base model ${base.sha256} is not task ${task}'s ${history.baseModelSha256}`);
  return { task, history, base, bytes };
}

export async function runClientCommand(
  v: Values,
  ledger: FederationLedger,
  signer: Signer,
  store: AdapterStore,
  lora: LoraConfig,
  log: (l: string) => void,
) {
  await initBackend();
  const { task, base, bytes } = await taskModel(v, ledger, store, lora);
  let docs: Document[];
  if (v.data) {
    const r = await loadJsonl(v.data as string, { skipMalformed: true });
    if (r.skipped.length) log(`skipped ${r.skipped.length} malformed records, first: ${r.skipped[0]!.message}`);
    docs = r.items;
  } else if (v["text-dir"]) {
    const r = await loadTextFolder(v["text-dir"] as string, { skipMalformed: true });
    if (r.skipped.length) log(`skipped ${r.skipped.length} malformed files, first: ${r.skipped[0]!.message}`);
    docs = r.items;
  } else if (v["wordnet-category"]) {
    docs = (await loadWordnetMedical()).filter((d) => d.label === v["wordnet-category"]);
  } else
    throw new InvalidArgumentError(
      "give the client's data: --data FILE.jsonl, --text-dir DIR or --wordnet-category NAME",
    );
  if (docs.length < 2) throw new InvalidArgumentError(`only ${docs.length} documents; a client needs at least 2`);
  const [split] = splitClients([{ name: "local", docs }], 0.1, 1);
  const data = {
    trainTokens: await tokenizeDocuments(base.tokenizer, split!.train),
    heldOutTokens: await tokenizeDocuments(base.tokenizer, split!.heldOut),
    numExamples: split!.train.length,
  };
  base.gpt.dispose();
  log(
    `client: ${split!.train.length} training documents (${data.trainTokens.length} tokens), ${split!.heldOut.length} held out`,
  );
  const trainer = await InlineTrainer.create(bytes, lora, data, (s) => {
    if (s.step % 10 === 0 || s.step === s.steps)
      log(`  step ${s.step}/${s.steps} loss ${s.loss.toFixed(3)} ${Math.round(s.tokensPerSec)} tok/s`);
  });
  const client = new FederationClient({
    ledger,
    signer,
    relay: Boolean(v.relay),
    store,
    task,
    trainer,
    train: { steps: Number(v.steps), batchSize: Number(v["batch-size"]), lr: Number(v.lr), warmupSteps: 5 },
    stateDir: join(v["store-dir"] as string, "..", "client-state", String(await signer.getAddress())),
    log,
  });
  log(`client: identity ${await client.identity()}, task ${task}`);
  await client.run();
}

export async function runAggregatorCommand(
  v: Values,
  ledger: FederationLedger,
  store: AdapterStore,
  lora: LoraConfig,
  log: (l: string) => void,
) {
  await initBackend();
  const { task, history, base } = await taskModel(v, ledger, store, lora);
  const aggregator = new Aggregator({
    ledger,
    store,
    task,
    model: base.gpt.config,
    lora,
    baseModelSha256: base.sha256,
    expectedUpdates: v.expected ? Number(v.expected) : undefined,
    log,
  });
  if (history.rounds.length === 0) await aggregator.openFirstRound();
  const reports = await aggregator.run();
  log(`aggregator: task ${task} done, ${reports.length} rounds finalized by this run`);
}
