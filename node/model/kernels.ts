/**
 * Gradients that keep wasm on its fast path. tfjs-backend-wasm multiplies fast only 2-D, non-transposed operands;
 * the stock BatchMatMul gradient asks for transposed products, which run ~10x slower there. This one transposes
 * explicitly first, so every product in the backward pass is a plain one.
 */
import * as tf from "@tensorflow/tfjs";
import { nativeBlas, type NativeBlas } from "./native.js";

let registered = false;

export function registerFastGradients(): void {
  if (registered) return;
  registered = true;
  const swapLast = (t: tf.Tensor) => {
    const perm = t.shape.map((_, i) => i);
    [perm[t.rank - 1], perm[t.rank - 2]] = [perm[t.rank - 2]!, perm[t.rank - 1]!];
    return tf.transpose(t, perm);
  };
  // silence tfjs' "overriding the gradient" warning for this one deliberate override
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    tf.registerGradient({
      kernelName: tf.BatchMatMul,
      inputsToSave: ["a", "b"],
      gradFunc: (dy, saved, attrs) => {
        const [a, b] = saved as [tf.Tensor, tf.Tensor];
        const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
        const g = dy as tf.Tensor;
        // x·y with either transposed: by the product's own flags on the native BLAS (free there), else explicitly
        const mm = (x: tf.Tensor, tx: boolean, y: tf.Tensor, ty: boolean) =>
          native ? tf.matMul(x, y, tx, ty) : tf.matMul(tx ? swapLast(x) : x, ty ? swapLast(y) : y);
        if (!transposeA && !transposeB) return { a: () => mm(g, false, b, true), b: () => mm(a, true, g, false) };
        if (!transposeA && transposeB) return { a: () => mm(g, false, b, false), b: () => mm(g, true, a, false) };
        if (transposeA && !transposeB) return { a: () => mm(b, false, g, true), b: () => mm(a, false, g, false) };
        return { a: () => mm(b, true, g, true), b: () => mm(g, true, a, true) };
      },
    });
    // wasm has no UnsortedSegmentSum, which the stock Gather gradient needs (only pre-training reaches it: LoRA
    // never differentiates the embedding). For a row lookup, d(table) = onehot(indices)ᵀ · dy.
    tf.registerGradient({
      kernelName: tf.GatherV2,
      inputsToSave: ["x", "indices"],
      gradFunc: (dy, saved, attrs) => {
        const [x, indices] = saved as [tf.Tensor, tf.Tensor];
        const { axis, batchDims } = attrs as unknown as { axis: number; batchDims: number };
        if (axis !== 0 || batchDims !== 0 || x.rank !== 2 || indices.rank !== 1) {
          throw new Error(`gather gradient implemented for row lookups only (axis 0, 2-D table, 1-D indices)`);
        }
        return {
          x: () => tf.matMul(tf.transpose(tf.oneHot(indices as tf.Tensor1D, x.shape[0]!)), dy as tf.Tensor2D),
          indices: () => tf.zerosLike(indices),
        };
      },
    });
  } finally {
    console.warn = warn;
  }
  // The engine clones every tensor it saves for the backward pass through the Identity kernel, and wasm's Identity
  // copies the bytes (about 200 copies of [512, 128] per training step on the reference config). Tensors are
  // immutable, so the clone can share the buffer by reference count, as the cpu backend's Identity does.
  // Same for Cast to the dtype a tensor already has (the Multiply gradient casts its saved operand to float32):
  // share the buffer; a real conversion goes to wasm's own Cast.
  const cast = tf.getKernel(tf.Cast, "wasm");
  if (cast) {
    tf.unregisterKernel(tf.Cast, "wasm");
    tf.registerKernel({
      ...cast,
      kernelFunc: (args) => {
        const x = args.inputs.x as tf.TensorInfo;
        return x.dtype === (args.attrs as { dtype: string }).dtype
          ? shareBuffer(x, args.backend)
          : cast.kernelFunc(args);
      },
    });
  }
  tf.unregisterKernel(tf.Identity, "wasm");
  tf.registerKernel({
    kernelName: tf.Identity,
    backendName: "wasm",
    kernelFunc: ({ inputs, backend }) => shareBuffer(inputs.x as tf.TensorInfo, backend),
  });
}

