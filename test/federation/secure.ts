/**
 * Secure rounds end to end on the in-process chain: five hospitals, one of which drops after dealing its shares;
 * the round completes with the survivors' weighted mean, `fok verify` passes from public data alone, no plaintext
 * update is anywhere an outsider can look, and tampering with the aggregate, the reveals or the masked bytes fails
 * verification by name.
 */
import { expect } from "chai";
import { network } from "hardhat";
import type { FederationLedger } from "../../node/chain/index.js";
import { unitsToWeights } from "../../node/aggregate/index.js";
import { sha256Hex } from "../../node/digest.js";
import { parseAdapter, serializeAdapter, type LoraWeights } from "../../node/model/adapter.js";
import { Aggregator } from "../../node/federation/aggregator.js";
import { FederationClient } from "../../node/federation/client.js";
import { DEFAULT_MAX_EXAMPLES, DEFAULT_MAX_UPDATE_NORM } from "../../node/federation/task-config.js";
import { sleep } from "../../node/federation/rounds.js";
import { verifyTask, type ByteSource } from "../../node/provenance/verify.js";
import { dashboardState } from "../../node/dashboard/server.js";
import { Verdicts } from "../../node/dashboard/verdicts.js";
import { printTask } from "../../node/cli/inspect.js";
import { parseMasked, scaleBits } from "../../node/secure/ring.js";
import { updateVector, weightedUpdate } from "../../node/secure/unmask.js";
import type { Reveal } from "../../node/secure/shares.js";
import {
  LORA,
  TINY,
  TRAIN,
  capturePlaintext,
  tinyFederation,
  type TinyFederation,
} from "../fixtures/tiny-federation.js";

const { ethers, networkHelpers } = await network.create();

const DROP = "hospital-4 went offline";

/** A secure federation of 5 whose 5th client fails when it tries to submit its masked update. */
async function fiveWithDropout(o: { maxRounds?: number; onLedger?: (l: FederationLedger, i: number) => void } = {}) {
  let made = 0;
  const s = await tinyFederation(await ethers.getSigners(), {
    hospitals: 5,
    privacy: "secure",
    threshold: 3,
    minUpdates: 3,
    maxRounds: o.maxRounds ?? 1,
    instrument: {
      ledger: (l) => {
        const i = made++;
        if (i === 4)
          l.submitUpdate = async () => {
            throw new Error(DROP);
          };
        o.onLedger?.(l, i);
        return l;
      },
    },
  });
  return { s, plain: capturePlaintext(s) };
}

/** Runs round `round` with the 5th client dropping; the deadline passes once the 4 survivors submitted. */
async function roundWithDropout(s: TinyFederation, round: number, aggregator: Aggregator = s.aggregator) {
  const aggregating = aggregator.finalize(round);
  const outcomes = s.clients.map((c) => c.participate(round).catch((e: Error) => e.message));
  expect(await outcomes[4]).to.equal(DROP);
  while ((await s.ledger.secureRound(s.task, round)).masked < 4) await sleep(50);
  await networkHelpers.time.increase(3601);
  const report = await aggregating;
  expect(await Promise.all(outcomes.slice(0, 4))).to.deep.equal(["revealed", "revealed", "revealed", "revealed"]);
  return report;
}

/** Windows of bytes that only one update's plaintext (or its quantized vector) contains. */
function fingerprints(bytes: Uint8Array): Buffer[] {
  const b = Buffer.from(bytes);
  return [0, Math.floor(b.length / 2) - 12, b.length - 24].map((o) => b.subarray(o, o + 24));
}

const floatBytes = (w: LoraWeights) =>
  Buffer.concat([...w.values()].flatMap((m) => [Buffer.from(m.B.buffer, m.B.byteOffset, m.B.byteLength)]));

