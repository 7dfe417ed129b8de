/**
 * `fok verify` for a secure round, from public data only: every dealing, masked vector and reveal against its
 * on-chain digest; every revealed share against its dealer's commitment (a share of the wrong kind for the dealer's
 * fate, or both shares of one client, fails by name); the contributors are exactly the survivors, weighted by their
 * claimed examples; and the unmasked sum, re-computed here with the aggregator's own code, gives the published
 * global adapter's bytes. No individual update is ever needed or seen. A closed secure round is checked to have
 * been one that could not be unmasked.
 */
import type { FinalizedRound, RoundHistory, TaskHistory } from "../chain/index.js";
import { sha256Hex } from "../digest.js";
import { unitsToWeights } from "../aggregate/index.js";
import { serializeAdapter, type ParsedAdapter } from "../model/adapter.js";
import type { LoraConfig, ModelConfig } from "../model/lora.js";
import {
  B_ONLY_STRATEGIES,
  gatherSecureRound,
  secureAggregate,
  secureBlobLimit,
  secureSpec,
  type VerifiedFetch,
} from "../secure/round.js";
import { checkReveals } from "../secure/unmask.js";

/** What the secure checks need of the verification they are part of. */
export interface SecureVerification {
  history: TaskHistory;
  model: ModelConfig;
  lora: LoraConfig;
  add(round: number | null, identity: number | null, check: string, ok: boolean, detail: string): void;
  fetchVerified(
    round: number,
    identity: number | null,
    what: string,
    cid: string,
    sha: string,
    maxBytes?: number,
  ): Promise<Uint8Array | null>;
}

/** The secure checks of one round whose lineage and submitters were checked already. */
export async function verifySecureRound(v: SecureVerification, round: RoundHistory, start: ParsedAdapter | null) {
  const r = round.round;
  if (!start) {
    v.add(r, null, "secure aggregate", false, "cannot unmask without the round's start adapter");
    return;
  }
  const spec = secureSpec(v.history, v.history.task, r, v.history.threshold, start.weights, v.history.dpConfig);
  const fetch: VerifiedFetch = (what, identity, cid, digest) =>
    v.fetchVerified(r, identity, what, cid, digest, secureBlobLimit(spec));
  const { pub, problems } = await gatherSecureRound(spec, round, fetch);
  for (const p of problems) v.add(r, p.identity, p.check, false, p.detail);
  const reveals = checkReveals(pub).problems;
  for (const p of reveals) v.add(r, p.revealer, "secure reveal", false, p.problem);
  const bad = new Set(reveals.map((p) => p.revealer));
  for (const id of [...pub.reveals.keys()].filter((id) => !bad.has(id)))
    v.add(
      r,
      id,
      "secure reveal",
      true,
      "every revealed share is of the kind the chain calls for and matches its commitment",
    );
  const fin = round.finalized;
  if (fin) survivorsAndWeights(v, round, fin);
  let bytes: Uint8Array | null = null;
  let why = "";
  try {
    const agg = await secureAggregate(pub, spec, round, start.weights, B_ONLY_STRATEGIES.has(v.history.strategy));
    bytes = serializeAdapter(v.model, v.lora, agg.weights, {
      kind: "global",
      task: v.history.task,
      round: r,
      baseModelSha256: v.history.baseModelSha256,
      strategy: v.history.strategy,
    });
  } catch (e) {
    why = (e as Error).message;
  }
  if (fin) {
    const got = bytes && sha256Hex(bytes);
    const ok = got === fin.globalSha256;
    const detail = ok
      ? `unmasking the survivors' sum from public data gives the published bytes (${pub.reveals.size} reveals)`
      : bytes
        ? `unmasking the survivors' sum gives ${got}, published ${fin.globalSha256}`
        : `cannot unmask from public data: ${why}`;
    v.add(r, null, "secure aggregate", ok, detail);
  } else if (round.closed) {
    const n = round.submissions.length;
    const few = n < v.history.minUpdates;
    const ok = few || bytes === null;
    const detail = few
      ? `closed: ${n} masked updates, fewer than ${v.history.minUpdates}`
      : ok
        ? `closed: cannot unmask from public data: ${why}`
        : `closed though the ${n} survivors' sum unmasks from public data`;
    v.add(r, null, "closed round", ok, detail);
  }
}

/** The contributors are exactly the survivors, weighted by their claimed examples (uniformly in a DP task). */
function survivorsAndWeights(v: SecureVerification, round: RoundHistory, fin: FinalizedRound) {
  const survivors = [...round.submissions].sort((a, b) => a.identity - b.identity);
  const ids = survivors.map((s) => s.identity);
  const same = ids.join() === fin.contributors.join();
  v.add(
    round.round,
    null,
    "survivors",
    same,
    same
      ? `the contributors are the round's survivors [${ids.join(", ")}]`
      : `the round lists [${fin.contributors.join(", ")}], its survivors are [${ids.join(", ")}]`,
  );
  const uniform = v.history.dpConfig !== null;
  const expected = unitsToWeights(survivors.map((s) => (uniform ? 1 : s.numExamples)));
  const ok = expected.length === fin.weights.length && expected.every((w, i) => w === fin.weights[i]);
  v.add(
    round.round,
    null,
    "weights",
    ok,
    ok
      ? `recorded weights are the survivors' ${uniform ? "equal shares (DP)" : "example shares"}`
      : `recorded weights ${fin.weights.join(",")} differ from ${expected.join(",")}`,
  );
}
