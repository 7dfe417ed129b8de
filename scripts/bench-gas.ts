/**
 * Gas of every hot call on the in-process Hardhat network, as a table (and JSON with --json).
 * Budgets: submitUpdate <= 90,000; finalizeRound <= 60,000 + 8,000 per contributor.
 *
 *   npx hardhat run scripts/bench-gas.ts            (or: npm run bench:gas)
 */
import { network } from "hardhat";
import { Wallet, type TransactionReceipt } from "ethers";
import { WEIGHT_SCALE, deployContracts, type UpdateCommitment } from "../node/chain/index.js";

const { ethers } = await network.create();
const [admin, aggregator, direct, relayer] = await ethers.getSigners();
const ledger = await deployContracts(admin!);
const sha = (s: string) => ethers.sha256(ethers.toUtf8Bytes(s));
// A real CIDv1 (59 characters), so calldata and event sizes are what the federation pays.
const CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

const rows: { call: string; gas: number; budget: number | null }[] = [];
const record = (call: string, r: TransactionReceipt, budget: number | null = null) =>
  rows.push({ call, gas: Number(r.gasUsed), budget });

// mint
const mint = await ledger.registerIdentityTx(direct!.address, ethers.id("hospital"), sha("fp"), CID);
record("register (mint)", mint.receipt);

const wallets = Array.from({ length: 100 }, () => Wallet.createRandom());
for (const w of wallets) await ledger.registerIdentity(w.address, "h", sha("fp"), CID);

const asAgg = ledger.connect(aggregator!);
for (const n of [1, 10, 100]) {
  const { task, receipt: createReceipt } = await ledger.createTaskTx({
    baseModelCid: CID,
    baseModelSha256: sha("base"),
    loraConfigHash: sha("lora"),
    aggregator: aggregator!.address,
    strategy: "fedavg",
    minUpdates: 1,
    roundDuration: 3600,
    maxRounds: 2,
    maxExamples: 1_000_000,
    maxUpdateNorm: 10,
  });
  if (n === 1) record("createTask", createReceipt);
  const open = await asAgg.openFirstRound(task, CID, sha("init"));
  if (n === 1) record("openFirstRound", open);

  const contributors: number[] = [];
  for (let i = 0; i < n; i++) {
    const c: UpdateCommitment = {
      task,
      round: 1,
      cid: CID,
      adapterSha256: sha(`u${i}`),
      numExamples: 1000 + i,
      metricsDigest: sha(`m${i}`),
    };
    const binding = { identity: i + 2, deadline: 2 ** 40 };
    const sig = await ledger.signUpdate(wallets[i]!, c, binding);
    const r = await ledger.connect(relayer!).submitSignedUpdate(c, binding, sig);
    if (n === 1 && i === 0) record("submitUpdateWithSignature (relayed)", r, 90_000);
    contributors.push(i + 2); // token 1 is `direct`
  }
  if (n === 1) {
    const c: UpdateCommitment = {
      task,
      round: 1,
      cid: CID,
      adapterSha256: sha("d"),
      numExamples: 1000,
      metricsDigest: sha("m"),
    };
    record("submitUpdate (direct)", await ledger.connect(direct!).submitUpdate(c), 90_000);
  }
  const weights = contributors.map(() => WEIGHT_SCALE / BigInt(n));
  weights[0]! += WEIGHT_SCALE - weights.reduce((a, b) => a + b, 0n);
  const fin = await asAgg.finalizeRound(task, 1, CID, sha("global"), contributors, weights, "fedavg");
  record(`finalizeRound (${n} contributor${n > 1 ? "s" : ""}, opens next round)`, fin, 60_000 + 8_000 * n);
}

// a round that cannot reach its minimum, closed by the aggregator after its deadline (opens the next round)
{
  const { task } = await ledger.createTaskTx({
    baseModelCid: CID,
    baseModelSha256: sha("base"),
    loraConfigHash: sha("lora"),
    aggregator: aggregator!.address,
    strategy: "fedavg",
    minUpdates: 2,
    roundDuration: 60,
    maxRounds: 2,
    maxExamples: 1_000_000,
    maxUpdateNorm: 10,
  });
  await asAgg.openFirstRound(task, CID, sha("init"));
  await ethers.provider.send("evm_increaseTime", [61]);
  record("closeRound (opens next round)", await asAgg.closeRound(task, 1, CID));
}

if (process.argv.includes("--json") || process.env.FOK_BENCH_JSON) {
  console.log(JSON.stringify(rows, null, 2));
} else {
  console.log("| call | gas | budget | within |\n| --- | ---: | ---: | --- |");
  for (const r of rows) {
    const within = r.budget === null ? "-" : r.gas <= r.budget ? "yes" : "NO";
    console.log(`| ${r.call} | ${r.gas.toLocaleString("en")} | ${r.budget?.toLocaleString("en") ?? "-"} | ${within} |`);
  }
}
if (rows.some((r) => r.budget !== null && r.gas > r.budget)) process.exitCode = 1;
