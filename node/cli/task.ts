/**
 * `fok task create`: pins the base model and creates a training task on-chain. `fok task propose-aggregator` (task
 * admin) and `fok task accept` (the proposed account) hand the aggregator role over in two steps; `fok task close`
 * ends an open round past its deadline without a global adapter (the aggregator; anyone a round later).
 */
import { sha256Hex } from "../digest.js";
import { InvalidArgumentError } from "../errors.js";
import { checkTaskParams, loraConfigHash } from "../federation/task-config.js";
import {
  address,
  id,
  int,
  ledgerFrom,
  loraFrom,
  parse,
  positive,
  privacyFrom,
  dpFrom,
  withStore,
  type CliIO,
} from "./options.js";
import { parseBaseModel, readBaseBytes } from "../model/checkpoint.js";
import { initBackend } from "../model/backend.js";
import type { DpParams, PrivacyMode } from "../chain/index.js";
import { fmtEpsilon } from "../dp/privacy.js";

/** What a DP task will spend, round by round, as `fok task create` prints it. */
export function dpPlanLine(dp: DpParams, privacy: PrivacyMode, clip: number, planned: number[]): string {
  const placement =
    privacy === "secure" ? "distributed noise, added by the clients" : "central noise, added by the aggregator";
  const eps = planned.map(fmtEpsilon).join(", ");
  return (
    `  client-level DP (${placement}): σ ${dp.noiseMultiplier} × clip ${clip}, δ ${dp.delta}; ` +
    `ε after each round: ${eps} (budget ${dp.epsilonMax})`
  );
}

export async function taskCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  const { values: v } = parse(rest);
  if (sub === "propose-aggregator") {
    const [task, proposed] = [id(v, "task"), address(v, "aggregator")];
    await (await ledgerFrom(v, io)).proposeAggregator(task, proposed);
    return io.out(`task ${task}: ${proposed} proposed as aggregator; it takes over with \`fok task accept\``);
  }
  if (sub === "accept") {
    const task = id(v, "task");
    const ledger = await ledgerFrom(v, io);
    await ledger.acceptAggregator(task);
    return io.out(`task ${task}: ${(await ledger.taskInfo(task)).aggregator} is now its aggregator`);
  }
  if (sub === "close") {
    const task = id(v, "task");
    const ledger = await ledgerFrom(v, io);
    const { currentRound } = await ledger.taskInfo(task);
    const round = await ledger.readRound(task, currentRound);
    if (!round) throw new InvalidArgumentError(`task ${task} has no open round`);
    await ledger.closeRound(task, currentRound, round.startCid);
    return io.out(`task ${task}: round ${currentRound} closed without a global adapter`);
  }
  if (sub !== "create") throw new InvalidArgumentError(`unknown: fok task ${sub ?? ""}`);
  const aggregator = address(v, "aggregator");
  const lora = loraFrom(v);
  positive(v, "max-update-norm"); // checked before anything is read or pinned
  const params = {
    aggregator,
    loraConfigHash: loraConfigHash(lora),
    strategy: v.strategy as string,
    minUpdates: int(v, "min-updates"),
    roundDuration: int(v, "duration"),
    maxRounds: int(v, "rounds"),
    maxExamples: int(v, "max-examples"),
    maxUpdateNorm: positive(v, "max-update-norm"),
    ...privacyFrom(v, int(v, "min-updates")),
    dp: dpFrom(v, int(v, "rounds")),
  };
  const planned = checkTaskParams({ ...params, baseModelCid: "", baseModelSha256: "" });
  const bytes = await readBaseBytes(v.base as string);
  await initBackend(undefined, true);
  parseBaseModel(bytes).model.dispose(); // a task must not commit to a base model nobody can load
  const ledger = await ledgerFrom(v, io);
  await withStore(v, async (store) => {
    const cid = await store.add(bytes);
    const task = await ledger.createTask({ ...params, baseModelCid: cid, baseModelSha256: sha256Hex(bytes) });
    const mode = params.privacy === "secure" ? `, secure aggregation with threshold ${params.threshold}` : "";
    io.out(`task ${task} created (base model ${cid}${mode})`);
    if (params.dp) io.out(dpPlanLine(params.dp, params.privacy, params.maxUpdateNorm, planned));
  });
}
