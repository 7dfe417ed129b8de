/**
 * A gradient worker of GradientPool (parallel.ts): the frozen base and a LoRA adapter of its own; for each message
 * {rows, values, freezeA} it sets the adapter to `values` (every A and B) and answers the mean loss of `rows` and its
 * gradients for the trained variables (B only with freezeA).
 */
import { parentPort, workerData } from "node:worker_threads";
import { initBackend, tf } from "../model/backend.js";
import { parseBaseModel } from "../model/checkpoint.js";
import { LoraAdapter } from "../model/lora.js";
import type { BatchRows, GradientWorkerInit } from "./parallel.js";
import { sliceLossAndGradients } from "./train.js";

const port = parentPort!;
const init = workerData as GradientWorkerInit;
try {
  await initBackend(undefined, true);
  const { model } = parseBaseModel(init.baseBytes);
  const lora = LoraAdapter.init(model.config, init.lora);
  model.params.forEach((v) => (v.trainable = false));
  port.on("message", async (m: { rows: BatchRows; values: Float32Array[]; freezeA: boolean }) => {
    try {
      const all = lora.variables();
      if (m.values.length !== all.length)
        throw new Error(`${m.values.length} adapter values for an adapter of ${all.length} variables`);
      tf.tidy(() => all.forEach((v, i) => v.assign(tf.tensor(m.values[i]!, v.shape))));
      const vars = m.freezeA ? lora.variables("B") : all;
      const r = await sliceLossAndGradients(model, lora, vars, m.rows);
      port.postMessage(
        { type: "result", result: r },
        r.grads.map((g) => g.buffer as ArrayBuffer),
      );
    } catch (e) {
      port.postMessage({ type: "error", message: (e as Error).message });
    }
  });
  port.postMessage({ type: "ready" });
} catch (e) {
  port.postMessage({ type: "error", message: (e as Error).message });
}
