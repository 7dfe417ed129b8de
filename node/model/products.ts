/**
 * Plain 2-D products against frozen weights, shared by every model family. While a weight is frozen, tensors derived
 * from it alone (a transpose, a slice) are kept between steps, and the backward pass of x·W is dy·Wᵀ with Wᵀ kept
 * too: no transpose per step, and only x gets a gradient. wasm runs plain 2-D products through XNNPACK and
 * everything else (transpose flags, batched products) far slower, so every model multiplies through here. On the
 * native BLAS (kernels.ts) a transpose is the product's flag and costs nothing: no transposed copy is kept, and a
 * frozen base holds one layout of each weight, not two.
 */
import { tf } from "./backend.js";
import { nativeProducts } from "./kernels.js";

export class FrozenProducts {
  private readonly frozen = new Map<string, { source: object; tensor: tf.Tensor }>();

  /**
   * `make()`, a tensor computed from variable `v` alone. While `v` is frozen the result is kept between calls; it
   * is keyed on the variable's buffer, which every assign replaces, so a merged, trained or reloaded weight is never
   * served stale.
   */
  derived(key: string, v: tf.Variable, make: () => tf.Tensor): tf.Tensor {
    if (v.trainable) return make();
    const hit = this.frozen.get(key);
    if (hit?.source === v.dataId) return hit.tensor;
    hit?.tensor.dispose();
    const tensor = tf.keep(make());
    this.frozen.set(key, { source: v.dataId, tensor });
    return tensor;
  }

  /** x·W for W = `make()` computed from variable `v` alone (v itself by default); see the file's comment. */
  product(x: tf.Tensor2D, key: string, v: tf.Variable, make?: () => tf.Tensor): tf.Tensor2D {
    if (v.trainable) return tf.matMul(x, (make ? make() : v) as tf.Tensor2D);
    const W = (make ? this.derived(key, v, make) : v) as tf.Tensor2D;
    const flags = nativeProducts() !== null;
    const WT = flags ? W : (this.derived(`${key}.T`, v, () => tf.transpose(W)) as tf.Tensor2D);
    return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
      value: tf.matMul(args[0] as tf.Tensor2D, W),
      gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, WT, false, flags),
    }))(x) as tf.Tensor2D;
  }

  /**
   * x·vᵀ for a weight stored [out, in] (nn.Linear's layout). While v is frozen vᵀ is kept (on the native BLAS: the
   * flag, no copy) and the backward pass is dy·v, with v itself: one extra copy of the weight at most, not two.
   */
  productT(x: tf.Tensor2D, key: string, v: tf.Variable): tf.Tensor2D {
    if (v.trainable) return tf.matMul(x, tf.transpose(v) as tf.Tensor2D);
    const flags = nativeProducts() !== null;
    const WT = flags ? (v as tf.Tensor2D) : (this.derived(`${key}.T`, v, () => tf.transpose(v)) as tf.Tensor2D);
    return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
      value: tf.matMul(args[0] as tf.Tensor2D, WT, false, flags),
      gradFunc: (dy: tf.Tensor) => tf.matMul(dy as tf.Tensor2D, v as tf.Tensor2D),
    }))(x) as tf.Tensor2D;
  }

  dispose(): void {
    for (const { tensor } of this.frozen.values()) tensor.dispose();
    this.frozen.clear();
  }
}
