/** `fok verify`: re-checks a task from the chain and the bytes alone; exit 1 when any check fails. */
import { InvalidArgumentError } from "../errors.js";
import type { AdapterStore } from "../store/index.js";
import { initBackend } from "../model/backend.js";
import { loadBaseModel, parseBaseModel, type BaseModel } from "../model/checkpoint.js";
import { LoraAdapter, type LoraConfig } from "../model/lora.js";
import type { LoraWeights } from "../model/adapter.js";
import { loadJsonl } from "../data/loaders.js";
import { tokenizeDocuments } from "../data/tokens.js";
import { evaluateLoss } from "../train/evaluate.js";
import { formatVerifyReport, verifyTask, type VerifyOptions } from "../provenance/verify.js";
import { id, loraFrom, parse, readerFrom, withPeers, withStore, type CliIO } from "./options.js";

export async function verifyCommand(args: (string | undefined)[], io: CliIO): Promise<void> {
  const { values: v } = parse(args);
  const lora = loraFrom(v);
  const task = id(v, "task");
  const round = v.round === undefined ? undefined : id(v, "round");
  const ledger = await readerFrom(v, io);
  if (task > (await ledger.totalTasks())) throw new InvalidArgumentError(`no task ${task}`);
  await withStore(v, (store) => withPeers(v, ledger, store, task, io, { announce: false }, () => verifyWith(store)));

  async function verifyWith(store: AdapterStore) {
    await initBackend(undefined, true);
    const history = await ledger.readTaskHistory(task);
    const { base, local } = await taskBase(store, history.baseModelCid, history.baseModelSha256, v.base as string);
    const heldOut = v["held-out"] ? await heldOutLoss(v["held-out"] as string, base, lora) : undefined;
    const localBase = local ? { sha256: base.sha256, where: v.base as string } : undefined;
    const report = await verifyTask(ledger, store, history.task, {
      model: base.model.config,
      lora,
      round,
      heldOut,
      localBase,
    });
    io.out(v.json ? JSON.stringify(report, null, 2) : formatVerifyReport(report));
    if (!report.ok) io.exitCode = 1;
  }
}

/**
 * The task's base model: the verifier's own copy in --base when it is the task's (checked by digest, no network),
 * else fetched by CID from the store and its peers and checked against the chain.
 */
async function taskBase(
  store: AdapterStore,
  cid: string,
  sha256: string,
  baseDir: string,
): Promise<{ base: BaseModel; local: boolean }> {
  const onDisk = await loadBaseModel(baseDir).catch(() => null);
  if (onDisk?.sha256 === sha256) return { base: onDisk, local: true };
  onDisk?.model.dispose();
  const bytes = await store.get(cid, { expectedSha256: sha256 }).catch(() => null);
  if (bytes) return { base: parseBaseModel(bytes), local: false };
  throw new InvalidArgumentError(
    `the task's base model ${cid} (sha256 ${sha256}) is neither in ${baseDir} nor to be had from the store or peers`,
  );
}

/** Leave-one-out effects on this held-out text (JSONL), scored with the task's base model. */
async function heldOutLoss(path: string, base: BaseModel, lora: LoraConfig): Promise<VerifyOptions["heldOut"]> {
  const tokens = await tokenizeDocuments(base.tokenizer, (await loadJsonl(path)).items);
  return {
    loss: async (w: LoraWeights) => {
      const a = LoraAdapter.init(base.model.config, lora);
      a.assign(w);
      const r = await evaluateLoss(base.model, a, tokens, { seqLen: base.model.contextLength, batchSize: 16 });
      a.dispose();
      return r.meanLoss;
    },
  };
}
