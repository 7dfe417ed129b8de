/** What training, evaluation and federation need of a model, whichever family it is (GPT-2 or the Llama family). */
import type { tf } from "./backend.js";
import type { LoraAdapter, ModelConfig } from "./lora.js";

export interface CausalLM {
  readonly config: ModelConfig;
  /** Every weight by checkpoint key. */
  readonly params: Map<string, tf.Variable>;
  /** The longest sequence the model computes as its family defines it. */
  readonly contextLength: number;
  /**
   * Logits [B·T, vocab] for token ids [B, T]; with `lora`, its updates on the targeted projections. With `rows`
   * (indices into the B·T positions), the logits of those positions only, [rows, vocab]: scoring needs a few
   * positions of each sequence, and the output head is the largest product of a small model.
   */
  forward(idx: tf.Tensor2D, lora?: LoraAdapter | null, training?: boolean, rows?: tf.Tensor1D | null): tf.Tensor2D;
  /** Mean next-token cross-entropy (nats); with `weights` [B, T], Σ w·loss / Σ w. */
  loss(
    idx: tf.Tensor2D,
    targets: tf.Tensor2D,
    lora?: LoraAdapter | null,
    training?: boolean,
    weights?: tf.Tensor2D | null,
  ): tf.Scalar;
  exportWeights(): Promise<Map<string, { shape: number[]; data: Float32Array }>>;
  dispose(): void;
}
