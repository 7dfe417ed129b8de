/** `fok task create`: pins the base model and creates a training task on-chain. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { sha256Hex } from "../digest.js";
import { InvalidArgumentError } from "../errors.js";
import { loraConfigHash } from "../federation/task-config.js";
import { address, int, ledgerFrom, loraFrom, parse, positive, withStore, type CliIO } from "./options.js";
import { parseBaseModel } from "../model/checkpoint.js";
import { initBackend } from "../model/backend.js";

export async function taskCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  if (sub !== "create") throw new InvalidArgumentError(`unknown: fok task ${sub ?? ""}`);
  const { values: v } = parse(rest);
  const aggregator = address(v, "aggregator");
  const lora = loraFrom(v);
  positive(v, "max-update-norm"); // checked before anything is read or pinned
  const bytes = await readFile(join(v.base as string, "model.safetensors"));
  await initBackend(undefined, true);
  parseBaseModel(bytes).gpt.dispose(); // a task must not commit to a base model nobody can load
  const ledger = await ledgerFrom(v, io);
  await withStore(v, async (store) => {
    const cid = await store.add(bytes);
    const task = await ledger.createTask({
      baseModelCid: cid,
      baseModelSha256: sha256Hex(bytes),
      loraConfigHash: loraConfigHash(lora),
      aggregator,
      strategy: v.strategy as string,
      minUpdates: int(v, "min-updates"),
      roundDuration: int(v, "duration"),
      maxRounds: int(v, "rounds"),
      maxExamples: int(v, "max-examples"),
      maxUpdateNorm: positive(v, "max-update-norm"),
    });
    io.out(`task ${task} created (base model ${cid})`);
  });
}
