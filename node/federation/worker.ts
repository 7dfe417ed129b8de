/**
 * Worker-thread host for LocalTrainer: clients of the one-command demo train in parallel on separate cores. The
 * parent sends {init} once, then {job} per round; the worker answers {ready}, {step}, {result} or {error}.
 */
import { parentPort, workerData } from "node:worker_threads";
import { LocalTrainer, type ClientDataset, type RoundJob } from "./local-trainer.js";
import type { LoraConfig } from "../model/lora.js";

interface Init {
  baseBytes: Uint8Array;
  lora: LoraConfig;
  data: ClientDataset;
}

const port = parentPort!;
const init = workerData as Init;
let trainer: LocalTrainer;
try {
  trainer = await LocalTrainer.create(init.baseBytes, init.lora, init.data, (s) =>
    port.postMessage({ type: "step", step: s }),
  );
  port.postMessage({ type: "ready" });
} catch (e) {
  port.postMessage({ type: "error", message: (e as Error).message, name: (e as Error).name });
}
port.on("message", async (job: RoundJob) => {
  try {
    const out = await trainer.trainRound(job);
    port.postMessage({ type: "result", out }, [out.adapter.buffer as ArrayBuffer]);
  } catch (e) {
    port.postMessage({ type: "error", message: (e as Error).message, name: (e as Error).name });
  }
});
