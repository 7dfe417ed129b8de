/**
 * Real sizes of the Llama family on this machine: random BF16 checkpoints with the exact published configurations of
 * SmolLM2-135M and Qwen2.5-0.5B, written in the Hub layout (2 shards), then for each: load time and peak RSS (the
 * folder streamed: bundle digest + tensors), forward tokens/s (batch 1, sequence 256), LoRA (r 8 on q, k, v, o)
 * training tokens/s at sequence 256 through the same train() the clients use, and the same forward and step in
 * PyTorch on one thread (scripts/reference_llama.py's model, timed by scripts/bench_llm_torch.py) for the ratio.
 *
 *   npx tsx scripts/bench-llm.ts [--models smollm2-135m,qwen2.5-0.5b] [--steps 2] [--seq 256] [--json]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initBackend, tf } from "../node/model/backend.js";
import { loadBaseModel } from "../node/model/checkpoint.js";
import { LoraAdapter } from "../node/model/lora.js";
import { train } from "../node/train/train.js";
import { MODELS, writeRandomCheckpoint } from "./llm-checkpoint.js";

const arg = (k: string, d: string) => (process.argv.includes(k) ? process.argv[process.argv.indexOf(k) + 1]! : d);
const steps = Number(arg("--steps", "2"));
const T = Number(arg("--seq", "256"));

interface Row {
  model: string;
  params: number;
  loadSeconds: number | null;
  peakRssMB: number | null;
  f32MB: number;
  forwardTokensPerSec: number | null;
  trainTokensPerSec: number | null;
  /** Peak tfjs memory during one LoRA training step (weights included). */
  trainPeakMB?: number;
  torchForwardTokensPerSec: number | null;
  torchTrainTokensPerSec: number | null;
  error?: string;
}

async function measure(name: string): Promise<Row> {
  const dir = await mkdtemp(join(tmpdir(), `fok-bench-${name}-`));
  const config = MODELS[name]!;
  const params = await writeRandomCheckpoint(dir, config);
  const row: Row = {
    model: name,
    params,
    loadSeconds: null,
    peakRssMB: null,
    f32MB: Math.round((params * 4) / 2 ** 20),
    forwardTokensPerSec: null,
    trainTokensPerSec: null,
    torchForwardTokensPerSec: null,
    torchTrainTokensPerSec: null,
  };
  try {
    await initBackend("wasm", true);
    const t0 = performance.now();
    const base = await loadBaseModel(dir); // streamed: hashed and moved into the backend tensor by tensor
    row.loadSeconds = (performance.now() - t0) / 1000;
    row.peakRssMB = Math.round(process.resourceUsage().maxRSS / 1024);
    const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % 257);
    for (let k = 0; k < 2; k++) {
      const t1 = performance.now();
      const logits = tf.tidy(() => base.model.forward(tf.tensor2d(ids, [1, T], "int32")));
      await logits.data();
      logits.dispose();
      row.forwardTokensPerSec = T / ((performance.now() - t1) / 1000); // the second run: kernels set up
    }
    process.stderr.write(
      `[bench-llm] ${name}: tfjs holds ${Math.round(tf.memory().numBytes / 2 ** 20)} MB after forward\n`,
    );
    const lora = LoraAdapter.init(base.model.config, {
      r: 8,
      alpha: 16,
      dropout: 0,
      targetModules: ["q", "k", "v", "o"],
    });
    // one LoRA step's peak tfjs memory (each layer recomputed in the backward pass when large: recompute.ts)
    const x = tf.tensor2d(ids, [1, T], "int32");
    const profile = await tf.profile(() => {
      const { value, grads } = tf.variableGrads(() => base.model.loss(x, x, lora, true), lora.variables());
      tf.dispose([value, ...Object.values(grads)]);
    });
    x.dispose();
    row.trainPeakMB = Math.round(profile.peakBytes / 2 ** 20);
    const tokens = Int32Array.from({ length: 4 * T }, (_, i) => (i * 104729) % 257);
    const r = await train({
      gpt: base.model,
      lora,
      tokens,
      config: { steps, batchSize: 1, seqLen: T, warmupSteps: 0 },
    });
    row.trainTokensPerSec = r.tokensPerSec;
    lora.dispose();
    base.model.dispose();
  } catch (e) {
    row.error = `${(e as Error).name}: ${(e as Error).message}`;
  }
  const torch = spawnSync("/usr/bin/python3", ["scripts/bench_llm_torch.py", dir, String(T), String(steps)], {
    encoding: "utf8",
    maxBuffer: 1 << 20,
  });
  if (torch.status === 0) {
    const t = JSON.parse(torch.stdout);
    row.torchForwardTokensPerSec = t.forwardTokensPerSec;
    row.torchTrainTokensPerSec = t.trainTokensPerSec;
  } else if (existsSync("/usr/bin/python3"))
    row.error = (row.error ? row.error + "; " : "") + `torch: ${torch.stderr.trim().split("\n").at(-1)}`;
  await rm(dir, { recursive: true, force: true });
  return row;
}

const rows: Row[] = [];
for (const name of arg("--models", Object.keys(MODELS).join(",")).split(",")) {
  process.stderr.write(`[bench-llm] ${name}…\n`);
  rows.push(await measure(name));
}
if (process.argv.includes("--json")) console.log(JSON.stringify(rows, null, 2));
else {
  const f = (x: number | null, d = 0) => (x === null ? "-" : x.toFixed(d));
  const columns = ["model", "params", "f32 MB", "load s", "peak RSS MB", "fwd tok/s", "train tok/s", "step peak MB"];
  console.log(`| ${[...columns, "torch fwd", "torch train", "tfjs/torch train"].join(" | ")} |`);
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    const ratio =
      r.trainTokensPerSec && r.torchTrainTokensPerSec ? r.trainTokensPerSec / r.torchTrainTokensPerSec : null;
    console.log(
      `| ${r.model} | ${(r.params / 1e6).toFixed(1)}M | ${r.f32MB} | ${f(r.loadSeconds, 1)} | ${f(r.peakRssMB)} | ` +
        `${f(r.forwardTokensPerSec)} | ${f(r.trainTokensPerSec, 1)} | ${f(r.trainPeakMB ?? null)} | ` +
        `${f(r.torchForwardTokensPerSec)} | ` +
        `${f(r.torchTrainTokensPerSec, 1)} | ${f(ratio, 2)} |`,
    );
    if (r.error) console.log(`|   ${r.model}: ${r.error} |`);
  }
}
