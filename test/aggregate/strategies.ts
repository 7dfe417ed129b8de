import { expect } from "chai";
import {
  CoordinateMedian,
  ExactLora,
  FedAvg,
  FfaLora,
  Krum,
  TrimmedMean,
  UpdateMismatchError,
  unitsToWeights,
  strategyFor,
  type ClientUpdate,
} from "../../node/aggregate/index.js";
import type { LoraWeights } from "../../node/model/adapter.js";
import { mulberry32 } from "../../node/random.js";

const ctx = { scale: 2, r: 2 };

function update(
  identity: number,
  numExamples: number,
  A: number[],
  B: number[],
  module = "h.0.attn.c_attn",
): ClientUpdate {
  return { identity, numExamples, weights: new Map([[module, { A: Float32Array.from(A), B: Float32Array.from(B) }]]) };
}

/** Dense product A [in, r] · B [r, out] of one module, row-major. */
function product(w: LoraWeights, module: string, r: number): Float64Array {
  const { A, B } = w.get(module)!;
  const rows = A.length / r;
  const cols = B.length / r;
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) out[i * cols + j]! += A[i * r + k]! * B[k * cols + j]!;
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function flat(w: LoraWeights): number[] {
  return [...w.values()].flatMap(({ A, B }) => [...A, ...B]);
}

function distance(a: number[], b: number[]): number {
  return Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]!) ** 2, 0));
}

