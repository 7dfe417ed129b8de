/**
 * Compares base, local-only, FedAvg, exact aggregation, FedProx and centralized LoRA on PubMedQA split into
 * non-IID hospitals, through the federation code (node/experiment), and writes a results folder.
 *
 *   npm run experiment -- [--config experiment.json] [--quick] [--dp] [--out results/experiment] [--data ...json]
 *                         [--base DIR]   # ours (models/base), a GPT-2 folder or a Llama-family Hub folder
 *   npm run experiment -- --from results/experiment/results.json --out DIR   # re-render report and plots only
 *
 * A config file holds any fields of ExperimentConfig (node/experiment/run.ts); --quick is the CI smoke size; --dp
 * runs the DP-FedAvg comparison (DP_EXPERIMENT: specialty partition, FedAvg and DP-FedAvg at ε = ∞, 8, 1).
 */
import { parseArgs } from "node:util";
import { readFile } from "node:fs/promises";
import {
  DEFAULT_EXPERIMENT,
  DP_EXPERIMENT,
  QUICK,
  runExperiment,
  type ExperimentConfig,
} from "../node/experiment/run.js";
import { readResults, writeResults } from "../node/experiment/report.js";

const { values } = parseArgs({
  options: {
    config: { type: "string" },
    quick: { type: "boolean", default: false },
    dp: { type: "boolean", default: false },
    out: { type: "string", default: "results/experiment" },
    data: { type: "string" },
    base: { type: "string" },
    "no-workers": { type: "boolean", default: false },
    from: { type: "string" },
  },
});
if (values.from) {
  const saved = readResults(await readFile(values.from, "utf8"));
  const files = await writeResults(values.out!, saved.config, saved.runs, saved.seconds);
  console.log(`wrote ${files.join(", ")} from ${values.from}`);
  process.exit(0);
}
const fromFile = values.config ? (JSON.parse(await readFile(values.config, "utf8")) as Partial<ExperimentConfig>) : {};
const cfg: ExperimentConfig = {
  ...DEFAULT_EXPERIMENT,
  ...(values.dp ? DP_EXPERIMENT : {}),
  ...(values.quick ? QUICK : {}),
  ...fromFile,
  ...(values.data ? { data: values.data } : {}),
  ...(values.base ? { baseDir: values.base } : {}),
  ...(values["no-workers"] ? { workers: false } : {}),
};
const t0 = performance.now();
const runs = await runExperiment(cfg, (l) => process.stderr.write(l + "\n"));
const seconds = (performance.now() - t0) / 1000;
const files = await writeResults(values.out!, cfg, runs, seconds);
console.log(`wrote ${files.join(", ")} in ${seconds.toFixed(0)} s`);
process.exit(0);
