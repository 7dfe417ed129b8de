/** Runs a LocalTrainer in a worker thread, behind the same trainRound call as the in-thread one. */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { FokError } from "../errors.js";
import type { ClientDataset, RoundJob, RoundOutput } from "./local-trainer.js";
import type { LoraConfig } from "../model/lora.js";

/** A worker failed to start or a round failed inside it. */
export class WorkerTrainingError extends FokError {
  constructor(
    message: string,
    readonly causeName: string,
  ) {
    super(message);
  }
}

export interface RoundTrainer {
  trainRound(job: RoundJob): Promise<RoundOutput>;
  close(): Promise<void>;
}

export class WorkerTrainer implements RoundTrainer {
  private pending: { resolve: (o: RoundOutput) => void; reject: (e: Error) => void } | null = null;
  private constructor(
    private readonly worker: Worker,
    private readonly onStep?: (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => void,
  ) {
    worker.on("message", (msg: { type: string; out?: RoundOutput; message?: string; name?: string; step?: never }) => {
      if (msg.type === "step") this.onStep?.(msg.step!);
      else if (msg.type === "result") {
        const p = this.pending;
        this.pending = null;
        p?.resolve({ ...msg.out!, adapter: new Uint8Array(msg.out!.adapter) });
      } else if (msg.type === "error") {
        const p = this.pending;
        this.pending = null;
        p?.reject(new WorkerTrainingError(msg.message!, msg.name!));
      }
    });
    worker.on("error", (e) => {
      this.pending?.reject(e);
      this.pending = null;
    });
  }

  static async start(
    baseBytes: Uint8Array,
    lora: LoraConfig,
    data: ClientDataset,
    onStep?: WorkerTrainer["onStep"],
  ): Promise<WorkerTrainer> {
    const worker = new Worker(new URL("./worker.ts", import.meta.url), {
      workerData: { baseBytes, lora, data },
      execArgv: ["--import", "tsx"],
      env: { ...process.env, FOK_QUIET_BACKEND: "1" },
    });
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: { type: string; message?: string; name?: string }) => {
        if (m.type === "ready") {
          worker.off("message", onMsg);
          resolve();
        } else if (m.type === "error") reject(new WorkerTrainingError(m.message!, m.name!));
      };
      worker.on("message", onMsg);
      worker.once("error", reject);
    });
    return new WorkerTrainer(worker, onStep);
  }

  trainRound(job: RoundJob): Promise<RoundOutput> {
    if (this.pending)
      return Promise.reject(new WorkerTrainingError("a round is already running in this worker", "Busy"));
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage(job);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}

/** The same LocalTrainer in the calling thread (tests, single-core machines, `--workers 0`). */
export class InlineTrainer implements RoundTrainer {
  private constructor(private readonly inner: import("./local-trainer.js").LocalTrainer) {}

  static async create(
    baseBytes: Uint8Array,
    lora: LoraConfig,
    data: ClientDataset,
    onStep?: (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => void,
  ): Promise<InlineTrainer> {
    const { LocalTrainer } = await import("./local-trainer.js");
    return new InlineTrainer(await LocalTrainer.create(baseBytes, lora, data, onStep));
  }

  /** An inline trainer on a base model already loaded in this thread (a folder streamed by loadBaseModel). */
  static async fromBase(
    base: import("../model/checkpoint.js").BaseModel,
    lora: LoraConfig,
    data: ClientDataset,
    onStep?: (s: { step: number; steps: number; loss: number; tokensPerSec: number }) => void,
    pool?: import("../train/parallel.js").GradientPool,
  ): Promise<InlineTrainer> {
    const { LocalTrainer } = await import("./local-trainer.js");
    return new InlineTrainer(LocalTrainer.fromBase(base, lora, data, onStep, pool));
  }

  trainRound(job: RoundJob): Promise<RoundOutput> {
    return this.inner.trainRound(job);
  }

  async close(): Promise<void> {}
}

/**
 * The same trainers, at most `slots` of them training at any moment (the rest queue in call order). Seven worker
 * threads on two cores train slower together than two at a time (cache and scheduler contention: ~3,200 tok/s in all
 * against ~5,300 for two, reference config on this machine).
 */
export function limitConcurrency(trainers: RoundTrainer[], slots: number): RoundTrainer[] {
  if (!Number.isInteger(slots) || slots < 1) throw new RangeError(`slots must be a positive integer, got ${slots}`);
  let free = slots;
  const waiting: (() => void)[] = [];
  const acquire = () => (free > 0 ? (free--, Promise.resolve()) : new Promise<void>((r) => waiting.push(r)));
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return trainers.map((t) => ({
    async trainRound(job: RoundJob): Promise<RoundOutput> {
      await acquire();
      try {
        return await t.trainRound(job);
      } finally {
        release();
      }
    },
    close: () => t.close(),
  }));
}

/** What a training step reports (for progress lines). */
export type StepReport = { step: number; steps: number; loss: number; tokensPerSec: number };

export interface TrainerOptions {
  /** Train in worker threads, at most one training per core at a time (default); else in this thread. */
  workers: boolean;
  /** Progress of dataset `i`'s training. */
  onStep?: (i: number, s: StepReport) => void;
}

/** One trainer per dataset: worker threads sharing the machine's cores, or inline trainers. */
export async function startTrainers(
  baseBytes: Uint8Array,
  lora: LoraConfig,
  datasets: readonly ClientDataset[],
  o: TrainerOptions,
): Promise<RoundTrainer[]> {
  const trainers = await Promise.all(
    datasets.map((d, i) => {
      const onStep = o.onStep && ((s: StepReport) => o.onStep!(i, s));
      return o.workers
        ? WorkerTrainer.start(baseBytes, lora, d, onStep)
        : InlineTrainer.create(baseBytes, lora, d, onStep);
    }),
  );
  // every trainer shares this one machine: train at most one per core at a time (faster than all at once)
  return o.workers ? limitConcurrency(trainers, availableParallelism()) : trainers;
}