describe("node/aggregate strategies", function () {
  it("FedAvg averages A and B separately, weighted by examples", function () {
    const r = new FedAvg().aggregate([update(2, 30, [1, 2, 3, 4], [4, 4]), update(1, 10, [5, 6, 7, 8], [0, 8])], ctx);
    expect(r.contributors).to.deep.equal([1, 2]);
    expect(r.shares).to.deep.equal([0.25, 0.75]);
    expect([...r.weights.get("h.0.attn.c_attn")!.A]).to.deep.equal([2, 3, 4, 5]);
    expect([...r.weights.get("h.0.attn.c_attn")!.B]).to.deep.equal([3, 5]);
  });

  it("FFA-LoRA keeps the shared A exactly, averages B by examples, and refuses an update that moved A", function () {
    const a = [0.1, 0.2, 0.3, 0.7];
    const r = new FfaLora().aggregate([update(1, 1, a, [1, 2, 3, 4]), update(2, 3, a, [5, 6, 7, 8])], ctx);
    expect([...r.weights.get("h.0.attn.c_attn")!.A]).to.deep.equal([...Float32Array.from(a)]);
    expect([...r.weights.get("h.0.attn.c_attn")!.B]).to.deep.equal([4, 5, 6, 7]);
    expect(r.units).to.deep.equal([1, 3]);
    const moved = update(3, 1, [0.1, 0.2, 0.3, 0.70001], [1, 1, 1, 1]);
    const err = (() => {
      try {
        new FfaLora().aggregate([update(1, 1, a, [1, 2, 3, 4]), moved], ctx);
      } catch (e) {
        return e as UpdateMismatchError;
      }
    })();
    expect([err?.name, err?.identity]).to.deep.equal(["UpdateMismatchError", 3]);
    const start = update(0, 1, a, [0, 0, 0, 0]).weights;
    expect(new FfaLora().validate(update(1, 1, a, [9, 9, 9, 9]).weights, start)).to.equal(null);
    expect(new FfaLora().validate(moved.weights, start)).to.equal(
      "module h.0.attn.c_attn: A changed; FFA-LoRA keeps A frozen",
    );
    expect(strategyFor("ffa-lora").id).to.equal("ffa-lora");
  });

  it("turns integer units into on-chain weights that add up to exactly 1e18", function () {
    expect(unitsToWeights([1, 1, 1])).to.deep.equal([333333333333333334n, 333333333333333333n, 333333333333333333n]);
    expect(unitsToWeights([10, 30])).to.deep.equal([250000000000000000n, 750000000000000000n]);
    expect(unitsToWeights([7, 11, 13]).reduce((a, b) => a + b, 0n)).to.equal(10n ** 18n);
  });

  it("exact aggregation's product equals the mean of products, where FedAvg's does not", function () {
    // clients whose products share a rank-2 column space but whose factors differ: A_i = A·G_i, B_i = G_i⁻¹·C_i
    const rand = mulberry32(5);
    const rows = 6;
    const cols = 5;
    const A = Array.from({ length: rows * 2 }, () => rand() - 0.5);
    const updates: ClientUpdate[] = [];
    const products: Float64Array[] = [];
    for (let c = 0; c < 3; c++) {
      const g = [1 + c, 0.5 * c, -0.3 * c, 1 + 0.2 * c]; // G = [[g0, g1], [g2, g3]]
      const det = g[0]! * g[3]! - g[1]! * g[2]!;
      const gi = [g[3]! / det, -g[1]! / det, -g[2]! / det, g[0]! / det];
      const C = Array.from({ length: 2 * cols }, () => rand() - 0.5);
      const Ai = Array.from({ length: rows * 2 }, (_, idx) => {
        const i = Math.floor(idx / 2);
        const k = idx % 2;
        return A[i * 2]! * g[k]! + A[i * 2 + 1]! * g[2 + k]!;
      });
      const Bi = Array.from({ length: 2 * cols }, (_, idx) => {
        const k = Math.floor(idx / cols);
        const j = idx % cols;
        return gi[k * 2]! * C[j]! + gi[k * 2 + 1]! * C[cols + j]!;
      });
      const u = update(c + 1, 10 * (c + 1), Ai, Bi);
      updates.push(u);
      products.push(product(u.weights, "h.0.attn.c_attn", 2));
    }
    const shares = [10 / 60, 20 / 60, 30 / 60];
    const meanProduct = products[0]!.map((_, k) => products.reduce((s, p, i) => s + shares[i]! * p[k]!, 0));
    const exact = new ExactLora().aggregate(updates, ctx);
    const fedavg = new FedAvg().aggregate(updates, ctx);
    const exactGap = maxAbsDiff(product(exact.weights, "h.0.attn.c_attn", 2), meanProduct);
    const fedavgGap = maxAbsDiff(product(fedavg.weights, "h.0.attn.c_attn", 2), meanProduct);
    expect(exactGap).to.be.below(1e-5);
    expect(fedavgGap).to.be.above(0.05);
    expect(exact.diagnostics.factorError).to.be.below(1e-6);
    expect(exact.diagnostics.fedavgError).to.be.above(0.1);
  });

  it("exact aggregation reports the truncation error it leaves when the mean product has rank > r", function () {
    const rand = mulberry32(9);
    const updates = [1, 2, 3].map((id) =>
      update(
        id,
        10,
        Array.from({ length: 8 * 2 }, () => rand() - 0.5),
        Array.from({ length: 2 * 8 }, () => rand() - 0.5),
      ),
    );
    const r = new ExactLora().aggregate(updates, ctx);
    expect(r.diagnostics.factorError).to.be.above(0.1).and.below(1);
    expect(r.diagnostics.fedavgError).to.be.above(0);
  });

  describe("against one poisoned update of five", function () {
    const rand = mulberry32(21);
    const honestMean = Array.from({ length: 12 }, () => rand() - 0.5);
    const honest = (id: number) => {
      const v = honestMean.map((x) => x + (rand() - 0.5) * 0.02);
      return update(id, 100, v.slice(0, 8), v.slice(8));
    };
    const base = [1, 2, 3, 4].map(honest);
    const scaled = (() => {
      const v = honestMean.map((x) => x * 100);
      return update(5, 100, v.slice(0, 8), v.slice(8));
    })();
    const flipped = (() => {
      const v = honestMean.map((x) => -x);
      return update(5, 100, v.slice(0, 8), v.slice(8));
    })();
    for (const [attack, bad] of [
      ["scaled by 100", scaled],
      ["sign-flipped", flipped],
    ] as const) {
      it(`median, trimmed mean and Krum stay near the honest mean; FedAvg is pulled away (${attack})`, function () {
        const updates = [...base, bad];
        const fedavgDist = distance(flat(new FedAvg().aggregate(updates, ctx).weights), honestMean);
        for (const s of [new CoordinateMedian(), new TrimmedMean(1), new Krum(1), new Krum(1, 3)]) {
          const d = distance(flat(s.aggregate(updates, ctx).weights), honestMean);
          expect(d, s.id).to.be.below(0.05);
        }
        expect(fedavgDist).to.be.above(0.3);
        const krum = new Krum(1).aggregate(updates, ctx);
        expect(krum.contributors).to.have.length(1);
        expect(krum.contributors[0]).to.not.equal(5);
      });
    }
  });

  it("rejects an update whose shape or values differ, naming identity and difference", function () {
    const good = update(1, 10, [1, 2, 3, 4], [1, 2]);
    const cases: [ClientUpdate, string][] = [
      [update(2, 10, [1, 2, 3], [1, 2]), "update from identity 2: h.0.attn.c_attn.lora_A has 3 values, expected 4"],
      [update(2, 10, [1, 2, 3, 4], [1, 2], "h.0.mlp.c_fc"), "update from identity 2: unexpected module h.0.mlp.c_fc"],
      [
        update(2, 10, [1, 2, NaN, 4], [1, 2]),
        "update from identity 2: h.0.attn.c_attn.lora_A holds a non-finite value at 2",
      ],
      [update(2, 0, [1, 2, 3, 4], [1, 2]), "update from identity 2: numExamples 0 is not a positive integer"],
      [update(1, 10, [1, 2, 3, 4], [1, 2]), "update from identity 1: submitted twice"],
    ];
    for (const [bad, message] of cases) {
      let err: Error | null = null;
      try {
        new FedAvg().aggregate([good, bad], ctx);
      } catch (e) {
        err = e as Error;
      }
      expect(err).to.be.instanceOf(UpdateMismatchError);
      expect(err!.message).to.equal(message);
    }
  });

  it("FedAvg's mean is bit-identical to one float64 pass per client, and finds ±∞ and NaN in any update", function () {
    const rand = mulberry32(11);
    const values = (n: number) => Array.from({ length: n }, () => (rand() - 0.5) * 10 ** Math.floor(rand() * 8));
    // 7 clients: a block of four, then three one by one
    const ups = [1, 2, 3, 4, 5, 6, 7].map((id) => update(id, 3 * id + 1, values(64), values(16)));
    const total = ups.reduce((n, u) => n + u.numExamples, 0);
    const reference = (pick: (w: { A: Float32Array; B: Float32Array }) => Float32Array) => {
      const acc = new Float64Array(pick(ups[0]!.weights.get("h.0.attn.c_attn")!).length);
      for (const u of ups) {
        const x = pick(u.weights.get("h.0.attn.c_attn")!);
        for (let k = 0; k < acc.length; k++) acc[k] += (u.numExamples / total) * x[k]!;
      }
      return [...new Float32Array(acc)];
    };
    const mean = new FedAvg().aggregate(ups, ctx).weights.get("h.0.attn.c_attn")!;
    expect([[...mean.A], [...mean.B]]).to.deep.equal([reference((w) => w.A), reference((w) => w.B)]);
    for (const bad of [Infinity, -Infinity, NaN]) {
      const poisoned = update(6, 19, values(64), [...values(15), bad]);
      const thrown = (() => {
        try {
          new FedAvg().aggregate([...ups.slice(0, 5), poisoned, ups[6]!], ctx);
        } catch (e) {
          return e as Error;
        }
      })();
      expect([thrown instanceof UpdateMismatchError, thrown?.message]).to.deep.equal([
        true,
        "update from identity 6: h.0.attn.c_attn.lora_B holds a non-finite value at 15",
      ]);
    }
  });

  it("is deterministic whatever order updates arrive in", function () {
    const rand = mulberry32(3);
    const ups = [3, 1, 2].map((id) =>
      update(
        id,
        id * 7,
        Array.from({ length: 8 }, () => rand()),
        Array.from({ length: 4 }, () => rand()),
      ),
    );
    for (const id of ["fedavg", "exact-svd", "median", "trimmed-mean"]) {
      const s = strategyFor(id);
      const a = s.aggregate(ups, ctx);
      const b = s.aggregate([...ups].reverse(), ctx);
      expect(
        Buffer.from(a.weights.get("h.0.attn.c_attn")!.A.buffer).equals(
          Buffer.from(b.weights.get("h.0.attn.c_attn")!.A.buffer),
        ),
        id,
      ).to.equal(true);
      expect(a.contributors, id).to.deep.equal([1, 2, 3]);
    }
  });
});
