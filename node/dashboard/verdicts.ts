/**
 * What the dashboard shows next to each task and round: `fok verify`'s verdict, run here from the chain and the
 * store alone (the model config from the base model's header, the LoRA config from round 1's start adapter, whose
 * hash verify compares with the task's), and recomputed only when the task's history changed. Institution names
 * come from each identity's metadata document, marked when their hash is the identity's institutionId.
 */
import { institutionName, IDENTITY_METADATA_MAX_BYTES, type TaskHistory } from "../chain/index.js";
import type { AdapterStore } from "../store/index.js";
import { baseModelConfig } from "../model/checkpoint.js";
import { adapterLoraConfig } from "../model/adapter.js";
import { verifyTask, type Check } from "../provenance/verify.js";
import type { FederationLedger } from "../chain/index.js";

export interface TaskVerdict {
  /** null when verify could not run here (`error` says why). */
  ok: boolean | null;
  checks: number;
  failed: Check[];
  error?: string;
}

/** The largest start adapter read to learn the LoRA config (the task's model is not known before). */
const START_ADAPTER_LIMIT = 64 * 1024 * 1024;

export class Verdicts {
  private readonly verdicts = new Map<number, { key: string; verdict: TaskVerdict }>();
  private readonly names = new Map<string, { name: string; matches: boolean } | null>();

  constructor(
    private readonly ledger: FederationLedger,
    private readonly store: AdapterStore,
  ) {}

  /** verify's verdict on the task, from cache while its history is unchanged. */
  async of(h: TaskHistory): Promise<TaskVerdict> {
    const key = historyKey(h);
    const cached = this.verdicts.get(h.task);
    if (cached?.key === key) return cached.verdict;
    const verdict = await this.verify(h);
    this.verdicts.set(h.task, { key, verdict });
    return verdict;
  }

  /** The institution name in the metadata document `cid`, or null when it cannot be read or holds none. */
  async institution(cid: string, institutionId: string): Promise<{ name: string; matches: boolean } | null> {
    const key = `${cid} ${institutionId}`;
    if (!this.names.has(key)) {
      let found: { name: string; matches: boolean } | null;
      try {
        found = institutionName(await this.store.get(cid, { maxBytes: IDENTITY_METADATA_MAX_BYTES }), institutionId);
      } catch {
        found = null; // not a CID, not fetchable, too large: shown by its hash
      }
      this.names.set(key, found);
    }
    return this.names.get(key)!;
  }

  private async verify(h: TaskHistory): Promise<TaskVerdict> {
    const first = h.rounds[0];
    if (!first) return { ok: null, checks: 0, failed: [], error: "no round has opened yet" };
    try {
      const base = await this.store.get(h.baseModelCid, { expectedSha256: h.baseModelSha256 });
      const start = await this.store.get(first.startCid, {
        expectedSha256: first.startSha256,
        maxBytes: START_ADAPTER_LIMIT,
      });
      const report = await verifyTask(this.ledger, this.store, h.task, {
        model: baseModelConfig(base),
        lora: adapterLoraConfig(start),
      });
      return { ok: report.ok, checks: report.checks.length, failed: report.checks.filter((c) => !c.ok) };
    } catch (e) {
      return { ok: null, checks: 0, failed: [], error: `${(e as Error).name}: ${(e as Error).message}` };
    }
  }
}

/** Everything in a history that can change a verdict: rounds, their submissions, how each ended. */
function historyKey(h: TaskHistory): string {
  const rounds = h.rounds.map(
    (r) =>
      `${r.round}:${r.submissions.length}:${r.finalized?.transactionHash ?? ""}:${r.closed?.transactionHash ?? ""}`,
  );
  return `${rounds.join("|")}|${h.completed}`;
}
