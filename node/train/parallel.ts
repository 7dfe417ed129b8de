/**
 * Data-parallel LoRA inside one client: `threads − 1` worker threads, each with its own copy of the frozen base,
 * compute the loss and the LoRA gradients of their rows of every micro-batch while this thread computes its own;
 * the gradients are combined in a fixed order, weighted by each slice's share of the batch's loss weight, so one
 * step is the step one thread takes on the whole batch (within float32 summation order). Only the trained
 * variables travel: the adapter's values to the workers before each micro-batch, their gradients back.
 */
import { Worker } from "node:worker_threads";
import { FokError } from "../errors.js";
import type { LoraConfig } from "../model/lora.js";

/** A gradient worker failed to start, or a micro-batch failed inside it. */
export class GradientWorkerError extends FokError {}

/** Rows of a micro-batch, [rows, T] each, row-major. */
export interface BatchRows {
  x: Int32Array;
  y: Int32Array;
  /** Per-target loss weights; null: every target weighs 1. */
  w: Float32Array | null;
  rows: number;
  T: number;
}

/** One slice's mean loss, the loss weight it is a mean over, and the gradient of that mean for each variable. */
export interface SliceGradients {
  loss: number;
  weight: number;
  grads: Float32Array[];
}

/** What a worker is told once: the base model's bytes and the adapter's layout. */
export interface GradientWorkerInit {
  baseBytes: Uint8Array;
  lora: LoraConfig;
}

/** The loss weight of a slice: the sum of its target weights, or its number of targets. */
export function sliceWeight(rows: BatchRows): number {
  if (!rows.w) return rows.rows * rows.T;
  let s = 0;
  for (const v of rows.w) s += v;
  return s;
}

/** Rows [from, to) of `b`, sharing its memory. */
function rowsOf(b: BatchRows, from: number, to: number): BatchRows {
  const T = b.T;
  return {
    x: b.x.subarray(from * T, to * T),
    y: b.y.subarray(from * T, to * T),
    w: b.w ? b.w.subarray(from * T, to * T) : null,
    rows: to - from,
    T,
  };
}

/**
 * Splits `b` into `n` slices of rows as even as they go (the first ones a row longer); a slice may be empty when
 * the batch has fewer rows than `n`.
 */
export function splitRows(b: BatchRows, n: number): BatchRows[] {
  const out: BatchRows[] = [];
  let from = 0;
  for (let i = 0; i < n; i++) {
    const to = from + Math.floor(b.rows / n) + (i < b.rows % n ? 1 : 0);
    out.push(rowsOf(b, from, to));
    from = to;
  }
  return out;
}

/**
 * The whole batch's mean loss and gradients from its slices' (each the mean over its own weight): Σ (W_s / W)·x_s
 * in float64, slices in order. A slice of weight 0 contributes nothing (its mean is undefined).
 */
export function combineSlices(slices: SliceGradients[]): SliceGradients {
  const used = slices.filter((s) => s.weight > 0);
  const total = used.reduce((a, s) => a + s.weight, 0);
  if (used.length === 0 || !(total > 0)) throw new GradientWorkerError("a micro-batch with no loss weight");
  const grads = used[0]!.grads.map((g) => new Float64Array(g.length));
  let loss = 0;
  for (const s of used) {
    const share = s.weight / total;
    loss += share * s.loss;
    s.grads.forEach((g, i) => {
      const acc = grads[i]!;
      for (let k = 0; k < g.length; k++) acc[k] += share * g[k]!;
    });
  }
  return { loss, weight: total, grads: grads.map((g) => new Float32Array(g)) };
}

/** `bytes` in a SharedArrayBuffer (itself when it already is one): workers given it read the same memory. */
export function sharedBytes(bytes: Uint8Array): Uint8Array {
  if (bytes.buffer instanceof SharedArrayBuffer) return bytes;
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
  shared.set(bytes);
  return shared;
}

/**
 * What one gradient worker adds to the process, by estimate from the base's float32 size: ~256 MB for the thread
 * itself (its V8 heap, tfjs and a wasm instance), the base once, and 0.7 of it again for the slice's activations
 * — once more on wasm's own products, which keep each frozen weight in both layouts (products.ts). Measured with
 * `npm run bench:train`: +252 MB for the reference config's 5 MB base; on the native products +1,028 MB for
 * SmolLM2-135M's 513 MB and +3,326 MB for Qwen2.5-0.5B's 1,885 MB; on wasm's, +1,533 MB for SmolLM2-135M.
 */
export function workerBytesEstimate(baseF32Bytes: number, nativeProducts: boolean): number {
  return 256 * 2 ** 20 + (nativeProducts ? 1.7 : 2.5) * baseF32Bytes;
}

/** The thread count `--threads auto` picks, and why in words. */
export interface AutoThreads {
  threads: number;
  why: string;
}

/**
 * `--threads auto`: the machine's cores less those reserved, at least one, and no more workers than 80% of the free
 * memory holds at `workerBytes` each (this thread already holds its base).
 */
