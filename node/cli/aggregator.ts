/** `fok aggregator run`: opens the task's first round if needed, then finalizes every round until the task ends. */
import { InvalidArgumentError } from "../errors.js";
import { initBackend } from "../model/backend.js";
import { Aggregator } from "../federation/aggregator.js";
import { ledgerFrom, loraFrom, parse, taskModel, withPeers, withStore, type CliIO } from "./options.js";

export async function aggregatorCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  if (sub !== "run") throw new InvalidArgumentError(`unknown: fok aggregator ${sub ?? ""}`);
  const { values: v } = parse(rest);
  const ledger = await ledgerFrom(v, io);
  const lora = loraFrom(v);
  await withStore(v, async (store) => {
    await initBackend();
    const { task, history, base } = await taskModel(v, ledger, store, lora);
    const aggregator = new Aggregator({
      ledger,
      store,
      task,
      model: base.model.config,
      lora,
      baseModelSha256: base.sha256,
      expectedUpdates: v.expected ? Number(v.expected) : undefined,
      log: io.log,
    });
    await withPeers(v, ledger, store, task, io, { announce: true }, async () => {
      if (history.rounds.length === 0) await aggregator.openFirstRound();
      const reports = await aggregator.run();
      io.log(`aggregator: task ${task} done, ${reports.length} rounds finalized by this run`);
    });
  });
}
