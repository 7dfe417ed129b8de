/**
 * The secure round's cryptography without a chain: five participants deal shares, one drops before masking, the
 * four survivors' sum is recovered exactly from public data; and what goes wrong is named.
 */
import { expect } from "chai";
import { mulberry32 } from "../../node/random.js";
import {
  MAX_SECURE_PARTICIPANTS,
  parseMasked,
  quantize,
  scaleBits,
  serializeMasked,
  signed,
  prg,
  addInto,
  SecureConfigError,
  SecureDataError,
  type RingVector,
} from "../../node/secure/ring.js";
import {
  checkDealing,
  deal,
  newRoundSecrets,
  openShares,
  reveal,
  type Dealing,
  type Reveal,
  type RoundKeys,
  type RoundSecrets,
} from "../../node/secure/shares.js";
import { checkReveals, maskVector, unmaskSum, type PublicRound } from "../../node/secure/unmask.js";

const CTX = { task: 7, round: 3, threshold: 3 };
const IDS = [1, 2, 4, 5, 9];
const DROPPED = 5;
const N = 64;

interface Party {
  id: number;
  secrets: RoundSecrets;
  keys: RoundKeys;
  delta: Float32Array;
  x: RingVector;
  numExamples: number;
}

async function round() {
  const rand = mulberry32(11);
  const bits = scaleBits(1000, 1);
  const parties: Party[] = IDS.map((id, i) => {
    const { secrets, encryptionKey, maskKey } = newRoundSecrets();
    const delta = Float32Array.from({ length: N }, () => (rand() - 0.5) * 0.2);
    const numExamples = 10 + 7 * i;
    return {
      id,
      secrets,
      keys: { identity: id, encryptionKey, maskKey },
      delta,
      x: quantize(delta, 1, bits, numExamples),
      numExamples,
    };
  });
  const keys = parties.map((p) => p.keys);
  const dealings = new Map<number, Dealing>();
  for (const p of parties) dealings.set(p.id, checkDealing(CTX, p.id, IDS, await deal(CTX, p.id, p.secrets, keys)));
  const survivors = parties.filter((p) => p.id !== DROPPED);
  const masked = new Map(survivors.map((p) => [p.id, maskVector(CTX, p.id, p.secrets, p.x, keys)]));
  const reveals = new Map<number, Reveal>();
  for (const p of survivors) {
    const opened = new Map(
      IDS.map((d) => [
        d,
        openShares(
          CTX,
          dealings.get(d)!,
          p.id,
          p.secrets,
          keys.find((k) => k.identity === d)!,
        ),
      ]),
    );
    reveals.set(p.id, reveal(CTX, p.id, new Set(masked.keys()), opened));
  }
  const pub: PublicRound = {
    ...CTX,
    keys: new Map(keys.map((k) => [k.identity, k])),
    dealings,
    survivors: new Set(masked.keys()),
    masked,
    reveals,
  };
  const acc = new BigUint64Array(N);
  for (const p of survivors) addInto(acc, p.x);
  const expected = signed(acc);
  return { pub, parties, survivors, expected, bits };
}

