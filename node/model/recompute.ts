/**
 * Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"; PyTorch's
 * torch.utils.checkpoint): a block f(x) runs as one op that keeps only its input, and the backward pass runs f again
 * under a tape of its own and backpropagates dy through that. tfjs keeps every saved tensor of every op — copied,
 * on wasm — and every intermediate gradient until the whole backward pass ends, so a 30-layer model's training step
 * holds all layers' activations and all their gradients at once; with each layer recomputed it holds one layer's,
 * plus each layer's input. The price is one more forward pass of each block per step.
 */
import { tf } from "./backend.js";

/** The tfjs engine's tape, which a gradient computed inside another's backward pass would otherwise replace. */
interface EngineTapeState {
  state: { activeTape: unknown };
}

/**
 * f(x) as one op whose gradient is recomputed: `params` are the tensors f reads that need gradients (LoRA
 * variables); every other tensor f reads is treated as a constant. f must compute the same function on every call
 * (seed any randomness), since its backward pass differentiates a second run.
 */
export function recomputed(f: (x: tf.Tensor2D) => tf.Tensor2D, x: tf.Tensor2D, params: tf.Tensor[]): tf.Tensor2D {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const input = args[0] as tf.Tensor2D;
    const save = args[args.length - 1] as tf.GradSaveFunc;
    save([input]);
    return {
      value: f(input), // inside a kernel nothing is taped, so f's intermediates are freed as it goes
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const xs = saved[0] as tf.Tensor2D;
        const engine = tf.engine() as unknown as EngineTapeState;
        // tfjs 4.22 starts a fresh tape (and drops it at the end) when gradients are asked for during a backward
        // pass: put the outer one back, which the outer pass still needs to free its saved tensors
        const outer = engine.state.activeTape;
        try {
          const { value, grads } = tf.engine().gradients(() => f(xs), [xs, ...params], dy, true);
          value.dispose();
          return grads.map((g, i) => g ?? tf.zerosLike(i === 0 ? xs : params[i - 1]!));
        } finally {
          engine.state.activeTape = outer;
        }
      },
    };
  });
  return op(x, ...params) as tf.Tensor2D;
}