/** A new tensor over x's buffer (one more reference to it), as the cpu backend's Identity makes. */
function shareBuffer(x: tf.TensorInfo, backend: unknown): tf.TensorInfo {
  (backend as { incRef(id: object): void }).incRef(x.dataId);
  return { dataId: x.dataId, shape: [...x.shape], dtype: x.dtype };
}

/** What the sliced product needs from tfjs-backend-wasm's backend object (4.22; checked before use). */
interface WasmBackendInternals {
  dataIdMap: { get(dataId: object): { id: number; memoryOffset: number } };
  dataIdNextNumber: number;
  makeOutput(shape: number[], dtype: string): tf.TensorInfo;
  wasm: {
    tfjs: { registerTensor(id: number, size: number, offset: number): void; disposeData(id: number): void };
    cwrap(name: string, ret: null, args: string[]): (...args: unknown[]) => void;
    HEAPU8: Uint8Array;
  };
}

let native: NativeBlas | null = null;

/**
 * Routes wasm's float32 products — BatchMatMul, and the sliced product below — to the machine's BLAS through the
 * optional native addon (native.ts), on the operands where they lie in the wasm heap: no copies. Returns the BLAS
 * library in use, or null when the addon is absent, disabled or finds no BLAS (then nothing changes). Products the
 * addon does not take (other dtypes, batch shapes that broadcast both ways) go to wasm's own kernel.
 */
export function registerNativeMatMul(): string | null {
  if (native) return native.library();
  const { blas } = nativeBlas();
  const backend = tf.findBackend("wasm") as unknown as WasmBackendInternals | null;
  // the heap must be a plain ArrayBuffer (N-API reads no SharedArrayBuffer: wasm's threaded build keeps its own)
  const heapOk = backend?.wasm?.HEAPU8 instanceof Uint8Array && backend.wasm.HEAPU8.buffer instanceof ArrayBuffer;
  if (!blas || !backend || !heapOk || backend.dataIdMap == null) return null;
  const wasmKernel = tf.getKernel(tf.BatchMatMul, "wasm");
  if (!wasmKernel) return null;
  native = blas;
  tf.unregisterKernel(tf.BatchMatMul, "wasm");
  tf.registerKernel({
    kernelName: tf.BatchMatMul,
    backendName: "wasm",
    setupFunc: wasmKernel.setupFunc,
    kernelFunc: (args) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      const { transposeA, transposeB } = args.attrs as { transposeA: boolean; transposeB: boolean };
      const [ra, rb] = [a.shape.length, b.shape.length];
      const M = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
      const K = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
      const K2 = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
      const N = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
      const outer = tf.broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
      const [batchA, batchB] = [
        tf.util.sizeFromShape(a.shape.slice(0, -2)),
        tf.util.sizeFromShape(b.shape.slice(0, -2)),
      ];
      const batch = tf.util.sizeFromShape(outer);
      const simple = (batchA === batch || batchA === 1) && (batchB === batch || batchB === 1);
      if (a.dtype !== "float32" || b.dtype !== "float32" || K !== K2 || !simple)
        return (wasmKernel.kernelFunc as (x: typeof args) => tf.TensorInfo)(args); // its own checks and errors
      const be = args.backend as unknown as WasmBackendInternals;
      const out = be.makeOutput([...outer, M, N], "float32");
      const strides: [number, number] = [batchA === 1 ? 0 : M * K, batchB === 1 ? 0 : K * N];
      nativeBatch(be, batch, [M, N, K], [a, b, out], strides, [transposeA, transposeB]);
      return out;
    },
  });
  return blas.library();
}

/**
 * n products op(A_i)·op(B_i) → [M, N] on the native BLAS, the tensors where they lie in the wasm heap (read after
 * `makeOutput`, which may have grown it); `strides` in floats between A's and B's matrices (0: one, repeated,
 * default: packed). False, doing nothing, when the native products are not in use.
 */
function nativeBatch(
  be: WasmBackendInternals,
  n: number,
  [M, N, K]: [number, number, number],
  [a, b, out]: tf.TensorInfo[],
  [sa, sb] = [M * K, K * N],
  [ta, tb] = [false, false],
): boolean {
  if (!native) return false;
  if (n * M * N === 0) return true;
  const off = (t: tf.TensorInfo) => be.dataIdMap.get(t.dataId).memoryOffset;
  const heap = be.wasm.HEAPU8.buffer as ArrayBuffer;
  native.sgemmBatched(heap, n, +ta, +tb, M, N, K, off(a!), sa, off(b!), sb, off(out!));
  return true;
}

