/**
 * Gradients that keep wasm on its fast path. tfjs-backend-wasm multiplies fast only 2-D, non-transposed operands;
 * the stock BatchMatMul gradient asks for transposed products, which run ~10x slower there. This one transposes
 * explicitly first, so every product in the backward pass is a plain one.
 */
import * as tf from "@tensorflow/tfjs";

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
        const mm = (x: tf.Tensor, y: tf.Tensor) => tf.matMul(x, y);
        if (!transposeA && !transposeB) return { a: () => mm(g, swapLast(b)), b: () => mm(swapLast(a), g) };
        if (!transposeA && transposeB) return { a: () => mm(g, b), b: () => mm(swapLast(g), a) };
        if (transposeA && !transposeB) return { a: () => mm(b, swapLast(g)), b: () => mm(a, g) };
        return { a: () => mm(swapLast(b), swapLast(g)), b: () => mm(swapLast(g), swapLast(a)) };
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
}