export function autoThreads(o: {
  cores: number;
  reserve: number;
  freeBytes: number;
  workerBytes: number;
}): AutoThreads {
  const cores = Math.max(1, o.cores - o.reserve);
  const fit = 1 + Math.floor((0.8 * o.freeBytes) / o.workerBytes);
  const threads = Math.max(1, Math.min(cores, fit));
  const gb = (b: number) => (b / 2 ** 30).toFixed(1);
  const workers = `${fit - 1} worker${fit === 2 ? "" : "s"}`;
  const memory = fit < cores ? `, memory for ${workers} of ~${gb(o.workerBytes)} GB in ${gb(o.freeBytes)} GB free` : "";
  return { threads, why: `${o.cores} cores, ${o.reserve} reserved${memory}` };
}

interface Pending {
  resolve: (r: SliceGradients) => void;
  reject: (e: Error) => void;
}

/** `threads − 1` gradient workers; this thread computes the first slice of every micro-batch itself. */
export class GradientPool {
  private readonly pending = new Map<Worker, Pending>();
  /** Why a worker is gone (it failed or exited): every later micro-batch fails with it, none waits forever. */
  private gone: GradientWorkerError | null = null;

  private constructor(private readonly workers: Worker[]) {
    for (const w of workers) {
      w.on("message", (m: { type: string; result?: SliceGradients; message?: string }) => {
        const p = this.pending.get(w);
        this.pending.delete(w);
        if (m.type === "result") p?.resolve(m.result!);
        else if (m.type === "error") p?.reject(new GradientWorkerError(`gradient worker: ${m.message}`));
      });
      const lost = (why: string) => {
        this.gone ??= new GradientWorkerError(`gradient worker: ${why}`);
        this.pending.get(w)?.reject(this.gone);
        this.pending.delete(w);
      };
      w.on("error", (e) => lost(e.message));
      w.on("exit", (code) => lost(`exited (code ${code})`));
    }
  }

  /** Starts `threads − 1` workers on `init` (each parses the base model once) and waits until all are ready. */
  static async start(init: GradientWorkerInit, threads: number): Promise<GradientPool> {
    if (!Number.isInteger(threads) || threads < 1)
      throw new GradientWorkerError(`threads must be a positive integer, got ${threads}`);
    // one copy of the base's bytes shared by every worker (a plain buffer would be cloned into each)
    const workerData = { ...init, baseBytes: sharedBytes(init.baseBytes) };
    const workers = Array.from(
      { length: threads - 1 },
      () =>
        new Worker(new URL("./gradient-worker.ts", import.meta.url), {
          workerData,
          execArgv: ["--import", "tsx"],
          env: { ...process.env, FOK_QUIET_BACKEND: "1" },
        }),
    );
    try {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve, reject) => {
              w.once("message", (m: { type: string; message?: string }) =>
                m.type === "ready" ? resolve() : reject(new GradientWorkerError(`gradient worker: ${m.message}`)),
              );
              w.once("error", reject);
            }),
        ),
      );
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    return new GradientPool(workers);
  }

  /** Threads in all, this one included. */
  get threads(): number {
    return this.workers.length + 1;
  }

  /**
   * The micro-batch's mean loss and gradients: its rows split over the threads, the workers given `values` (the
   * adapter's current values in `LoraAdapter.variables()` order) and `freezeA` (gradients of B only), this thread's
   * own slice computed by `local` meanwhile.
   */
  async gradients(
    batch: BatchRows,
    values: Float32Array[],
    freezeA: boolean,
    local: (rows: BatchRows) => Promise<SliceGradients>,
  ): Promise<SliceGradients> {
    if (this.gone) throw this.gone;
    const [own, ...rest] = splitRows(batch, this.threads);
    const none = { loss: 0, weight: 0, grads: [] }; // a slice with nothing to learn from (or no rows)
    // the workers' slices are sent first: this thread's own computation blocks it until it is done
    const remote = rest.map((rows, i) => {
      const weight = sliceWeight(rows);
      if (weight === 0) return Promise.resolve(none);
      const w = this.workers[i]!;
      return new Promise<SliceGradients>((resolve, reject) => {
        this.pending.set(w, { resolve: (r) => resolve({ ...r, weight }), reject });
        w.postMessage({ rows, values, freezeA });
      });
    });
    const weight = sliceWeight(own!);
    const mine = weight === 0 ? none : local(own!).then((r) => ({ ...r, weight }));
    // every slice is waited for even when one fails: no worker is left with a slice in flight, whose answer would
    // be taken for the next micro-batch's (a worker's failure is reported after this thread's slice)
    const results = await Promise.allSettled([mine, ...remote]);
    for (const r of results) if (r.status === "rejected") throw r.reason;
    return combineSlices(results.map((r) => (r as PromiseFulfilledResult<SliceGradients>).value));
  }

  async close(): Promise<void> {
    this.gone ??= new GradientWorkerError("the gradient pool is closed");
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