/** Whether wasm's products run on the native BLAS (registerNativeMatMul succeeded). */
export function nativeProducts(): string | null {
  return native?.library() ?? null;
}

export const SLICED_MATMUL = "FokSlicedMatMul";
let slicedRegistered: boolean | null = null;

/**
 * A kernel for [n, M, K]·[n, K, N] on wasm that runs n 2-D products through the backend's own BatchMatMul entry
 * point, each on a view into the operands' memory (a tensor id registered at an offset inside the buffer and
 * dropped right after). wasm runs a 2-D product with XNNPACK, a batched one with a generic loop about 5x slower;
 * slicing with tf.unstack would copy every slice through the slow Slice kernel instead. No gradient: it is used
 * only inside ops that define their own (attention.ts). Returns false when the backend's internals are not what
 * this was written against, and callers fall back to tf.matMul.
 */
export function registerSlicedMatMul(): boolean {
  if (slicedRegistered !== null) return slicedRegistered;
  const backend = tf.findBackend("wasm") as unknown as WasmBackendInternals | null;
  slicedRegistered =
    backend != null &&
    typeof backend.wasm?.tfjs?.registerTensor === "function" &&
    typeof backend.wasm.tfjs.disposeData === "function" &&
    typeof backend.wasm.cwrap === "function" &&
    typeof backend.dataIdNextNumber === "number" &&
    backend.dataIdMap != null;
  if (!slicedRegistered) return false;
  const matmul = backend!.wasm.cwrap(tf.BatchMatMul, null, [
    "number",
    "array",
    "number",
    "number",
    "array",
    "number",
    "number",
    "number",
    "number",
  ]);
  tf.registerKernel({
    kernelName: SLICED_MATMUL,
    backendName: "wasm",
    kernelFunc: ({ inputs, backend: b }) => {
      const be = b as unknown as WasmBackendInternals;
      if (be !== backend)
        throw new Error(`${SLICED_MATMUL}: the wasm backend was re-created after the kernel was registered`);
      const a = inputs.a as tf.TensorInfo;
      const y = inputs.b as tf.TensorInfo;
      const [n, M, K] = a.shape as [number, number, number];
      const [n2, K2, N] = y.shape as [number, number, number];
      if (
        a.dtype !== "float32" ||
        y.dtype !== "float32" ||
        a.shape.length !== 3 ||
        y.shape.length !== 3 ||
        n !== n2 ||
        K !== K2
      ) {
        throw new Error(`${SLICED_MATMUL}: need float32 [n, M, K] and [n, K, N], got [${a.shape}] and [${y.shape}]`);
      }
      const out = be.makeOutput([n, M, N], "float32");
      if (nativeBatch(be, n, [M, N, K], [a, y, out])) return out;
      const offA = be.dataIdMap.get(a.dataId).memoryOffset;
      const offB = be.dataIdMap.get(y.dataId).memoryOffset;
      const offO = be.dataIdMap.get(out.dataId).memoryOffset;
      const shape = (r: number, c: number) => new Uint8Array(new Int32Array([1, r, c]).buffer);
      const [sa, sb] = [shape(M, K), shape(K, N)];
      for (let i = 0; i < n; i++) {
        const ids = [be.dataIdNextNumber++, be.dataIdNextNumber++, be.dataIdNextNumber++] as const;
        be.wasm.tfjs.registerTensor(ids[0], M * K, offA + i * M * K * 4);
        be.wasm.tfjs.registerTensor(ids[1], K * N, offB + i * K * N * 4);
        be.wasm.tfjs.registerTensor(ids[2], M * N, offO + i * M * N * 4);
        try {
          matmul(ids[0], sa, 3, ids[1], sb, 3, 0, 0, ids[2]);
        } finally {
          // forgets the views (and their cached XNNPACK operators); frees nothing
          ids.forEach((id) => be.wasm.tfjs.disposeData(id));
        }
      }
      return out;
    },
  });
  return true;
}
