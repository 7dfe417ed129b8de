import { expect } from "chai";
import { network } from "hardhat";
import { BrowserProvider, type Eip1193Provider } from "ethers";
import { ChainRevertError } from "../../node/errors.js";
import {
  FederationLedger,
  IdentityStatus,
  IdentityTimeline,
  LogReader,
  WEIGHT_SCALE,
  deployContracts,
  Revert,
  TaskStatus,
  isRevert,
  strategyId,
  type UpdateCommitment,
} from "../../node/chain/index.js";
import { Federation__factory, LLMIdentity__factory } from "../../types/ethers-contracts/index.js";
import { rejection } from "../../node/testing/rejection.js";

const connection = await network.create();
const { ethers, networkHelpers } = connection;

const sha = (s: string) => ethers.sha256(ethers.toUtf8Bytes(s));

async function deployed() {
  const [admin, aggregator, a, b, c, relayer] = await ethers.getSigners();
  const ledger = await deployContracts(admin);
  return { ledger, admin, aggregator, clients: [a, b, c], relayer };
}

describe("node/chain FederationLedger", function () {
  it("deploys both contracts wired together, with the admin holding every role", async function () {
    const { ledger, admin } = await networkHelpers.loadFixture(deployed);
    expect(await ledger.identityRegistry()).to.equal(ledger.deployment.identity);
    const all = { admin: true, identityAdmin: true, registrar: true, taskAdmin: true };
    expect(await ledger.roles(admin.address)).to.deep.equal(all);
    expect(ledger.deployment.chainId).to.equal(31337);
  });

  it("one account holds every admin role: separateRoles hands each to its own account and drops it", async function () {
    const { ledger, admin, clients } = await networkHelpers.loadFixture(deployed);
    const [registrar, taskAdmin, governor] = clients.map((c) => c!.address);
    await ledger.separateRoles({ registrar, taskAdmin, admin: governor });
    const none = { admin: false, identityAdmin: false, registrar: false, taskAdmin: false };
    expect(await ledger.roles(admin.address)).to.deep.equal(none);
    expect(await ledger.roles(registrar!)).to.deep.equal({ ...none, registrar: true });
    expect(await ledger.roles(taskAdmin!)).to.deep.equal({ ...none, taskAdmin: true });
    expect(await ledger.roles(governor!)).to.deep.equal({ ...none, admin: true, identityAdmin: true });
    // the deployer can no longer register hospitals
    const err = await rejection(ledger.registerIdentity(admin.address, "h", sha("fp"), "bafkreimeta"));
    expect(isRevert(err, Revert.Unauthorized)).to.equal(true);
  });

  it("turns a revert into ChainRevertError with the custom error's name and arguments", async function () {
    const { ledger, clients } = await networkHelpers.loadFixture(deployed);
    const asClient = ledger.connect(clients[0]!);
    const c: UpdateCommitment = {
      task: 7,
      round: 1,
      cid: "bafkreiabc",
      adapterSha256: sha("x"),
      numExamples: 3,
      metricsDigest: ethers.ZeroHash,
    };
    let caught: unknown;
    try {
      await asClient.submitUpdate(c);
    } catch (e) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(ChainRevertError);
    const err = caught as ChainRevertError;
    expect(err.name).to.equal("ChainRevertError");
    expect(err.code).to.equal("ERR_CHAIN_REVERT");
    expect(err.errorName).to.equal("FederationUnknownTask");
    expect(err.args).to.deep.equal([7n]);
    expect(err.message).to.equal("submitUpdate reverted: FederationUnknownTask(7)");
  });

  it("reads a 3-client, 3-round task back from events alone, equal to what was written", async function () {
    const { ledger, aggregator, clients, relayer } = await networkHelpers.loadFixture(deployed);
    const ids: number[] = [];
    for (const [i, s] of clients.entries()) {
      ids.push(await ledger.registerIdentity(s.address, `hospital-${i}`, sha("fingerprint"), `bafkreimeta${i}`));
    }
    expect(ids).to.deep.equal([1, 2, 3]);
    const task = await ledger.createTask({
      baseModelCid: "bafkreibase",
      baseModelSha256: sha("base"),
      loraConfigHash: sha("lora"),
      aggregator: aggregator.address,
      strategy: "fedavg",
      minUpdates: 2,
      roundDuration: 600,
      maxRounds: 3,
      maxExamples: 500,
      maxUpdateNorm: 2.5,
    });
    expect(task).to.equal(1);
    const asAgg = ledger.connect(aggregator);
    await asAgg.openFirstRound(task, "bafkreiinit", sha("init"));

    const written: {
      round: number;
      updates: UpdateCommitment[];
      relayed: boolean[];
      global: string;
      weights: bigint[];
    }[] = [];
    for (let round = 1; round <= 3; round++) {
      const updates: UpdateCommitment[] = [];
      const relayed: boolean[] = [];
      for (const [i, s] of clients.entries()) {
        const c: UpdateCommitment = {
          task,
          round,
          cid: `bafkrei-c${i}-r${round}`,
          adapterSha256: sha(`c${i} r${round}`),
          numExamples: 10 * (i + 1) + round,
          metricsDigest: sha(`metrics ${i} ${round}`),
        };
        // client 1 goes through a relayer in every round; the others send themselves
        if (i === 1) {
          const binding = { identity: ids[i]!, deadline: 2 ** 40 };
          const sig = await ledger.signUpdate(s, c, binding);
          await ledger.connect(relayer).submitSignedUpdate(c, binding, sig);
        } else {
          await ledger.connect(s).submitUpdate(c);
        }
        updates.push(c);
        relayed.push(i === 1);
      }
      const total = updates.reduce((n, u) => n + BigInt(u.numExamples), 0n);
      const weights = updates.map((u) => (BigInt(u.numExamples) * WEIGHT_SCALE) / total);
      weights[2]! += WEIGHT_SCALE - weights.reduce((x, y) => x + y, 0n);
      await asAgg.finalizeRound(
        task,
        round,
        `bafkrei-global-r${round}`,
        sha(`global ${round}`),
        ids,
        weights,
        "fedavg",
      );
      written.push({ round, updates, relayed, global: `bafkrei-global-r${round}`, weights });
    }

    // A fresh read-only view: nothing but the provider and the deployment addresses.
    const reader = new FederationLedger(ledger.deployment, ethers.provider);
    const h = await reader.readTaskHistory(task);
    expect(h.task).to.equal(1);
    expect(h.baseModelCid).to.equal("bafkreibase");
    expect(h.baseModelSha256).to.equal(sha("base"));
    expect(h.loraConfigHash).to.equal(sha("lora"));
    expect(h.aggregator).to.equal(aggregator.address);
    expect(h.strategy).to.equal("fedavg");
    expect(h.strategyId).to.equal(strategyId("fedavg"));
    expect([h.minUpdates, h.roundDuration, h.maxRounds, h.maxExamples, h.maxUpdateNorm]).to.deep.equal([
      2, 600, 3, 500, 2.5,
    ]);
    expect(h.aggregatorChanges).to.deep.equal([]);
    const relayedTx = h.rounds[1]!.submissions[1]!.transactionHash;
    const call = await reader.relayedCall(relayedTx);
    expect(call!.binding).to.deep.equal({ identity: 2, deadline: 2 ** 40 });
    expect(reader.recoverUpdateSigner(call!.commitment, call!.binding, call!.signature)).to.equal(clients[1]!.address);
    // the signature names identity 2: read as identity 3's, it recovers to another key
    const asOther = reader.recoverUpdateSigner(call!.commitment, { ...call!.binding, identity: 3 }, call!.signature);
    expect(asOther).to.not.equal(clients[1]!.address);
    expect(h.completed).to.equal(true);
    expect(h.rounds.map((r) => r.round)).to.deep.equal([1, 2, 3]);
    for (const [k, r] of h.rounds.entries()) {
      const w = written[k]!;
      expect(r.startCid).to.equal(k === 0 ? "bafkreiinit" : written[k - 1]!.global);
      expect(r.startSha256).to.equal(k === 0 ? sha("init") : sha(`global ${k}`));
      expect(
        r.submissions.map(({ task, round, cid, adapterSha256, numExamples, metricsDigest }) => ({
          task,
          round,
          cid,
          adapterSha256,
          numExamples,
          metricsDigest,
        })),
      ).to.deep.equal(w.updates);
      expect(r.submissions.map((s) => s.identity)).to.deep.equal(ids);
      expect(r.submissions.map((s) => s.signer)).to.deep.equal(clients.map((c) => c.address));
      expect(r.submissions.map((s) => s.relayer)).to.deep.equal([null, relayer.address, null]);
      expect(r.finalized).to.not.equal(null);
      expect(r.finalized!.globalCid).to.equal(w.global);
      expect(r.finalized!.globalSha256).to.equal(sha(`global ${w.round}`));
      expect(r.finalized!.contributors).to.deep.equal(ids);
      expect(r.finalized!.weights).to.deep.equal(w.weights);
      expect(r.finalized!.strategyId).to.equal(strategyId("fedavg"));
    }
    // storage agrees with the events
    const info = await reader.taskInfo(task);
    expect(info.headSha256).to.equal(sha("global 3"));
    expect([info.status, info.currentRound, info.maxRounds, info.strategy]).to.deep.equal([
      TaskStatus.Completed,
      3,
      3,
      "fedavg",
    ]);
    const sub = await reader.submission(task, 2, 3);
    expect([sub.adapterSha256, sub.numExamples, sub.aggregated, sub.weight]).to.deep.equal([
      sha("c2 r2"),
      32,
      true,
      written[1]!.weights[2],
    ]);
    // one round read from its own indexed events is the same round the whole history holds
    for (const r of h.rounds) expect(await reader.readRound(task, r.round)).to.deep.equal(r);
    expect(await reader.readRound(task, 4)).to.equal(null);
    expect(await reader.finalizations(task, 2)).to.deep.equal([h.rounds[1]!.finalized]);
    expect(await reader.submissionEvents(task, 2, 3)).to.deep.equal([h.rounds[1]!.submissions[2]]);
  });

  it("names every custom error of both contracts in Revert, and matches reverts by those names", async function () {
    const { ledger, clients } = await networkHelpers.loadFixture(deployed);
    const abiErrors = [...Federation__factory.abi, ...LLMIdentity__factory.abi]
      .filter((f) => f.type === "error")
      .map((f) => f.name);
    expect([...new Set(Object.values(Revert))].sort()).to.deep.equal([...new Set(abiErrors)].sort());
    const err = await rejection(ledger.connect(clients[0]!).openFirstRound(9, "bafkreistart", sha("s")));
    expect(isRevert(err, Revert.UnknownTask)).to.equal(true);
    expect(isRevert(err, Revert.RoundNotOpen)).to.equal(false);
  });

  it("reads time from the chain's clock: the pending block's timestamp, moved by the node's time", async function () {
    const { ledger } = await networkHelpers.loadFixture(deployed);
    const before = await ledger.chainTime();
    const latest = (await ethers.provider.getBlock("latest"))!.timestamp;
    expect(before).to.be.greaterThan(latest);
    await networkHelpers.time.increase(3600);
    expect(await ledger.chainTime()).to.be.at.least(before + 3600);
  });

  it("reads identities with their status and key history from events", async function () {
    const { ledger, clients, relayer } = await networkHelpers.loadFixture(deployed);
    const [a, b] = clients;
    await ledger.registerIdentity(a!.address, "hospital-a", sha("fp"), "bafkreimeta-a");
    await ledger.registerIdentity(b!.address, "hospital-b", sha("fp"), "bafkreimeta-b");
    await ledger.suspend(1);
    await ledger.reinstate(1);
    const deadline = (await ledger.chainTime()) + 600;
    await ledger.rotateKey(
      1,
      relayer.address,
      deadline,
      await ledger.signKeyRotation(a!, 1, relayer.address, deadline),
    );
    await ledger.revoke(2);
    const ids = await new FederationLedger(ledger.deployment, ethers.provider).readIdentities();
    expect(ids.map((i) => [i.tokenId, i.status, i.signer, i.metadataCid])).to.deep.equal([
      [1, IdentityStatus.Active, relayer.address, "bafkreimeta-a"],
      [2, IdentityStatus.Revoked, b!.address, "bafkreimeta-b"],
    ]);
    expect(ids[0]!.institutionId).to.equal(ethers.id("hospital-a"));
    expect(ids[0]!.events.map((e) => [e.kind, e.signer])).to.deep.equal([
      ["registered", a!.address],
      ["suspended", a!.address],
      ["reinstated", a!.address],
      ["keyRotated", relayer.address],
    ]);
    expect(ids[1]!.events.map((e) => e.kind)).to.deep.equal(["registered", "revoked"]);
    expect(await ledger.identityOfSigner(relayer.address)).to.deep.equal({ tokenId: 1, status: IdentityStatus.Active });
    // what the registry's state said at every past block, rebuilt from the events alone (no archive reads)
    const timeline = new IdentityTimeline(ids);
    const mismatches: string[] = [];
    for (let block = ledger.deployment.deployBlock; block <= (await ledger.blockNumber()); block++) {
      for (const signer of [a!.address, b!.address, relayer.address]) {
        const state = await ledger.identityOfSigner(signer, block);
        const rebuilt = timeline.ofSigner(signer, block);
        if (JSON.stringify(state) !== JSON.stringify(rebuilt)) mismatches.push(`${block} ${signer}`);
      }
      for (const id of [1, 2]) {
        // before its registration the token does not exist: the view reverts, the timeline says None
        const state = await ledger.identityRecord(id, block).then(
          (r) => r.status,
          () => IdentityStatus.None,
        );
        if (state !== timeline.at(id, block).status) mismatches.push(`${block} identity ${id}`);
      }
    }
    expect(mismatches).to.deep.equal([]);
    expect(timeline.at(2, await ledger.blockNumber())).to.deep.equal({ signer: b!.address, status: 3 });
    expect(timeline.ofSigner(b!.address, await ledger.blockNumber())).to.deep.equal({ tokenId: 0, status: 0 });
  });

  it("reads history in bounded windows, learns a smaller cap, and reads only new blocks on a poll", async function () {
    const { ledger, clients } = await networkHelpers.loadFixture(deployed);
    for (const [i, c] of clients.entries()) await ledger.registerIdentity(c.address, `h${i}`, sha("fp"), `bafkrei${i}`);
    await networkHelpers.mine(20);
    const windows: [number, number][] = [];
    // an endpoint that refuses more than 8 blocks per query, as hosted ones cap eth_getLogs
    const endpoint: Eip1193Provider = {
      request: async (a) => {
        if (a.method === "eth_getLogs") {
          const [{ fromBlock, toBlock }] = a.params as [{ fromBlock: string; toBlock: string }];
          windows.push([Number(fromBlock), Number(toBlock)]);
          if (Number(toBlock) - Number(fromBlock) + 1 > 8) throw new Error("query exceeds max block range 8");
        }
        return connection.provider.request(a);
      },
    };
    const provider = new BrowserProvider(endpoint);
    const logs = new LogReader(provider, ledger.deployment.deployBlock, { span: 32 });
    const reader = new FederationLedger(ledger.deployment, provider, logs);
    const head = await ledger.blockNumber();
    const ids = await reader.readIdentities();
    expect(ids.map((i) => i.tokenId)).to.deep.equal([1, 2, 3]);
    const served = windows.filter(([f, t]) => t - f + 1 <= 8);
    expect(served.every(([f, t]) => t - f + 1 <= 8)).to.equal(true);
    // each of the five identity event kinds covers deployBlock..head exactly once in the windows it was served
    const covered = served.reduce((n, [f, t]) => n + (t - f + 1), 0);
    expect(covered).to.equal(5 * (head - ledger.deployment.deployBlock + 1));
    // a poll after 3 new blocks reads only those
    await networkHelpers.mine(3);
    windows.length = 0;
    await reader.readIdentities();
    expect(windows).to.deep.equal(Array.from({ length: 5 }, () => [head + 1, head + 3]));
  });
});
