/** Progress for long work: a redrawn bar on a terminal, plain log lines (every `every` steps) otherwise. */
import type { StepInfo } from "./train.js";

export function progressPrinter(
  label: string,
  options: { stream?: NodeJS.WriteStream; every?: number } = {},
): (s: StepInfo) => void {
  const stream = options.stream ?? process.stderr;
  const tty = Boolean(stream.isTTY) && !process.env.CI;
  const every = options.every ?? 25;
  return (s) => {
    const evalText = s.eval ? ` | held-out loss ${s.eval.meanLoss.toFixed(3)} ppl ${s.eval.perplexity.toFixed(1)}` : "";
    const speed = `${Math.round(s.tokensPerSec)} tok/s`;
    const core = `step ${s.step}/${s.steps} loss ${s.loss.toFixed(3)} lr ${s.lr.toExponential(2)} ${speed}${evalText}`;
    if (tty) {
      const width = 24;
      const filled = Math.round((width * s.step) / s.steps);
      stream.write(`\r${label} [${"#".repeat(filled)}${".".repeat(width - filled)}] ${core}\x1b[K`);
      if (s.step === s.steps) stream.write("\n");
    } else if (s.step === 1 || s.step % every === 0 || s.step === s.steps || s.eval) {
      stream.write(`${label} ${core}\n`);
    }
  };
}
