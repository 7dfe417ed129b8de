/**
 * What secure aggregation costs, beside the open mode on the same adapters, for 4, 16 and 64 clients of the default
 * base model with the default LoRA config (one client of 64 drops after dealing, the case the protocol exists for):
 *
 * - per client: compute (deal + mask + open and reveal shares), bytes up (keys, dealing, masked vector, reveal;
 *   open: the adapter) and down (every dealing; both modes: the start adapter), gas of its transactions;
 * - the aggregator: unmasking time and gas (phase changes + finalize), beside the open mode's finalize.
 *
 *   npx hardhat run scripts/bench-secure.ts        (or: npm run bench:secure)
 */
import { network } from "hardhat";
import { readFile } from "node:fs/promises";
import { Wallet, parseEther, type Signer } from "ethers";
import { deployContracts, type FederationLedger } from "../node/chain/index.js";
import { sha256Hex } from "../node/digest.js";
import { baseModelConfig } from "../node/model/checkpoint.js";
import { DEFAULT_LORA_CONFIG, LoraAdapter } from "../node/model/lora.js";
import { serializeAdapter, type LoraWeights } from "../node/model/adapter.js";
import { initBackend } from "../node/model/backend.js";
import { unitsToWeights } from "../node/aggregate/index.js";
import { scaleBits, serializeMasked } from "../node/secure/ring.js";
import {
  checkDealing,
  deal,
  newRoundSecrets,
  openShares,
  reveal,
  type Dealing,
  type RoundKeys,
} from "../node/secure/shares.js";
import { maskVector, unmaskSum, updateVector, weightedUpdate } from "../node/secure/unmask.js";
import { mulberry32 } from "../node/random.js";

await initBackend("wasm", true);
const { ethers } = await network.create();
const [admin, aggregator] = await ethers.getSigners();
const model = baseModelConfig(await readFile("models/base/model.safetensors"));
const lora = DEFAULT_LORA_CONFIG;
const init = LoraAdapter.init(model, lora, 1);
const start: LoraWeights = await init.exportWeights();
init.dispose();
const MAX_EXAMPLES = 100_000;
const CLIP = 20;
const bits = scaleBits(MAX_EXAMPLES, CLIP);
const meta = { kind: "update" as const, baseModelSha256: `0x${"0".repeat(64)}` };

/** A client's update: the start plus small seeded noise. */
function updateOf(seed: number): LoraWeights {
  const rand = mulberry32(seed);
  return new Map(
    [...start].map(([m, w]) => [
      m,
      { A: w.A.map((x) => x + (rand() - 0.5) * 1e-3), B: w.B.map(() => (rand() - 0.5) * 1e-2) },
    ]),
  );
}

const ms = (t0: number) => performance.now() - t0;
const kb = (n: number) => (n / 1024).toFixed(1);
const rows: string[] = [];

for (const n of [4, 16, 64]) {
  const dropped = n === 64 ? 1 : 0;
  const ctx = { task: 1, round: 1, threshold: Math.floor(n / 2) + 1 };
  const parties = Array.from({ length: n }, (_, i) => ({ id: i + 1, ...newRoundSecrets(), numExamples: 100 + i }));
  const keys: RoundKeys[] = parties.map((p) => ({
    identity: p.id,
    encryptionKey: p.encryptionKey,
    maskKey: p.maskKey,
  }));
  const time = { deal: 0, mask: 0, reveal: 0 };
  const dealings = new Map<number, Dealing>();
  const dealingBytes = new Map<number, number>();
  for (const p of parties) {
    const t0 = performance.now();
    const d = await deal(ctx, p.id, p.secrets, keys);
    dealingBytes.set(p.id, new TextEncoder().encode(JSON.stringify(d)).length);
    time.deal += ms(t0);
    dealings.set(p.id, d);
  }
  const survivors = parties.slice(0, n - dropped);
  const masked = new Map<number, BigUint64Array>();
  let maskedBytes = 0;
  let adapterBytes = 0;
  for (const p of survivors) {
    const w = updateOf(p.id);
    adapterBytes = serializeAdapter(model, lora, w, meta).length;
    const t0 = performance.now();
    const x = weightedUpdate(updateVector(w, start, false), CLIP, bits, p.numExamples);
    const y = maskVector(ctx, p.id, p.secrets, x, keys);
    maskedBytes = serializeMasked({ task: 1, round: 1, identity: p.id, scaleBits: bits }, y).length;
    time.mask += ms(t0);
    masked.set(p.id, y);
  }
  const reveals = new Map();
  let revealBytes = 0;
  const survivorSet = new Set(survivors.map((p) => p.id));
  for (const p of survivors) {
    const t0 = performance.now();
    const opened = new Map();
    for (const d of parties) {
      const dealing = checkDealing(
        ctx,
        d.id,
        parties.map((q) => q.id),
        dealings.get(d.id),
      );
      opened.set(d.id, openShares(ctx, dealing, p.id, p.secrets, keys[d.id - 1]!));
    }
    const r = reveal(ctx, p.id, survivorSet, opened);
    time.reveal += ms(t0);
    revealBytes = new TextEncoder().encode(JSON.stringify(r)).length;
    reveals.set(p.id, r);
  }
  const t0 = performance.now();
  await unmaskSum({
    ...ctx,
    keys: new Map(keys.map((k) => [k.identity, k])),
    dealings,
    survivors: survivorSet,
    masked,
    reveals,
  });
  const unmaskMs = ms(t0);
  const gas = await gasOf(n, dropped, ctx.threshold);
  const perClient = (time.deal / n + (time.mask + time.reveal) / survivors.length).toFixed(0);
  const dealingKb = kb([...dealingBytes.values()].reduce((a, b) => a + b, 0) / n);
  const up = kb(64 + [...dealingBytes.values()][0]! + maskedBytes + revealBytes);
  const down = kb([...dealingBytes.values()].reduce((a, b) => a + b, 0) + adapterBytes);
  const each = (ms: number, of: number) => (ms / of).toFixed(0);
  const m = survivors.length;
  const split = `deal ${each(time.deal, n)}, mask ${each(time.mask, m)}, reveal ${each(time.reveal, m)}`;
  const sizes = `dealing ${dealingKb} KB, masked ${kb(maskedBytes)} KB, reveal ${kb(revealBytes)} KB`;
  rows.push(
    `${n} clients (${dropped} dropped, threshold ${ctx.threshold}):\n` +
      `  secure: per client ${perClient} ms compute (${split}); up ${up} KB (${sizes}), down ${down} KB; ` +
      `gas ${gas.secureClient} per client; aggregator unmask ${unmaskMs.toFixed(0)} ms, gas ${gas.secureAggregator}\n` +
      `  open:   per client 0 ms extra; up ${kb(adapterBytes)} KB, down ${kb(adapterBytes)} KB; ` +
      `gas ${gas.openClient} per client; aggregator gas ${gas.openAggregator}`,
  );
}
const size = `${updateVector(start, start, false).length} values, r ${lora.r} on ${lora.targetModules.join(",")}`;
console.log(`adapter: ${size} of the committed base; scale 2^${bits}`);
console.log(rows.join("\n"));

