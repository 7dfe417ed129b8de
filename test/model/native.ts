import { expect } from "chai";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { promisify } from "node:util";
import { initBackend, tf } from "../../node/model/backend.js";
import { nativeProducts } from "../../node/model/kernels.js";
import { NATIVE_ADDON, nativeBlas } from "../../node/model/native.js";
import { mulberry32 } from "../../node/random.js";

/** op(A)·op(B) for row-major [.., r, c] arrays, in float64: the reference the native products are held to. */
function reference(a: tf.Tensor, b: tf.Tensor, ta: boolean, tb: boolean): { shape: number[]; data: Float64Array } {
  const A = a.dataSync();
  const B = b.dataSync();
  const [ra, rb] = [a.rank, b.rank];
  const M = ta ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const K = ta ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const N = tb ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  const batchA = a.size / (M * K);
  const batchB = b.size / (K * N);
  const batch = Math.max(batchA, batchB);
  const out = new Float64Array(batch * M * N);
  for (let i = 0; i < batch; i++) {
    const oa = (batchA === 1 ? 0 : i) * M * K;
    const ob = (batchB === 1 ? 0 : i) * K * N;
    for (let m = 0; m < M; m++)
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += A[oa + (ta ? k * M + m : m * K + k)]! * B[ob + (tb ? n * K + k : k * N + n)]!;
        out[i * M * N + m * N + n] = s;
      }
  }
  const outer = (ra > rb ? a : b).shape.slice(0, -2);
  return { shape: [...outer, M, N], data: out };
}

