/**
 * Picks the TensorFlow.js backend, in this order of preference: tfjs-node-gpu, tfjs-node (both optional native
 * packages that install only where their libtensorflow download works), WebGPU (where the `webgpu` package finds a
 * GPU adapter), wasm, cpu. `FOK_BACKEND` (or the `backend` argument) forces one. The choice is printed once.
 */
import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-wasm";
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { FokError } from "../errors.js";
import { registerFastGradients, registerNativeMatMul } from "./kernels.js";

export type BackendName = "tensorflow-gpu" | "tensorflow" | "webgpu" | "wasm" | "cpu";
export const BACKEND_PREFERENCE: BackendName[] = ["tensorflow-gpu", "tensorflow", "webgpu", "wasm", "cpu"];

/** A forced backend that cannot start. */
export class BackendUnavailableError extends FokError {
  constructor(
    readonly backend: string,
    reason: string,
  ) {
    super(`backend ${backend} is not available here: ${reason}`);
  }
}

const require = createRequire(import.meta.url);
const VULKAN_PATHS = [
  "/usr/lib/x86_64-linux-gnu/libvulkan.so.1",
  "/usr/lib/aarch64-linux-gnu/libvulkan.so.1",
  "/usr/lib64/libvulkan.so.1",
  "/usr/lib/libvulkan.so.1",
];
let chosen: BackendName | null = null;

async function tryBackend(name: BackendName): Promise<string | null> {
  try {
    switch (name) {
      case "tensorflow-gpu":
        require("@tensorflow/tfjs-node-gpu");
        break;
      case "tensorflow":
        require("@tensorflow/tfjs-node");
        break;
      case "webgpu": {
        // Dawn needs Vulkan on Linux; without it, say so instead of letting Dawn print its own warning
        if (process.platform === "linux" && !VULKAN_PATHS.some((p) => existsSync(p)))
          return "libvulkan.so.1 not found (apt-get install libvulkan1)";
        const webgpu = require("webgpu");
        Object.assign(globalThis, webgpu.globals);
        // Node 21+ has a navigator without gpu: give it Dawn's
        const nav = ((globalThis as { navigator?: object }).navigator ??= {}) as {
          gpu?: { requestAdapter(): Promise<unknown> };
        };
        if (!nav.gpu) Object.defineProperty(nav, "gpu", { value: webgpu.create([]), configurable: true });
        const adapter = await nav.gpu!.requestAdapter();
        if (!adapter) return "no GPU adapter";
        await import("@tensorflow/tfjs-backend-webgpu" as string);
        break;
      }
      default:
        break;
    }
    const tfName = name === "tensorflow-gpu" ? "tensorflow" : name;
    if (!(await tf.setBackend(tfName))) return "failed to initialise";
    await tf.ready();
    return null;
  } catch (e) {
    return (e as Error).message.split("\n")[0]!;
  }
}

let initializing: Promise<unknown> = Promise.resolve();

/**
 * Initialises and returns the backend: `backend` or $FOK_BACKEND if given (an error if it cannot start), else the
 * first that works in BACKEND_PREFERENCE. Idempotent; concurrent calls run one after another (two racing
 * `tf.setBackend` calls would leave the second on a fallback).
 */
export function initBackend(
  backend: string | undefined = process.env.FOK_BACKEND,
  quiet = false,
): Promise<BackendName> {
  const run = initializing.then(() => withoutStrayHandlers(() => initBackendNow(backend, quiet)));
  initializing = run.catch(() => undefined);
  return run;
}

/**
 * Runs `fn` and removes the process-wide 'uncaughtException' / 'unhandledRejection' listeners it added:
 * tfjs-backend-wasm's emscripten glue installs ones that rethrow every stray error, which would crash a long-running
 * client on any failure outside an awaited call (a chain endpoint going away while ethers polls it). What happens
 * to such errors is the process's decision (node/cli/fok.ts), not the backend's.
 */
async function withoutStrayHandlers<T>(fn: () => Promise<T>): Promise<T> {
  const uncaught = process.listeners("uncaughtException");
  const unhandled = process.listeners("unhandledRejection");
  try {
    return await fn();
  } finally {
    for (const l of process.listeners("uncaughtException"))
      if (!uncaught.includes(l)) process.removeListener("uncaughtException", l);
    for (const l of process.listeners("unhandledRejection"))
      if (!unhandled.includes(l)) process.removeListener("unhandledRejection", l);
  }
}

async function initBackendNow(backend: string | undefined, quiet: boolean): Promise<BackendName> {
  if (chosen && (!backend || backend === chosen)) return chosen;
  const candidates = backend ? [backend as BackendName] : BACKEND_PREFERENCE;
  if (backend && !BACKEND_PREFERENCE.includes(backend as BackendName)) {
    throw new BackendUnavailableError(backend, `unknown; choose one of ${BACKEND_PREFERENCE.join(", ")}`);
  }
  const reasons: string[] = [];
  for (const name of candidates) {
    const why = await tryBackend(name);
    if (why === null) {
      chosen = name;
      registerFastGradients();
      // wasm's products on the machine's BLAS when the optional addon is built (native.ts)
      const blas = name === "wasm" ? registerNativeMatMul() : null;
      const products = blas ? `, products on ${blas}` : "";
      if (!quiet && !process.env.FOK_QUIET_BACKEND) process.stderr.write(`[fok] tfjs backend: ${name}${products}\n`);
      return name;
    }
    reasons.push(`${name}: ${why}`);
    if (backend) throw new BackendUnavailableError(backend, why);
  }
  throw new BackendUnavailableError("any", reasons.join("; "));
}

export { tf };