/** Gas of one round in each mode with `n` identities (synthetic CIDs: gas does not depend on the bytes). */
async function gasOf(n: number, dropped: number, threshold: number) {
  const ledger = await deployContracts(admin!);
  const wallets: Signer[] = [];
  for (let i = 0; i < n; i++) {
    const w = Wallet.createRandom().connect(ethers.provider);
    await ethers.provider.send("hardhat_setBalance", [w.address, `0x${parseEther("10").toString(16)}`]);
    await ledger.registerIdentity(w.address, `hospital ${i}`, "fp", "bafkreimeta");
    wallets.push(w);
  }
  const agg = ledger.connect(aggregator!);
  const params = {
    baseModelCid: "bafkreibase",
    baseModelSha256: sha256Hex("base"),
    loraConfigHash: sha256Hex("lora"),
    aggregator: await aggregator!.getAddress(),
    strategy: "fedavg",
    minUpdates: threshold,
    roundDuration: 3600,
    maxRounds: 1,
    maxExamples: MAX_EXAMPLES,
    maxUpdateNorm: CLIP,
  };
  const used = (r: { gasUsed: bigint }) => Number(r.gasUsed);
  const sum = async (fs: (() => Promise<{ gasUsed: bigint }>)[]) => {
    let g = 0;
    for (const f of fs) g += used(await f());
    return g;
  };
  const blob = (i: number, what: string) => [`bafkrei${what}${i}`, sha256Hex(`${what} ${i}`)] as const;
  // open
  const open = await ledger.createTask(params);
  await agg.openFirstRound(open, "bafkreiinit", sha256Hex("init"));
  const openClient = await sum(wallets.map((w, i) => () => submitFor(ledger.connect(w), open, i)));
  const ids = wallets.map((_, i) => i + 1);
  const openAggregator = used(
    await agg.finalizeRound(open, 1, "bafkreiglobal", sha256Hex("g"), ids, unitsToWeights(ids.map(() => 1)), "fedavg"),
  );
  // secure
  const sec = await ledger.createTask({ ...params, privacy: "secure", threshold });
  await agg.openFirstRound(sec, "bafkreiinit", sha256Hex("init"));
  const clients = wallets.map((w) => ledger.connect(w));
  let client = await sum(clients.map((l) => () => l.advertiseKeys(sec, 1, sha256Hex("e"), sha256Hex("m"))));
  let aggregatorGas = used(await agg.advancePhase(sec, 1));
  client += await sum(clients.map((l, i) => () => l.dealShares(sec, 1, ...blob(i, "d"))));
  aggregatorGas += used(await agg.advancePhase(sec, 1));
  const alive = clients.slice(0, n - dropped);
  client += await sum(alive.map((l, i) => () => submitFor(l, sec, i)));
  aggregatorGas += used(await agg.advancePhase(sec, 1));
  client += await sum(alive.map((l, i) => () => l.revealShares(sec, 1, ...blob(i, "r"))));
  const survivors = ids.slice(0, n - dropped);
  aggregatorGas += used(
    await agg.finalizeRound(
      sec,
      1,
      "bafkreiglobal",
      sha256Hex("g"),
      survivors,
      unitsToWeights(survivors.map(() => 1)),
      "fedavg",
    ),
  );
  return {
    openClient: Math.round(openClient / n),
    openAggregator,
    secureClient: Math.round(client / n),
    secureAggregator: aggregatorGas,
  };
}

function submitFor(l: FederationLedger, task: number, i: number) {
  return l.submitUpdate({
    task,
    round: 1,
    cid: `bafkreiupdate${i}`,
    adapterSha256: sha256Hex(`update ${i}`),
    numExamples: 100,
    metricsDigest: sha256Hex("metrics"),
  });
}