describe("node/model native products (the machine's BLAS on the wasm heap)", function () {
  this.timeout(120_000);
  before(async function () {
    await initBackend("wasm", true);
    if (!existsSync(NATIVE_ADDON)) {
      console.warn(
        `    WARNING: skipped: the native addon is not built here (npm run build:native needs a C compiler)`,
      );
      this.skip();
    }
    if (!nativeBlas().blas) {
      console.warn(`    WARNING: skipped: no BLAS to run the native products on (${nativeBlas().why})`);
      this.skip();
    }
  });

  it("runs wasm's products on OpenBLAS, as a float64 reference does, for every transpose and batch shape", function () {
    expect(nativeProducts()).to.equal("libopenblas.so.0");
    const rand = mulberry32(7);
    const t = (shape: number[]) =>
      tf.tensor(
        Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rand() - 0.5),
        shape,
      );
    const cases: [number[], number[], boolean, boolean][] = [
      [[5, 3], [3, 4], false, false],
      [[3, 5], [3, 4], true, false],
      [[5, 3], [4, 3], false, true],
      [[3, 5], [4, 3], true, true],
      [[2, 6, 5, 3], [2, 6, 3, 4], false, false], // a batch of 12
      [[4, 5, 3], [3, 7], false, false], // B broadcast over A's batch
      [[5, 3], [4, 3, 2], false, false], // A broadcast over B's batch
      [[0, 3], [3, 4], false, false], // empty
    ];
    for (const [sa, sb, ta, tb] of cases) {
      const [a, b] = [t(sa), t(sb)];
      const got = tf.matMul(a, b, ta, tb);
      const want = reference(a, b, ta, tb);
      expect(got.shape, `${sa} · ${sb}`).to.deep.equal(want.shape);
      const values = got.dataSync() as Float32Array;
      const worst = values.reduce((w, v, i) => Math.max(w, Math.abs(v - want.data[i]!)), 0);
      expect(worst, `${sa} · ${sb}, transposes ${ta} ${tb}`).to.be.below(1e-5);
      tf.dispose([a, b, got]);
    }
  });

  it("refuses a product outside the heap or with bad arguments, with a typed error", function () {
    const blas = nativeBlas().blas!;
    const heap = new ArrayBuffer(64); // 16 floats
    const product = (M: number, N: number, K: number, aOff: number, bOff: number, cOff: number) => () =>
      blas.sgemmBatched(heap, 1, 0, 0, M, N, K, aOff, 0, bOff, 0, cOff);
    expect(product(2, 2, 2, 0, 16, 52)).to.throw(RangeError, "fok_blas: a matrix lies outside the heap");
    expect(product(2, 2, 2, 0, 16, 2)).to.throw(RangeError, "fok_blas: sizes or offsets out of range");
    expect(product(-1, 2, 2, 0, 16, 32)).to.throw(RangeError, "fok_blas: sizes or offsets out of range");
    const notAHeap = () => blas.sgemmBatched("heap" as unknown as ArrayBuffer, 1, 0, 0, 1, 1, 1, 0, 0, 4, 0, 8);
    expect(notAHeap).to.throw(Error, "fok_blas: bad arguments");
    product(2, 2, 2, 0, 16, 32)(); // inside: fine
  });

  it("trains as wasm alone: loss and gradient norm of a step as with FOK_NATIVE=0, GPT-2 and Llama", async function () {
    // the Llama family multiplies by weights stored [out, in]: on the BLAS through the transpose flag, with no copy
    const script = `
      const { initBackend, tf } = await import("./node/model/backend.ts");
      const { GPT, DEFAULT_GPT_CONFIG } = await import("./node/model/gpt.ts");
      const { Llama, parseLlamaConfig } = await import("./node/model/llama.ts");
      const { LoraAdapter, DEFAULT_LORA_CONFIG } = await import("./node/model/lora.ts");
      const { nativeProducts } = await import("./node/model/kernels.ts");
      const { tinyLlamaConfig, randomWeights } = await import("./test/fixtures/tiny-llama.ts");
      await initBackend("wasm", true);
      const step = (model, lora, V) => {
        for (const m of lora.modules.values()) m.B.assign(tf.fill(m.B.shape, 0.01));
        const ids = Int32Array.from({ length: 4 * 33 }, (_, i) => (i * 2654435761) % V);
        const x = tf.tensor2d(ids.slice(0, 128), [4, 32], "int32");
        const y = tf.tensor2d(ids.slice(4), [4, 32], "int32");
        const { value, grads } = tf.variableGrads(() => model.loss(x, y, lora, true), lora.variables());
        const norm = Math.sqrt(Object.values(grads).reduce((s, g) => s + tf.sum(tf.square(g)).dataSync()[0], 0));
        return { loss: value.dataSync()[0], norm };
      };
      const gpt = GPT.init(DEFAULT_GPT_CONFIG, 1);
      const lora = LoraAdapter.init(DEFAULT_GPT_CONFIG, DEFAULT_LORA_CONFIG, 2);
      const raw = tinyLlamaConfig();
      const config = parseLlamaConfig(raw);
      const llama = Llama.fromTensors(config, randomWeights(raw));
      const targets = { ...DEFAULT_LORA_CONFIG, targetModules: ["q", "k", "v", "o", "gate_proj"] };
      const llamaLora = LoraAdapter.init(config, targets, 2);
      const out = { gpt: step(gpt, lora, DEFAULT_GPT_CONFIG.vocabSize) };
      out.llama = step(llama, llamaLora, config.vocabSize);
      console.log(JSON.stringify({ products: nativeProducts(), ...out }));
    `;
    const run = async (env: Record<string, string>) => {
      const { stdout } = await promisify(execFile)(
        process.execPath,
        ["--import", "tsx", "--input-type=module", "-e", script],
        {
          env: { ...process.env, FOK_QUIET_BACKEND: "1", ...env },
        },
      );
      type Step = { loss: number; norm: number };
      return JSON.parse(stdout.trim().split("\n").pop()!) as { products: string | null; gpt: Step; llama: Step };
    };
    const [blas, wasm] = [await run({}), await run({ FOK_NATIVE: "0" })];
    expect([blas.products, wasm.products]).to.deep.equal(["libopenblas.so.0", null]);
    for (const family of ["gpt", "llama"] as const) {
      const [b, w] = [blas[family], wasm[family]];
      expect(Math.abs(b.loss - w.loss) / w.loss, family).to.be.below(1e-4);
      expect(Math.abs(b.norm - w.norm) / w.norm, family).to.be.below(1e-4);
      expect(w.norm, family).to.be.above(0);
    }
  });
});