describe("secure rounds end to end (5 hospitals, one drops)", function () {
  this.timeout(300_000);

  it("completes with the survivors' FedAvg within quantization; verify and the dashboard agree", async function () {
    const { s, plain } = await fiveWithDropout();
    await s.aggregator.openFirstRound();
    const report = await roundWithDropout(s, 1);
    expect(report!.contributors).to.deep.equal([1, 2, 3, 4]);
    expect(report!.weights).to.deep.equal(unitsToWeights([10, 20, 30, 40]));
    const h = await s.ledger.readTaskHistory(s.task);
    expect([h.privacy, h.threshold]).to.deep.equal(["secure", 3]);
    const r1 = h.rounds[0]!;
    expect(r1.secure!.keys.map((k) => k.identity).sort()).to.deep.equal([1, 2, 3, 4, 5]);
    expect(r1.secure!.dealings.map((d) => d.identity).sort()).to.deep.equal([1, 2, 3, 4, 5]);
    expect(r1.secure!.phases.map((p) => [p.phase, p.count])).to.deep.equal([
      [1, 5],
      [2, 5],
      [3, 4],
    ]);
    expect(r1.secure!.reveals.map((r) => r.identity).sort()).to.deep.equal([1, 2, 3, 4]);
    // the plaintext FedAvg of the 4 survivors, computed here from their updates
    const start = parseAdapter(await s.store.get(r1.startCid), TINY, LORA).weights;
    const global = parseAdapter(await s.store.get(r1.finalized!.globalCid), TINY, LORA).weights;
    const mean = (ids: number[]) => {
      const n = ids.map((id) => 10 * id);
      const deltas = ids.map((id) => updateVector(parseAdapter(plain.get(id)!, TINY, LORA).weights, start, false));
      const s0 = updateVector(
        start,
        new Map([...start].map(([k, v]) => [k, { A: v.A.map(() => 0), B: v.B.map(() => 0) }])),
        false,
      );
      return s0.map((x, i) => x + deltas.reduce((t, d, k) => t + n[k]! * d[i]!, 0) / n.reduce((a, b) => a + b, 0));
    };
    const zero = new Map([...start].map(([k, v]) => [k, { A: v.A.map(() => 0), B: v.B.map(() => 0) }]));
    const got = updateVector(global, zero, false);
    const bits = scaleBits(DEFAULT_MAX_EXAMPLES, DEFAULT_MAX_UPDATE_NORM);
    const worst = (want: Float64Array) =>
      Math.max(...got.map((g, i) => Math.abs(g - want[i]!) - 2 ** -24 * Math.abs(want[i]!)));
    expect(worst(mean([1, 2, 3, 4]))).to.be.at.most(0.5 / 2 ** bits);
    expect(worst(mean([1, 2, 3, 4, 5]))).to.be.above(1e-4); // the dropped hospital's update is not in it
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok)).to.deep.equal([]);
    expect(verified.checks.filter((c) => c.check === "secure aggregate").map((c) => c.ok)).to.deep.equal([true]);
    // fok inspect prints the mode, the sets and each phase's transaction
    const printed: string[] = [];
    printTask(h, { out: (l) => printed.push(l) });
    expect(printed.slice(2, 6)).to.deep.equal([
      "  privacy: secure aggregation, threshold 3 (only masked updates are published)",
      `  round 1 from ${r1.startCid}`,
      "    keys [1, 2, 3, 4, 5]; participants (dealt shares) [1, 2, 3, 4, 5]",
      "    survivors [1, 2, 3, 4], dropped [5]; revealed [1, 2, 3, 4]",
    ]);
    const phaseLines = printed.filter((l) => l.startsWith("    phase "));
    expect(phaseLines.map((l) => l.split(" (block")[0])).to.deep.equal([
      "    phase Shares after 5",
      "    phase Masked after 5",
      "    phase Reveal after 4",
    ]);
    expect(phaseLines[2]).to.include(`tx ${r1.secure!.phases[2]!.transactionHash}`);
    // the dashboard shows the mode, the sets and each phase's transaction, and verify's verdict
    const state = await dashboardState(s.ledger, s.store, new Verdicts(s.ledger, s.store));
    const t = state.tasks[0]!;
    expect([t.privacy, t.threshold, t.verdict.ok]).to.deep.equal(["secure", 3, true]);
    const { phases, ...sets } = t.rounds[0]!.secure!;
    expect(sets).to.deep.equal({
      keys: [1, 2, 3, 4, 5],
      participants: [1, 2, 3, 4, 5],
      survivors: [1, 2, 3, 4],
      dropped: [5],
      revealed: [1, 2, 3, 4],
    });
    expect(phases.map((p) => [p.phase, p.count])).to.deep.equal([
      ["Shares", 5],
      ["Masked", 5],
      ["Reveal", 4],
    ]);
    await s.store.close();
  });

  it("leaves no plaintext update or quantized vector in any blob, calldata or event", async function () {
    const { s, plain } = await fiveWithDropout();
    await s.aggregator.openFirstRound();
    await roundWithDropout(s, 1);
    const h = await s.ledger.readTaskHistory(s.task);
    const start = parseAdapter(await s.store.get(h.rounds[0]!.startCid), TINY, LORA).weights;
    const bits = scaleBits(DEFAULT_MAX_EXAMPLES, DEFAULT_MAX_UPDATE_NORM);
    const secrets: Buffer[] = [];
    expect([...plain.keys()].sort()).to.deep.equal([1, 2, 3, 4, 5]);
    for (const [id, bytes] of plain) {
      const w = parseAdapter(bytes, TINY, LORA).weights;
      const x = weightedUpdate(updateVector(w, start, false), DEFAULT_MAX_UPDATE_NORM, bits, 10 * id);
      secrets.push(...fingerprints(floatBytes(w)), ...fingerprints(new Uint8Array(x.buffer)));
    }
    const found = (hay: Buffer) => secrets.some((needle) => hay.indexOf(needle) >= 0);
    const pins = await s.store.pins();
    // base, 5 identity documents, the initial adapter, 5 dealings, 5 masked vectors (the dropped one pinned its own
    // before it failed to commit it: its self-mask is never revealed), 4 reveals, the global adapter
    expect(pins.length).to.equal(22);
    for (const cid of pins)
      expect(found(Buffer.from(await s.store.get(cid, { maxBytes: 1 << 30 }))), cid).to.equal(false);
    const latest = await ethers.provider.getBlockNumber();
    for (let n = 0; n <= latest; n++) {
      const block = await ethers.provider.getBlock(n, true);
      for (const tx of block!.prefetchedTransactions) {
        expect(found(Buffer.from(tx.data.slice(2), "hex")), `calldata of ${tx.hash}`).to.equal(false);
        const receipt = await ethers.provider.getTransactionReceipt(tx.hash);
        for (const log of receipt!.logs) expect(found(Buffer.from(log.data.slice(2), "hex"))).to.equal(false);
      }
    }
    await s.store.close();
  });

  it("verify names a wrong aggregate, a bad share, a reveal of both shares, swapped masked bytes", async function () {
    // identity 2 reveals a corrupted share of dealer 1; identity 3 reveals dealer 2's key share beside its seed share
    const tamperReveal = (l: FederationLedger, i: number) => {
      if (i !== 1 && i !== 2) return;
      const real = l.revealShares.bind(l);
      l.revealShares = async (task, round, cid) => {
        const doc = JSON.parse(new TextDecoder().decode(await s.store.get(cid))) as Reveal;
        if (i === 1) doc.shares[0]!.share = `0x${"ab".repeat(33)}`;
        else doc.shares.push({ dealer: 2, kind: "key", share: `0x${"cd".repeat(33)}` });
        const bytes = new TextEncoder().encode(JSON.stringify(doc));
        return real(task, round, await s.store.add(bytes), sha256Hex(bytes));
      };
    };
    const { s } = await fiveWithDropout({ maxRounds: 2, onLedger: tamperReveal });
    await s.aggregator.openFirstRound();
    await roundWithDropout(s, 1);
    // round 2: an aggregator that publishes other bytes than the unmasked sum
    const evil = s.ledger.connect(s.signers[1]!);
    const finalize = evil.finalizeRound.bind(evil);
    evil.finalizeRound = async (task, round, cid, _sha, ...rest) => {
      const parsed = parseAdapter(await s.store.get(cid), TINY, LORA);
      for (const m of parsed.weights.values()) m.B[0]! += 0.01;
      const forged = serializeAdapter(TINY, LORA, parsed.weights, parsed.metadata);
      return finalize(task, round, await s.store.add(forged), sha256Hex(forged), ...rest);
    };
    const lying = new Aggregator({
      ledger: evil,
      store: s.store,
      task: s.task,
      model: TINY,
      lora: LORA,
      baseModelSha256: s.baseSha,
      expectedUpdates: 5,
      pollMs: 50,
    });
    await roundWithDropout(s, 2, lying);
    // a gateway that serves other bytes for identity 4's masked update of round 1
    const h = await s.ledger.readTaskHistory(s.task);
    const swappedCid = h.rounds[0]!.submissions.find((x) => x.identity === 4)!.cid;
    const gateway: ByteSource = {
      get: async (cid, o) => {
        const bytes = await s.store.get(cid, o);
        if (cid !== swappedCid) return bytes;
        const copy = Uint8Array.from(bytes);
        copy[copy.length - 1]! ^= 1;
        return copy;
      },
    };
    const report = await verifyTask(s.ledger, gateway, s.task, { model: TINY, lora: LORA });
    const failed = report.checks.filter((c) => !c.ok).map((c) => [c.round, c.identity, c.check]);
    expect(failed).to.have.deep.members([
      [1, 2, "secure reveal"],
      [1, 3, "secure reveal"],
      [1, 4, "masked update digest"],
      [1, null, "secure aggregate"],
      [2, 2, "secure reveal"],
      [2, 3, "secure reveal"],
      [2, null, "secure aggregate"],
    ]);
    // round 2's global adapter itself is well formed: only its bytes differ from the unmasked sum's
    await s.store.close();
  });

  it("FFA-LoRA in secure mode masks B only; the global adapter keeps the initial A; verify passes", async function () {
    const s = await tinyFederation(await ethers.getSigners(), {
      privacy: "secure",
      strategy: "ffa-lora",
      maxRounds: 1,
    });
    await s.aggregator.openFirstRound();
    const [outcomes, report] = await Promise.all([
      Promise.all(s.clients.map((c) => c.participate(1))),
      s.aggregator.finalize(1),
    ]);
    expect(outcomes).to.deep.equal(["revealed", "revealed", "revealed"]);
    expect(report!.contributors).to.deep.equal([1, 2, 3]);
    const r1 = (await s.ledger.readTaskHistory(s.task)).rounds[0]!;
    const init = parseAdapter(await s.store.get(r1.startCid), TINY, LORA).weights;
    const global = parseAdapter(await s.store.get(r1.finalized!.globalCid), TINY, LORA).weights;
    const [m, g] = [...global][0]!;
    expect([...g.A]).to.deep.equal([...init.get(m)!.A]);
    expect(g.B.some((x) => x !== 0)).to.equal(true);
    const masked = parseMasked(await s.store.get(r1.submissions[0]!.cid)).header;
    expect(masked.elements).to.equal(g.B.length); // B only: half the values of A and B here
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok)).to.deep.equal([]);
    await s.store.close();
  });

  it("refuses at creation: a strategy needing single updates, a bad threshold, overflowing bounds", async function () {
    const signers = await ethers.getSigners();
    const refused = async (o: Parameters<typeof tinyFederation>[1]) => {
      try {
        await tinyFederation(signers, { privacy: "secure", ...o });
        return null;
      } catch (e) {
        return [(e as Error).name, (e as Error).message];
      }
    };
    expect(await refused({ strategy: "median" })).to.deep.equal([
      "SecureConfigError",
      "strategy median needs each update on its own, which secure mode never reveals; " +
        "use one of fedavg, fedprox, ffa-lora",
    ]);
    expect(await refused({ threshold: 3, minUpdates: 2 })).to.deep.equal([
      "SecureConfigError",
      "secure threshold 3 must be an integer with 2 <= threshold <= min updates (2) <= 255",
    ]);
    const overflow = await refused({ maxExamples: 2 ** 40, maxUpdateNorm: 1 });
    expect(overflow![0]).to.equal("SecureConfigError");
    expect(overflow![1]).to.match(
      /^secure mode cannot quantize updates of norm up to 1 from up to 255 clients of up to/,
    );
  });

  it("a client whose on-chain keys are not its own sits the round out; a relaying one is refused", async function () {
    const s = await tinyFederation(await ethers.getSigners(), { privacy: "secure", maxRounds: 1 });
    await s.aggregator.openFirstRound();
    // identity 1's keys were advertised by an earlier process whose secrets are gone (no state folder)
    await s.ledger.connect(s.signers[2]!).advertiseKeys(s.task, 1, sha256Hex("old e"), sha256Hex("old m"));
    expect(await s.clients[0]!.participate(1)).to.equal("missed");
    const relaying = new FederationClient({
      ledger: s.ledger.connect(s.signers[5]!),
      signer: s.signers[3]!,
      relay: true,
      store: s.store,
      task: s.task,
      trainer: s.trainers[1]!,
      train: TRAIN,
      model: TINY,
      lora: LORA,
      pollMs: 50,
    });
    const err = await relaying.participate(1).catch((e: Error) => e);
    expect([(err as Error).name, (err as Error).message]).to.deep.equal([
      "SecureClientError",
      "a secure task's client sends its keys, shares and reveals itself: relayed submission is not supported there",
    ]);
    await s.store.close();
  });

  it("a secure round short of its threshold by the deadline is closed on-chain, and verify agrees", async function () {
    const s = await tinyFederation(await ethers.getSigners(), { privacy: "secure", maxRounds: 1 });
    await s.aggregator.openFirstRound();
    const aggregating = s.aggregator.finalize(1);
    const lonely = s.clients[0]!.participate(1); // the only one: 1 key, the threshold is 2
    while ((await s.ledger.secureRound(s.task, 1)).keys < 1) await sleep(50);
    await networkHelpers.time.increase(3601);
    expect(await aggregating).to.equal(null);
    expect(await lonely).to.equal("round-closed");
    const h = await s.ledger.readTaskHistory(s.task);
    expect([h.rounds[0]!.closed !== null, h.rounds[0]!.finalized, h.completed]).to.deep.equal([true, null, true]);
    const verified = await verifyTask(s.ledger, s.store, s.task, { model: TINY, lora: LORA });
    expect(verified.checks.filter((c) => !c.ok)).to.deep.equal([]);
    expect(verified.checks.find((c) => c.check === "closed round")!.detail).to.equal(
      "closed: 0 masked updates, fewer than 2",
    );
    await s.store.close();
  });
});