describe("node/secure protocol", function () {
  it("recovers the survivors' exact weighted sum after one drops, from public data alone", async function () {
    const { pub, expected, survivors, bits } = await round();
    const { sum, problems } = await unmaskSum(pub);
    expect(problems).to.deep.equal([]);
    expect([...sum]).to.deep.equal([...expected]);
    // dequantized, it is the plaintext weighted mean of the updates within half a quantization step
    const total = survivors.reduce((t, p) => t + p.numExamples, 0);
    const worst = Math.max(
      ...[...sum].map((v, i) =>
        Math.abs(v / 2 ** bits / total - survivors.reduce((t, p) => t + p.numExamples * p.delta[i]!, 0) / total),
      ),
    );
    expect(worst).to.be.at.most(0.5 / 2 ** bits);
    expect(worst).to.be.above(0); // quantization did round
  });

  it("an outsider who removes every reconstructable mask from one masked vector still sees noise", async function () {
    const { pub, parties } = await round();
    const victim = parties[0]!;
    const y = BigUint64Array.from(pub.masked.get(victim.id)!);
    // the victim survived: its self-mask seed is reconstructable; the dropped one's mask key too
    const { shares } = checkReveals(pub);
    const { reconstruct } = await import("../../node/secure/shares.js");
    addInto(y, prg(await reconstruct(shares.get(victim.id)!.slice(0, CTX.threshold)), N), -1);
    const { pairwiseSeed, hex } = await import("../../node/secure/shares.js");
    const droppedKey = hex(await reconstruct(shares.get(DROPPED)!.slice(0, CTX.threshold)));
    addInto(y, prg(pairwiseSeed(CTX, DROPPED, droppedKey, victim.id, victim.keys.maskKey), N), -1);
    // what is left is x plus the pairwise masks with the other survivors: nowhere near x
    const left = signed(y);
    const x = signed(victim.x);
    const close = [...left].filter((v, i) => Math.abs(v - x[i]!) < 2 ** 56).length;
    expect(close).to.be.below(3); // uniform over 2^64: each value lands within 2^56 of x with probability 2^-7
  });

  it("names a revealed share unlike its commitment, and a reveal of both shares of one client", async function () {
    const { pub } = await round();
    const r2 = structuredClone(pub.reveals.get(2)!);
    r2.shares[0]!.share = `0x${"ab".repeat(33)}`;
    const r4 = structuredClone(pub.reveals.get(4)!);
    r4.shares.push({ dealer: 1, kind: "key", share: `0x${"00".repeat(33)}` });
    const reveals = new Map(pub.reveals).set(2, r2).set(4, r4);
    const { problems } = checkReveals({ ...pub, reveals });
    expect(problems.map((p) => [p.revealer, p.dealer])).to.deep.equal([
      [2, 1],
      [4, 1],
    ]);
    expect(problems[0]!.problem).to.equal("its seed share of identity 1 does not match the dealer's commitment");
    expect(problems[1]!.problem).to.match(
      /reveals 2 shares of identity 1: seed and key shares of one client must never/,
    );
    // with 4 reveals and threshold 3, two spoiled shares of identity 1 leave 2: not enough
    const err = await unmaskSum({ ...pub, reveals }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(SecureDataError);
    expect((err as Error).message).to.equal("2 good shares of identity 1, the threshold is 3");
  });

  it("refuses a reveal of the wrong kind, and a dealing that leaves out an identity", async function () {
    const { pub, parties } = await round();
    const r9 = structuredClone(pub.reveals.get(9)!);
    r9.shares.find((s) => s.dealer === DROPPED)!.kind = "seed";
    const { problems } = checkReveals({ ...pub, reveals: new Map(pub.reveals).set(9, r9) });
    expect(problems).to.deep.equal([
      { revealer: 9, dealer: 5, problem: "reveals the seed share of identity 5, which dropped" },
    ]);
    const d = await deal(
      CTX,
      1,
      parties[0]!.secrets,
      parties.slice(0, 4).map((p) => p.keys),
    );
    expect(() => checkDealing(CTX, 1, IDS, d)).to.throw(
      SecureDataError,
      "recipients are not the identities that advertised keys [1, 2, 4, 5, 9]",
    );
  });

  it("masked vectors round-trip through their bytes; scales refuse bounds that could overflow", function () {
    const v = BigUint64Array.from([0n, 1n, 2n ** 64n - 1n, 2n ** 63n, 123456789012n]);
    const bytes = serializeMasked({ task: 1, round: 2, identity: 3, scaleBits: 20 }, v);
    const { header, vector } = parseMasked(bytes);
    expect(header).to.deep.equal({
      format: "fok-secure-masked/1",
      task: 1,
      round: 2,
      identity: 3,
      scaleBits: 20,
      elements: 5,
    });
    expect([...vector]).to.deep.equal([...v]);
    expect(() => parseMasked(bytes.subarray(0, bytes.length - 1))).to.throw(
      SecureDataError,
      "39 bytes of data for 5 elements",
    );
    // 255 clients × 2^20 examples × norm 1000: the largest S with 255·2^20·(1000·S + 1) < 2^63 is 2^25
    expect(scaleBits(2 ** 20, 1000)).to.equal(25);
    expect(255n * 2n ** 20n * (1000n * 2n ** 25n + 1n)).to.be.below(2n ** 63n);
    expect(255n * 2n ** 20n * (1000n * 2n ** 26n + 1n)).to.be.above(2n ** 63n);
    expect(scaleBits(100_000, 20)).to.equal(30); // the defaults: capped at 2^-30, finer than float32 needs
    expect(MAX_SECURE_PARTICIPANTS).to.equal(255);
    expect(() => scaleBits(2 ** 40, 1)).to.throw(SecureConfigError, /lower the example cap or the max update norm/);
  });
});
