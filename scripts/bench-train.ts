/**
 * Training throughput on the reference config — 4 layers, d_model 128, 4 heads, context 64, batch 8, vocab 4096,
 * LoRA r 8 on q and v — for each tfjs backend present, with peak RSS; one client training one adapter data-parallel
 * on 1 and 2 threads; one client alone and two at once, each in a worker thread of its own (what the second core adds
 * with no coordination at all); then, when Debian's python3-torch is installed, the same model and step in PyTorch
 * (scripts/bench_train_torch.py) on the same thread count, and the ratio; the cost of one slice's forward and
 * backward at 1, 4 and 8 rows alone and at 4 beside a busy worker (what bounds data parallelism at this size); then
 * a real LLM's shape (SmolLM2-135M, or Qwen2.5-0.5B with --llm; random BF16 weights in the Hub layout, LoRA r 8 on
 * q, k, v, o, batch 2, sequence 128) data-parallel on 1 and 2 threads, with the process's RSS, beside PyTorch on the
 * same checkpoint and thread counts (scripts/bench_llm_torch.py).
 *
 *   npx tsx scripts/bench-train.ts [--steps 12] [--rounds 3] [--llm-steps 3] [--llm smollm2-135m|qwen2.5-0.5b]
 *     [--no-llm] [--json]
 */
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { initBackend, tf, type BackendName } from "../node/model/backend.js";
import { GPT, DEFAULT_GPT_CONFIG } from "../node/model/gpt.js";
import { LoraAdapter, DEFAULT_LORA_CONFIG } from "../node/model/lora.js";
import { sliceLossAndGradients, train } from "../node/train/train.js";
import { GradientPool } from "../node/train/parallel.js";
import { loadBaseModel, parseBaseModel, readBaseBytes } from "../node/model/checkpoint.js";
import { MODELS, writeRandomCheckpoint } from "./llm-checkpoint.js";

const arg = (k: string, d: number) =>
  process.argv.includes(k) ? Number(process.argv[process.argv.indexOf(k) + 1]) : d;
const steps = arg("--steps", 12);
const llmSteps = arg("--llm-steps", 3);
const rounds = arg("--rounds", 3);
const llmName = process.argv.includes("--llm") ? process.argv[process.argv.indexOf("--llm") + 1]! : "smollm2-135m";
const LLM_LABEL = { "smollm2-135m": "SmolLM2-135M", "qwen2.5-0.5b": "Qwen2.5-0.5B" }[llmName];
if (!LLM_LABEL || !MODELS[llmName]) throw new Error(`--llm: one of ${Object.keys(MODELS).join(", ")}`);
const B = 8;
const T = 64;
const cfg = DEFAULT_GPT_CONFIG;

async function measure(backend: string): Promise<{ tokensPerSec: number; msPerStep: number }> {
  await initBackend(backend, true);
  const gpt = GPT.init(cfg, 1);
  const lora = LoraAdapter.init(cfg, DEFAULT_LORA_CONFIG, 2);
  const tokens = Int32Array.from({ length: 50_000 }, (_, i) => (i * 2654435761) % cfg.vocabSize);
  await train({ gpt, lora, tokens, config: { steps: 2, batchSize: B, seqLen: T } }); // warm-up (kernel set-up)
  const r = await train({ gpt, lora, tokens, config: { steps, batchSize: B, seqLen: T } });
  gpt.dispose();
  lora.dispose();
  return { tokensPerSec: r.tokensPerSec, msPerStep: (r.seconds * 1000) / r.steps };
}

