/**
 * The optional native products (native/fok_blas.c, built by `npm run build:native`, which `npm ci` runs and which
 * gives up quietly without a C compiler): the machine's BLAS on the wasm heap. Absent, disabled ($FOK_NATIVE=0) or
 * without a BLAS, every product stays on wasm's XNNPACK.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";

export interface NativeBlas {
  /** The BLAS library loaded, e.g. libopenblas.so.0. */
  library(): string;
  setThreads(n: number): void;
  /** See native/fok_blas.c: C_i = op(A_i)·op(B_i) on `heap`, offsets in bytes, strides in floats. */
  sgemmBatched(
    heap: ArrayBuffer,
    batch: number,
    transA: number,
    transB: number,
    M: number,
    N: number,
    K: number,
    aOffset: number,
    aStride: number,
    bOffset: number,
    bStride: number,
    cOffset: number,
  ): void;
}

/** Where the build puts the addon. */
export const NATIVE_ADDON = new URL("../../build/native/fok_blas.node", import.meta.url);

let loaded: { blas: NativeBlas | null; why: string } | null = null;

/** The native BLAS when built, enabled and a BLAS library was found; else null and why. */
export function nativeBlas(): { blas: NativeBlas | null; why: string } {
  if (loaded) return loaded;
  if (process.env.FOK_NATIVE === "0") return (loaded = { blas: null, why: "disabled by FOK_NATIVE=0" });
  if (!existsSync(NATIVE_ADDON)) return (loaded = { blas: null, why: "not built (npm run build:native)" });
  try {
    const blas = createRequire(import.meta.url)(NATIVE_ADDON.pathname) as NativeBlas;
    if (!blas.library()) return (loaded = { blas: null, why: "no BLAS library found (libopenblas0 or libblas3)" });
    // one BLAS thread per tfjs thread: parallelism is the caller's (clients, data-parallel workers)
    blas.setThreads(1);
    return (loaded = { blas, why: blas.library() });
  } catch (e) {
    return (loaded = { blas: null, why: `cannot load: ${(e as Error).message.split("\n")[0]}` });
  }
}
