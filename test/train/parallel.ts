import { expect } from "chai";
import { initBackend } from "../../node/model/backend.js";
import { parseBaseModel } from "../../node/model/checkpoint.js";
import { LoraAdapter } from "../../node/model/lora.js";
import type { Worker } from "node:worker_threads";
import { sliceLossAndGradients, train, type TrainConfig } from "../../node/train/train.js";
import {
  GradientPool,
  autoThreads,
  combineSlices,
  sharedBytes,
  splitRows,
  workerBytesEstimate,
  type BatchRows,
} from "../../node/train/parallel.js";
import { LORA, tinyBase } from "../fixtures/tiny-federation.js";

/**
 * The tolerance of data-parallel training against one thread, after 3 AdamW steps at lr 1e-2: the loss within
 * 1e-6 relative, every LoRA weight within 1e-6 absolute (1e-4 of a step). The two differ only in float32
 * summation order (measured: 1.3e-7 and 3.5e-8).
 */
const LOSS_RTOL = 1e-6;
const WEIGHT_ATOL = 1e-6;

describe("node/train data parallelism", function () {
  this.timeout(120_000);
  let baseBytes: Uint8Array;
  let tokens: Int32Array;
  let pool: GradientPool;
  before(async function () {
    await initBackend("wasm", true);
    const base = await tinyBase();
    baseBytes = base.baseBytes;
    const text = "the heart pumps blood through the arteries and veins. the tumour was removed in surgery. ";
    tokens = Int32Array.from(await base.tokenizer.encode(text.repeat(10)));
    pool = await GradientPool.start({ baseBytes, lora: LORA }, 2);
  });
  after(async () => pool?.close());

  /** The loss and the adapter after `config`'s steps from the same start, on one thread or over the pool. */
  async function trained(config: Partial<TrainConfig>, over?: GradientPool, lossWeights?: Float32Array) {
    const { model } = parseBaseModel(baseBytes);
    const lora = LoraAdapter.init(model.config, LORA, 5);
    const r = await train({ gpt: model, lora, tokens, lossWeights, pool: over, config });
    const weights = await lora.exportWeights();
    lora.dispose();
    model.dispose();
    return { loss: r.finalLoss, weights };
  }

  const largestDifference = (a: Awaited<ReturnType<typeof trained>>, b: Awaited<ReturnType<typeof trained>>) => {
    let most = 0;
    for (const [m, w] of a.weights)
      for (const k of ["A", "B"] as const) {
        const other = b.weights.get(m)![k];
        w[k].forEach((v, i) => (most = Math.max(most, Math.abs(v - other[i]!))));
      }
    return most;
  };

  it("steps on 2 threads as on one: the same loss and adapter within float32 summation order", async function () {
    const config = { steps: 3, batchSize: 4, seqLen: 16, lr: 1e-2, warmupSteps: 0 };
    const one = await trained(config);
    const two = await trained(config, pool);
    expect(Math.abs(two.loss - one.loss) / one.loss).to.be.below(LOSS_RTOL);
    expect(largestDifference(one, two)).to.be.below(WEIGHT_ATOL);
    // the adapter did move: the comparison is not between two untouched adapters
    const moved = [...two.weights.values()].some((w) => w.B.some((v) => Math.abs(v) > 1e-3));
    expect(moved).to.equal(true);
  });

  it("weighs slices by loss weight: an odd batch, weighted targets, FedProx, accumulation, B only", async function () {
    const config = { steps: 3, batchSize: 3, seqLen: 16, lr: 1e-2, warmupSteps: 0, gradAccum: 2, proxMu: 0.5 };
    // and FFA-LoRA's B only: the workers train the variables the step names
    const ffa = { ...config, freezeA: true };
    const [oneB, twoB] = [await trained(ffa), await trained(ffa, pool)];
    expect([
      Math.abs(twoB.loss - oneB.loss) / oneB.loss < LOSS_RTOL,
      largestDifference(oneB, twoB) < WEIGHT_ATOL,
    ]).to.deep.equal([true, true]);
    // every third target counts for nothing, the others 1 or 3: slices of one and two rows weigh differently
    const weights = Float32Array.from(tokens, (_, i) => (i % 3 === 0 ? 0 : 1 + 2 * (i % 2)));
    const one = await trained(config, undefined, weights);
    const two = await trained(config, pool, weights);
    expect(Math.abs(two.loss - one.loss) / one.loss).to.be.below(LOSS_RTOL);
    expect(largestDifference(one, two)).to.be.below(WEIGHT_ATOL);
  });

  /** A micro-batch of `rows` rows of 8 tokens from the text, and a local slice computed on this thread. */
  async function microBatch(rows: number) {
    const T = 8;
    const x = tokens.slice(0, rows * T);
    const y = tokens.slice(1, rows * T + 1);
    const { model } = parseBaseModel(baseBytes);
    const lora = LoraAdapter.init(model.config, LORA, 5);
    const values = await Promise.all(lora.variables().map(async (v) => (await v.data()) as Float32Array));
    const local = (r: BatchRows) => sliceLossAndGradients(model, lora, lora.variables(), r);
    const dispose = () => (lora.dispose(), model.dispose());
    return { batch: { x, y, w: null, rows, T }, values, local, dispose };
  }

  it("fails a slice a worker cannot compute with GradientWorkerError, and serves the next", async function () {
    const m = await microBatch(2);
    try {
      const err = await pool.gradients(m.batch, m.values.slice(1), false, m.local).catch((e: Error) => e);
      expect([err.constructor.name, (err as Error).message]).to.deep.equal([
        "GradientWorkerError",
        `gradient worker: ${m.values.length - 1} adapter values for an adapter of ${m.values.length} variables`,
      ]);
      const next = await pool.gradients(m.batch, m.values, false, m.local);
      expect([Number.isFinite(next.loss), next.weight, next.grads.length]).to.deep.equal([true, 16, m.values.length]);
    } finally {
      m.dispose();
    }
  });

  it("waits for the workers when this thread's slice fails: the next micro-batch gets its own", async function () {
    const [a, b] = [await microBatch(2), await microBatch(4)];
    try {
      const failing = async () => {
        throw new Error("this thread's slice failed");
      };
      const err = await pool.gradients(a.batch, a.values, false, failing).catch((e: Error) => e);
      expect((err as Error).message).to.equal("this thread's slice failed");
      // a worker's late answer for `a` taken for `b`'s would make these two differ
      const [first, again] = [
        await pool.gradients(b.batch, b.values, false, b.local),
        await pool.gradients(b.batch, b.values, false, b.local),
      ];
      expect([first.loss, first.weight]).to.deep.equal([again.loss, 32]);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it("fails the micro-batch in flight and every later one when a worker exits, instead of waiting", async function () {
    const m = await microBatch(2);
    const lost = await GradientPool.start({ baseBytes, lora: LORA }, 2);
    try {
      // the worker is ended behind the pool's back, as the OS or a fatal error would end it
      // the moment its slice has been handed to it (this thread's own slice starts only then)
      const [worker] = (lost as unknown as { workers: Worker[] }).workers;
      const endWorker = async (r: BatchRows) => (await worker!.terminate(), m.local(r));
      const inFlight = await lost.gradients(m.batch, m.values, false, endWorker).catch((e: Error) => e);
      const errors = [inFlight, await lost.gradients(m.batch, m.values, false, m.local).catch((e: Error) => e)];
      expect(errors.map((e) => [e.constructor.name, (e as Error).message])).to.deep.equal([
        ["GradientWorkerError", "gradient worker: exited (code 1)"],
        ["GradientWorkerError", "gradient worker: exited (code 1)"],
      ]);
    } finally {
      await lost.close();
      m.dispose();
    }
  });

  it("splits rows as evenly as they go and combines slices by weight, leaving out a weightless one", function () {
    const T = 2;
    const batch = {
      x: Int32Array.from([1, 2, 3, 4, 5, 6]),
      y: Int32Array.from([2, 3, 4, 5, 6, 7]),
      w: null,
      rows: 3,
      T,
    };
    expect(splitRows(batch, 2).map((s) => [...s.x])).to.deep.equal([
      [1, 2, 3, 4],
      [5, 6],
    ]);
    expect(splitRows(batch, 4).map((s) => s.rows)).to.deep.equal([1, 1, 1, 0]);
    const combined = combineSlices([
      { loss: 2, weight: 3, grads: [Float32Array.from([1, 0])] },
      { loss: NaN, weight: 0, grads: [] },
      { loss: 4, weight: 1, grads: [Float32Array.from([5, 4])] },
    ]);
    expect([combined.loss, combined.weight, [...combined.grads[0]!]]).to.deep.equal([2.5, 4, [2, 1]]);
  });

  it("--threads auto: the cores less those reserved, at least 1, workers as 80% of free memory fits", function () {
    const GiB = 2 ** 30;
    const plenty = { freeBytes: 64 * GiB, workerBytes: GiB };
    expect(autoThreads({ cores: 8, reserve: 2, ...plenty })).to.deep.equal({ threads: 6, why: "8 cores, 2 reserved" });
    expect(autoThreads({ cores: 2, reserve: 5, ...plenty })).to.deep.equal({ threads: 1, why: "2 cores, 5 reserved" });
    // 80% of 4 GiB holds 3 workers of 1 GiB: this thread and 3
    expect(autoThreads({ cores: 16, reserve: 0, freeBytes: 4 * GiB, workerBytes: GiB })).to.deep.equal({
      threads: 4,
      why: "16 cores, 0 reserved, memory for 3 workers of ~1.0 GB in 4.0 GB free",
    });
    expect(autoThreads({ cores: 4, reserve: 0, freeBytes: GiB, workerBytes: 2 * GiB }).threads).to.equal(1);
    // the estimate: 256 MiB a thread, 1.7 times the base in float32 on the native products, 2.5 times on wasm's
    // (a 500 MiB base: 1,106 MiB and 1,506 MiB)
    expect([true, false].map((native) => workerBytesEstimate(500 * 2 ** 20, native) / 2 ** 20)).to.deep.equal([
      1106, 1506,
    ]);
  });

  it("hands the workers one shared copy of the base's bytes", function () {
    const plain = Uint8Array.from([1, 2, 3, 250]);
    const shared = sharedBytes(plain);
    expect([shared.buffer instanceof SharedArrayBuffer, [...shared]]).to.deep.equal([true, [1, 2, 3, 250]]);
    expect(sharedBytes(shared)).to.equal(shared);
  });
});