/** A worker thread running `code` (an ES module; node/'s TypeScript through tsx), given `workerData`. */
function inlineWorker(code: string, workerData?: unknown): Worker {
  return new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`), {
    workerData,
    execArgv: ["--import", "tsx"],
    env: { ...process.env, FOK_QUIET_BACKEND: "1" },
  });
}

/** A module of node/ as a quoted file URL, for code run in a worker from a string. */
const moduleUrl = (path: string) => JSON.stringify(new URL(`../node/${path}`, import.meta.url).href);

/**
 * Two clients that share nothing but the machine, each training its own adapter in a worker thread (batch 8, one
 * thread each, after 30 warm-up steps): in `rounds` alternating rounds, one of them training alone, then both at
 * once; the medians of the one's tokens/s and of both together. What the second core adds to this workload with no
 * coordination at all — the machine's own ceiling for two threads of it.
 */
async function twoClients(rounds: number): Promise<{ one: number; two: number }> {
  const code = `
    import { parentPort } from "node:worker_threads";
    const { initBackend } = await import(${moduleUrl("model/backend.ts")});
    const { GPT, DEFAULT_GPT_CONFIG } = await import(${moduleUrl("model/gpt.ts")});
    const { LoraAdapter, DEFAULT_LORA_CONFIG } = await import(${moduleUrl("model/lora.ts")});
    const { train } = await import(${moduleUrl("train/train.ts")});
    await initBackend("wasm", true);
    const gpt = GPT.init(DEFAULT_GPT_CONFIG, 1);
    const lora = LoraAdapter.init(DEFAULT_GPT_CONFIG, DEFAULT_LORA_CONFIG, 2);
    const tokens = Int32Array.from({ length: 50000 }, (_, i) => (i * 2654435761) % DEFAULT_GPT_CONFIG.vocabSize);
    const config = { batchSize: 8, seqLen: 64 };
    await train({ gpt, lora, tokens, config: { ...config, steps: 30 } });
    parentPort.postMessage("ready");
    parentPort.on("message", async () => {
      const r = await train({ gpt, lora, tokens, config: { ...config, steps: ${2 * steps} } });
      parentPort.postMessage(r.tokens);
    });
  `;
  const workers = [0, 1].map(() => inlineWorker(code));
  await Promise.all(workers.map((w) => new Promise((r) => w.once("message", r)))); // both warmed up
  /** Aggregate tokens/s of `these` clients training at once. */
  const together = async (these: Worker[]) => {
    const t0 = performance.now();
    const done = these.map((w) => new Promise<number>((r) => w.once("message", r)));
    these.forEach((w) => w.postMessage("go"));
    const tokens = (await Promise.all(done)).reduce((a, b) => a + b, 0);
    return tokens / ((performance.now() - t0) / 1000);
  };
  const [one, two]: number[][] = [[], []];
  for (let round = 0; round < rounds; round++) {
    one.push(await together([workers[0]!]));
    two.push(await together(workers));
  }
  await Promise.all(workers.map((w) => w.terminate()));
  return { one: median(one), two: median(two) };
}

/**
 * One client, one adapter, data-parallel (parallel.ts) on the committed base model (the reference config with a
 * context of 256, trained at 64) on 1 and on 2 threads, in `rounds` alternating rounds of 2 × `steps` steps after 30
 * of warm-up each (a worker starts cold: its JIT and wasm tier-up compete with the training, and its speed settles
 * only after some 20 to 40 steps, measured; a client trains hundreds of steps a round, so the steady state is timed):
 * the median tokens/s of each, so that the machine's drift over a run weighs on both alike.
 */
async function dataParallel(rounds: number): Promise<{ threads: number; tokensPerSec: number; msPerStep: number }[]> {
  await initBackend("wasm", true);
  const baseBytes = await readBaseBytes("models/base");
  const { model } = parseBaseModel(baseBytes);
  const pool = await GradientPool.start({ baseBytes, lora: DEFAULT_LORA_CONFIG }, 2);
  const tokens = Int32Array.from({ length: 50_000 }, (_, i) => (i * 2654435761) % model.config.vocabSize);
  const config = { batchSize: B, seqLen: T };
  const clients = [undefined, pool].map((p) => ({
    pool: p,
    lora: LoraAdapter.init(model.config, DEFAULT_LORA_CONFIG, 2),
  }));
  for (const c of clients) await train({ gpt: model, ...c, tokens, config: { ...config, steps: 30 } });
  const rates: number[][] = [[], []];
  for (let round = 0; round < rounds; round++)
    for (const [i, c] of clients.entries()) {
      const r = await train({ gpt: model, ...c, tokens, config: { ...config, steps: 2 * steps } });
      rates[i]!.push(r.tokensPerSec);
    }
  await pool.close();
  clients.forEach((c) => c.lora.dispose());
  model.dispose();
  return rates.map((r, i) => ({ threads: i + 1, tokensPerSec: median(r), msPerStep: (1000 * B * T) / median(r) }));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * Where one training step's time goes on wasm: the forward and backward pass of one batch (the loss and the LoRA
 * gradients; AdamW is a few small ops), each kernel's time summed by op, largest first.
 */
async function profileStep(): Promise<{ op: string; calls: number; ms: number }[]> {
  await initBackend("wasm", true);
  const gpt = GPT.init(cfg, 1);
  const lora = LoraAdapter.init(cfg, DEFAULT_LORA_CONFIG, 2);
  const ids = Int32Array.from({ length: B * (T + 1) }, (_, i) => (i * 2654435761) % cfg.vocabSize);
  const x = tf.tensor2d(ids.slice(0, B * T), [B, T], "int32");
  const y = tf.tensor2d(ids.slice(B), [B, T], "int32");
  const step = () => {
    const { value, grads } = tf.variableGrads(() => gpt.loss(x, y, lora, true), lora.variables());
    tf.dispose([value, ...Object.values(grads)]);
  };
  step(); // kernels set up
  const info = await tf.profile(step);
  const byOp = new Map<string, { calls: number; ms: number }>();
  for (const k of info.kernels) {
    const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    const e = byOp.get(k.name) ?? { calls: 0, ms: 0 };
    byOp.set(k.name, { calls: e.calls + 1, ms: e.ms + ms });
  }
  tf.dispose([x, y]);
  gpt.dispose();
  lora.dispose();
  return [...byOp].map(([op, e]) => ({ op, ...e })).sort((a, b) => b.ms - a.ms);
}

/**
 * What one slice of a micro-batch costs on this thread (forward and backward, the committed base) at 1, 4 and 8
 * rows alone, and at 4 rows while a worker thread computes 4-row slices of its own beside it — what each thread of a
 * 2-thread step computes, with no coordination and no optimizer step at all. Alternating rounds (the worker paused,
 * then running), medians over them. The part of a slice that does not shrink with the rows is paid by every thread,
 * so 8 rows alone / 4 rows beside a worker estimates what a 2-thread step can gain over one thread (an estimate:
 * the worker here computes without the pauses a real step has).
 */
async function sliceCosts(rounds: number): Promise<{ rows: number; ms: number; beside?: boolean }[]> {
  await initBackend("wasm", true);
  const { model } = parseBaseModel(await readBaseBytes("models/base"));
  model.params.forEach((v) => (v.trainable = false));
  const lora = LoraAdapter.init(model.config, DEFAULT_LORA_CONFIG, 2);
  const V = model.config.vocabSize;
  const batch = (rows: number) => {
    const ids = (k: number) => Int32Array.from({ length: rows * T }, (_, i) => ((i + k) * 2654435761) % V);
    return { x: ids(0), y: ids(1), w: null, rows, T };
  };
  const time = async (rows: number, n: number) => {
    const b = batch(rows);
    const t0 = performance.now();
    for (let i = 0; i < n; i++) await sliceLossAndGradients(model, lora, lora.variables(), b);
    return (performance.now() - t0) / n;
  };
  // control[0]: 0 pause, 1 compute, 2 exit (this thread); control[1]: 1 while a slice runs (the worker)
  const control = new Int32Array(new SharedArrayBuffer(8));
  const worker = besideWorker(control);
  await new Promise((resolve) => worker.once("message", resolve));
  const set = (command: number, busy: number) => {
    Atomics.store(control, 0, command);
    Atomics.notify(control, 0);
    while (Atomics.load(control, 1) !== busy) Atomics.wait(control, 1, 1 - busy, 5);
  };
  await time(8, 30); // warm-up: JIT and wasm tier-up
  // each round: the worker paused for the slices alone, then computing for the last, beside it
  const kinds: { rows: number; beside?: boolean }[] = [
    { rows: 1 },
    { rows: 4 },
    { rows: 8 },
    { rows: 4, beside: true },
  ];
  const series = kinds.map((k) => ({ ...k, ms: [] as number[] }));
  for (let round = 0; round < rounds; round++)
    for (const s of series) {
      if (s.beside) set(1, 1);
      else set(0, 0);
      s.ms.push(await time(s.rows, 5));
    }
  set(2, 0);
  await worker.terminate();
  model.dispose();
  lora.dispose();
  return series.map((s) => ({ rows: s.rows, ms: median(s.ms), ...(s.beside && { beside: true }) }));
}

/** A worker computing 4-row slices of the committed base while control[0] is 1 (see sliceCosts). */
function besideWorker(control: Int32Array): Worker {
  const code = `
    import { parentPort, workerData } from "node:worker_threads";
    const { initBackend } = await import(${moduleUrl("model/backend.ts")});
    const { parseBaseModel, readBaseBytes } = await import(${moduleUrl("model/checkpoint.ts")});
    const { LoraAdapter, DEFAULT_LORA_CONFIG } = await import(${moduleUrl("model/lora.ts")});
    const { sliceLossAndGradients } = await import(${moduleUrl("train/train.ts")});
    await initBackend("wasm", true);
    const { model } = parseBaseModel(await readBaseBytes(${JSON.stringify(join(process.cwd(), "models/base"))}));
    const lora = LoraAdapter.init(model.config, DEFAULT_LORA_CONFIG, 3);
    const ids = (k) => Int32Array.from({ length: 4 * ${T} }, (_, i) => ((i + k) * 40503) % model.config.vocabSize);
    const b = { x: ids(0), y: ids(1), w: null, rows: 4, T: ${T} };
    const c = workerData;
    parentPort.postMessage("ready");
    for (;;) {
      const command = Atomics.load(c, 0);
      if (command === 2) break;
      if (command === 0) { Atomics.store(c, 1, 0); Atomics.notify(c, 1); Atomics.wait(c, 0, 0); continue; }
      Atomics.store(c, 1, 1);
      Atomics.notify(c, 1);
      await sliceLossAndGradients(model, lora, lora.variables(), b);
    }
    Atomics.store(c, 1, 0);
    Atomics.notify(c, 1);
  `;
  return inlineWorker(code, control);
}

const LLM_B = 2;
const LLM_T = 128;

/**
 * The `--llm` model's shape (SmolLM2-135M by default) data-parallel on 1 and 2 threads (LoRA r 8 on q, k, v, o;
 * batch 2, sequence 128), each after one warm-up step, with the process's RSS once trained (the second worker's
 * base copy is the difference); then PyTorch on the same checkpoint at the same thread counts.
 */
async function llmDataParallel(): Promise<Record<string, unknown>[]> {
  const dir = await mkdtemp(join(tmpdir(), "fok-bench-train-"));
  const out: Record<string, unknown>[] = [];
  try {
    await writeRandomCheckpoint(dir, MODELS[llmName]!);
    await initBackend("wasm", true);
    const base = await loadBaseModel(dir);
    const baseBytes = await readBaseBytes(dir);
    const lora = { r: 8, alpha: 16, dropout: 0, targetModules: ["q", "k", "v", "o"] };
    const tokens = Int32Array.from({ length: 8 * LLM_T }, (_, i) => (i * 104729) % 257);
    const config = { batchSize: LLM_B, seqLen: LLM_T, warmupSteps: 0 };
    for (const threads of [1, 2]) {
      const pool = threads > 1 ? await GradientPool.start({ baseBytes, lora }, threads) : undefined;
      const adapter = LoraAdapter.init(base.model.config, lora, 2);
      await train({ gpt: base.model, lora: adapter, tokens, pool, config: { ...config, steps: 1 } });
      const r = await train({ gpt: base.model, lora: adapter, tokens, pool, config: { ...config, steps: llmSteps } });
      const rssMb = Math.round(process.memoryUsage().rss / 2 ** 20);
      await pool?.close();
      adapter.dispose();
      out.push({ runtime: `${LLM_LABEL}, tfjs-wasm data-parallel`, threads, tokensPerSec: r.tokensPerSec, rssMb });
    }
    base.model.dispose();
    for (const threads of [1, 2]) {
      const args = [dir, LLM_T, llmSteps, threads, LLM_B].map(String);
      const py = spawnSync(python, [join(import.meta.dirname, "bench_llm_torch.py"), ...args], { encoding: "utf8" });
      const runtime = `${LLM_LABEL}, PyTorch`;
      if (py.status === 0) out.push({ runtime, threads, tokensPerSec: JSON.parse(py.stdout).trainTokensPerSec });
      else
        out.push({ runtime, threads, skipped: (py.stderr || "python3-torch not installed").trim().split("\n").pop() });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return out;
}

// Debian's python3-torch lives under /usr/bin/python3 (a pyenv python3 earlier on PATH would not see it)
const python = process.env.FOK_PYTHON ?? (existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3");

const rows: Record<string, unknown>[] = [];
/** A 1-thread and a 2-thread figure measured in alternating rounds share one peak RSS: given on the 2-thread row. */
const peakOfPair = (threads: number) =>
  threads === 2 ? { peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024) } : {};
for (const backend of ["tensorflow-gpu", "tensorflow", "webgpu", "wasm", "cpu"] as BackendName[]) {
  try {
    const r = await measure(backend);
    rows.push({
      runtime: `tfjs-${backend}`,
      threads: 1,
      tokensPerSec: Math.round(r.tokensPerSec),
      msPerStep: Math.round(r.msPerStep),
      peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    });
  } catch (e) {
    rows.push({ runtime: `tfjs-${backend}`, skipped: (e as Error).message.split("\n")[0] });
  }
}
for (const r of await dataParallel(rounds))
  rows.push({
    runtime: `tfjs-wasm, one client data-parallel (committed base), median of ${rounds}`,
    threads: r.threads,
    tokensPerSec: Math.round(r.tokensPerSec),
    msPerStep: Math.round(r.msPerStep),
    ...peakOfPair(r.threads),
  });
const profile = await profileStep();
const parallel = rows.filter((r) => String(r.runtime).includes("data-parallel")).map((r) => r.tokensPerSec as number);
const clients = await twoClients(rounds);
for (const [threads, rate] of [
  [1, clients.one],
  [2, clients.two],
] as const)
  rows.push({
    runtime: `tfjs-wasm, ${threads === 1 ? "one client" : "two clients at once"} in worker threads (median)`,
    threads,
    tokensPerSec: Math.round(rate),
    ...peakOfPair(threads),
  });

for (const threads of [1, 2]) {
  const py = spawnSync(
    python,
    [join(import.meta.dirname, "bench_train_torch.py"), "--steps", String(steps), "--threads", String(threads)],
    { encoding: "utf8" },
  );
  if (py.status === 0)
    rows.push({
      runtime: `pytorch ${threads === 1 ? "" : "(2 threads)"}`.trim(),
      threads,
      ...JSON.parse(py.stdout.trim().split("\n").pop()!),
    });
  else
    rows.push({
      runtime: `pytorch (${threads} thread${threads > 1 ? "s" : ""})`,
      skipped: (py.stderr || py.error?.message || "python3-torch not installed").trim().split("\n").pop(),
    });
}
const slices = await sliceCosts(rounds);
const llm = process.argv.includes("--no-llm") ? [] : await llmDataParallel();
const llmRate = (runtime: string, threads: number) =>
  llm.find((r) => String(r.runtime).includes(runtime) && r.threads === threads)?.tokensPerSec as number | undefined;
const wasm = rows.find((r) => r.runtime === "tfjs-wasm")?.tokensPerSec as number | undefined;
const torch1 = rows.find((r) => r.runtime === "pytorch" && r.threads === 1)?.tokensPerSec as number | undefined;

if (process.argv.includes("--json"))
  console.log(
    JSON.stringify(
      {
        rows,
        wasmOverTorch: wasm && torch1 ? wasm / torch1 : null,
        dataParallelScaling: parallel[1]! / parallel[0]!,
        twoClientsScaling: clients.two / clients.one,
        stepProfile: profile,
        sliceCosts: slices,
        llm: { model: llmName, rows: llm },
      },
      null,
      2,
    ),
  );
else {
  console.log(
    `reference config: ${cfg.nLayer} layers, d ${cfg.nEmbd}, ${cfg.nHead} heads, context ${T}, batch ${B}, ` +
      `vocab ${cfg.vocabSize}, LoRA r 8 on q,v; ${steps} timed steps`,
  );
  console.log("| runtime | threads | tokens/s | ms/step | peak RSS MB |\n| --- | ---: | ---: | ---: | ---: |");
  for (const r of rows) {
    if (r.skipped) console.log(`| ${r.runtime} | - | skipped: ${r.skipped} | | |`);
    else
      console.log(
        `| ${r.runtime} | ${r.threads} | ${r.tokensPerSec} | ${r.msPerStep ?? "-"} | ${r.peakRssMb ?? "-"} |`,
      );
  }
  if (wasm && torch1) console.log(`tfjs-wasm / PyTorch (1 thread): ${(wasm / torch1).toFixed(2)}`);
  console.log(`one client on 2 threads / on 1 (data-parallel): ${(parallel[1]! / parallel[0]!).toFixed(2)}x`);
  console.log(
    `two clients at once / one alone (nothing shared but the machine): ${(clients.two / clients.one).toFixed(2)}x`,
  );
  const cost = (n: number, beside = false) => slices.find((c) => c.rows === n && !!c.beside === beside)!.ms;
  console.log(
    `one slice's forward and backward on this thread (median of ${rounds}): 1 row ${cost(1).toFixed(1)} ms, ` +
      `4 rows ${cost(4).toFixed(1)}, 8 rows ${cost(8).toFixed(1)}; 4 rows beside a worker computing its own ` +
      `${cost(4, true).toFixed(1)} ms: two such slices, with no exchange and no AdamW, would step ` +
      `${(cost(8) / cost(4, true)).toFixed(2)}x as fast as one thread (${(cost(8) / cost(4)).toFixed(2)}x ` +
      `were the threads not slowing each other)`,
  );
  if (llm.length) {
    console.log(
      `\n${LLM_LABEL} shape, LoRA r 8 on q,k,v,o, batch ${LLM_B}, sequence ${LLM_T}, ${llmSteps} timed steps`,
    );
    console.log("| runtime | threads | tokens/s | RSS MB |\n| --- | ---: | ---: | ---: |");
    for (const r of llm) {
      const rate = r.skipped ? `skipped: ${r.skipped}` : (r.tokensPerSec as number).toFixed(1);
      console.log(`| ${r.runtime} | ${r.threads} | ${rate} | ${r.rssMb ?? "-"} |`);
    }
    for (const t of [1, 2]) {
      const [ours, torch] = [llmRate("tfjs", t), llmRate("PyTorch", t)];
      if (ours && torch)
        console.log(`${LLM_LABEL}, ${t} thread${t > 1 ? "s" : ""}: tfjs / PyTorch ${(ours / torch).toFixed(2)}`);
    }
    const [one, two] = [llmRate("tfjs", 1), llmRate("tfjs", 2)];
    if (one && two) console.log(`${LLM_LABEL} on 2 threads / on 1 (data-parallel): ${(two / one).toFixed(2)}x`);
  }
  const total = profile.reduce((a, p) => a + p.ms, 0);
  console.log(`\none step's forward and backward on wasm, by op (${total.toFixed(1)} ms in kernels):`);
  console.log("| op | calls | ms | share |\n| --- | ---: | ---: | ---: |");
  for (const p of profile.slice(0, 12))
    console.log(`| ${p.op} | ${p.calls} | ${p.ms.toFixed(1)} | ${((100 * p.ms) / total).toFixed(1)}% |`);
}
tf.disposeVariables();
process.exit(0);
