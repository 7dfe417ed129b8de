import { expect } from "chai";
import { network } from "hardhat";
import { anyValue } from "@nomicfoundation/hardhat-ethers-chai-matchers/withArgs";
import type { Signer } from "ethers";
import { UPDATE_TYPES } from "../../node/chain/index.js";
import { rotate } from "../fixtures/consent.js";

const { ethers, networkHelpers } = await network.create();

const BASE_CID = "bafkreibase000000000000000000000000000000000000000000000000";
const BASE_SHA = ethers.sha256(ethers.toUtf8Bytes("base model"));
const LORA_HASH = ethers.id("lora r=8 alpha=16 q,v");
const INIT_CID = "bafkreiinit";
const INIT_SHA = ethers.sha256(ethers.toUtf8Bytes("initial adapter"));
const STRATEGY = ethers.encodeBytes32String("fedavg");
const DURATION = 3600n;
const MAX_ROUNDS = 2n;
const MAX_EXAMPLES = 10_000n;
const MAX_NORM = 5_000_000n; // 5.0 in the contract's 1e-6 units
const E18 = 10n ** 18n;
const FAR = 2n ** 40n; // a signature deadline that never passes in these tests

/** createTask's argument: every setting, with `o` overriding. */
function taskConfig(aggregator: string, o: Record<string, unknown> = {}) {
  return {
    baseModelCid: BASE_CID,
    baseModelSha256: BASE_SHA,
    loraConfigHash: LORA_HASH,
    aggregator,
    strategyId: STRATEGY,
    minUpdates: 2,
    roundDuration: DURATION,
    maxRounds: MAX_ROUNDS,
    maxExamples: MAX_EXAMPLES,
    maxUpdateNorm: MAX_NORM,
    ...o,
  };
}

interface Commitment {
  task: bigint;
  round: bigint;
  /** Signed commitments only: the identity whose key signs, and the signature's deadline. */
  identity: bigint;
  cid: string;
  adapterSha256: string;
  numExamples: bigint;
  metricsDigest: string;
  deadline: bigint;
}

const IDENTITY_OF: Record<string, bigint> = { alice: 1n, bob: 2n, carol: 3n };

function commitment(who: string, round = 1n, task = 1n): Commitment {
  return {
    task,
    round,
    identity: IDENTITY_OF[who] ?? 0n,
    cid: `bafkrei-${who}-r${round}`,
    adapterSha256: ethers.sha256(ethers.toUtf8Bytes(`${who} round ${round}`)),
    numExamples: 100n,
    metricsDigest: ethers.id(`${who} metrics`),
    deadline: FAR,
  };
}

async function deployFederation() {
  const [admin, aggregator, alice, bob, carol, relayer, outsider] = await ethers.getSigners();
  const identity = await ethers.deployContract("LLMIdentity", [admin.address]);
  const federation = await ethers.deployContract("Federation", [await identity.getAddress(), admin.address]);
  for (const [i, s] of [alice, bob, carol].entries()) {
    await identity.register(s.address, ethers.id(`hospital ${i}`), ethers.id("fp"), `bafkreimeta${i}`);
  }
  await federation.createTask(taskConfig(aggregator.address));
  return { identity, federation, admin, aggregator, alice, bob, carol, relayer, outsider };
}

async function withRoundOpen() {
  const f = await deployFederation();
  await f.federation.connect(f.aggregator).openFirstRound(1n, INIT_CID, INIT_SHA);
  return f;
}

async function withTwoSubmissions() {
  const f = await withRoundOpen();
  await submit(f.federation.connect(f.alice), commitment("alice"));
  await submit(f.federation.connect(f.bob), commitment("bob"));
  return f;
}

type Fed = Awaited<ReturnType<typeof deployFederation>>["federation"];

function submit(fed: Fed, c: Commitment) {
  return fed.submitUpdate(c.task, c.round, c.cid, c.adapterSha256, c.numExamples, c.metricsDigest);
}

async function sign(signer: Signer, fed: Fed, c: Commitment, chainId?: bigint) {
  const domain = {
    name: "FlowOfKnowledgeFederation",
    version: "1",
    chainId: chainId ?? (await ethers.provider.getNetwork()).chainId,
    verifyingContract: await fed.getAddress(),
  };
  return signer.signTypedData(domain, UPDATE_TYPES, c);
}

function relay(fed: Fed, c: Commitment, sig: string) {
  const { task, round, identity, cid, adapterSha256, numExamples, metricsDigest, deadline } = c;
  return fed.submitUpdateWithSignature(
    task,
    round,
    identity,
    cid,
    adapterSha256,
    numExamples,
    metricsDigest,
    deadline,
    sig,
  );
}

describe("Federation", function () {
  describe("createTask", function () {
    it("stores the task and emits TaskCreated with every setting", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(deployFederation);
      await expect(
        federation.createTask(taskConfig(aggregator.address, { minUpdates: 3, roundDuration: 60, maxRounds: 5 })),
      )
        .to.emit(federation, "TaskCreated")
        .withArgs(2n, aggregator.address, STRATEGY, BASE_CID, BASE_SHA, LORA_HASH, 3n, 60n, 5n, MAX_EXAMPLES, MAX_NORM);
      const t = await federation.task(2n);
      expect([t.aggregator, t.pendingAggregator]).to.deep.equal([aggregator.address, ethers.ZeroAddress]);
      expect(t.maxUpdateNorm).to.equal(MAX_NORM);
      const schedule = [t.minUpdates, t.maxRounds, t.currentRound, t.roundDuration, t.roundDeadline, t.status];
      expect(schedule).to.deep.equal([3n, 5n, 0n, 60n, 0n, 0n]);
      expect(t.maxExamples).to.equal(MAX_EXAMPLES);
      expect([t.baseModelSha256, t.loraConfigHash, t.strategyId, t.headSha256]).to.deep.equal([
        BASE_SHA,
        LORA_HASH,
        STRATEGY,
        ethers.ZeroHash,
      ]);
      expect(await federation.totalTasks()).to.equal(2n);
    });

    it("reverts without TASK_ADMIN_ROLE", async function () {
      const { federation, aggregator, outsider } = await networkHelpers.loadFixture(deployFederation);
      await expect(federation.connect(outsider).createTask(taskConfig(aggregator.address)))
        .to.be.revertedWithCustomError(federation, "AccessControlUnauthorizedAccount")
        .withArgs(outsider.address, await federation.TASK_ADMIN_ROLE());
    });

    it("reverts for a zero aggregator, empty CID, zero digest and out-of-range round settings", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(deployFederation);
      const create = (o: Record<string, unknown>) => federation.createTask(taskConfig(aggregator.address, o));
      await expect(create({ aggregator: ethers.ZeroAddress })).to.be.revertedWithCustomError(
        federation,
        "FederationZeroAddress",
      );
      await expect(create({ baseModelCid: "" })).to.be.revertedWithCustomError(federation, "FederationZeroCid");
      await expect(create({ baseModelSha256: ethers.ZeroHash })).to.be.revertedWithCustomError(
        federation,
        "FederationZeroDigest",
      );
      const invalid: [Record<string, unknown>, bigint[]][] = [
        [{ minUpdates: 0 }, [0n, DURATION, MAX_ROUNDS, MAX_EXAMPLES, MAX_NORM]],
        // a minimum no round could ever list within a block's gas
        [{ minUpdates: 1001 }, [1001n, DURATION, MAX_ROUNDS, MAX_EXAMPLES, MAX_NORM]],
        [{ roundDuration: 0 }, [2n, 0n, MAX_ROUNDS, MAX_EXAMPLES, MAX_NORM]],
        // a duration that would overflow the deadline, and a cap beyond what the schedule slot holds
        [{ roundDuration: 2n ** 32n }, [2n, 2n ** 32n, MAX_ROUNDS, MAX_EXAMPLES, MAX_NORM]],
        [{ maxRounds: 0 }, [2n, DURATION, 0n, MAX_EXAMPLES, MAX_NORM]],
        [{ maxExamples: 0 }, [2n, DURATION, MAX_ROUNDS, 0n, MAX_NORM]],
        [{ maxExamples: 2n ** 56n }, [2n, DURATION, MAX_ROUNDS, 2n ** 56n, MAX_NORM]],
        [{ maxUpdateNorm: 0 }, [2n, DURATION, MAX_ROUNDS, MAX_EXAMPLES, 0n]],
      ];
      for (const [o, args] of invalid) {
        await expect(create(o))
          .to.be.revertedWithCustomError(federation, "FederationInvalidTaskConfig")
          .withArgs(...args);
      }
      expect(await federation.MAX_MIN_UPDATES()).to.equal(1000n);
      await expect(create({ minUpdates: 1000 })).to.emit(federation, "TaskCreated");
    });

    it("reverts task() for an unknown task", async function () {
      const { federation } = await networkHelpers.loadFixture(deployFederation);
      await expect(federation.task(9n)).to.be.revertedWithCustomError(federation, "FederationUnknownTask").withArgs(9n);
    });
  });

  describe("openFirstRound", function () {
    it("opens round 1 with its deadline and emits RoundOpened", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(deployFederation);
      const tx = await federation.connect(aggregator).openFirstRound(1n, INIT_CID, INIT_SHA);
      const deadline = BigInt(await networkHelpers.time.latest()) + DURATION;
      await expect(tx).to.emit(federation, "RoundOpened").withArgs(1n, 1n, INIT_CID, INIT_SHA, deadline);
      const t = await federation.task(1n);
      expect([t.currentRound, t.roundDeadline, t.status, t.headSha256]).to.deep.equal([1n, deadline, 1n, INIT_SHA]);
    });

    it("reverts for a non-aggregator, an unknown task, a second call, and a zero CID or digest", async function () {
      const { federation, aggregator, outsider } = await networkHelpers.loadFixture(deployFederation);
      await expect(federation.connect(outsider).openFirstRound(1n, INIT_CID, INIT_SHA))
        .to.be.revertedWithCustomError(federation, "FederationNotAggregator")
        .withArgs(1n, outsider.address);
      const asAgg = federation.connect(aggregator);
      await expect(asAgg.openFirstRound(5n, INIT_CID, INIT_SHA))
        .to.be.revertedWithCustomError(federation, "FederationUnknownTask")
        .withArgs(5n);
      await expect(asAgg.openFirstRound(1n, "", INIT_SHA)).to.be.revertedWithCustomError(
        federation,
        "FederationZeroCid",
      );
      await expect(asAgg.openFirstRound(1n, INIT_CID, ethers.ZeroHash)).to.be.revertedWithCustomError(
        federation,
        "FederationZeroDigest",
      );
      await asAgg.openFirstRound(1n, INIT_CID, INIT_SHA);
      await expect(asAgg.openFirstRound(1n, INIT_CID, INIT_SHA))
        .to.be.revertedWithCustomError(federation, "FederationAlreadyStarted")
        .withArgs(1n);
    });
  });

  describe("submitUpdate", function () {
    it("records the commitment and emits UpdateSubmitted with relayer zero", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(withRoundOpen);
      const c = commitment("alice");
      const tx = await submit(federation.connect(alice), c);
      await expect(tx)
        .to.emit(federation, "UpdateSubmitted")
        .withArgs(1n, 1n, 1n, alice.address, ethers.ZeroAddress, c.cid, c.adapterSha256, 100n, c.metricsDigest);
      const s = await federation.submission(1n, 1n, 1n);
      expect([s.adapterSha256, s.numExamples, s.submittedAt, s.aggregated, s.weight]).to.deep.equal([
        c.adapterSha256,
        100n,
        BigInt(await networkHelpers.time.latest()),
        false,
        0n,
      ]);
      const receipt = await tx.wait();
      expect(Number(receipt!.gasUsed)).to.be.at.most(90_000);
    });

    it("rejects a duplicate submission in the same round", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(withTwoSubmissions);
      const again = { ...commitment("alice"), cid: "bafkrei-other", adapterSha256: ethers.id("other") };
      await expect(submit(federation.connect(alice), again))
        .to.be.revertedWithCustomError(federation, "FederationAlreadySubmitted")
        .withArgs(1n, 1n, 1n);
    });

    it("rejects a late submission after the deadline", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(withRoundOpen);
      const deadline = (await federation.task(1n)).roundDeadline;
      await networkHelpers.time.increaseTo(deadline + 1n);
      await expect(submit(federation.connect(alice), commitment("alice")))
        .to.be.revertedWithCustomError(federation, "FederationDeadlinePassed")
        .withArgs(1n, 1n, deadline);
    });

    it("rejects a round that is not open, and an unknown task", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(deployFederation);
      await expect(submit(federation.connect(alice), commitment("alice")))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 1n);
      await expect(submit(federation.connect(alice), commitment("alice", 1n, 4n)))
        .to.be.revertedWithCustomError(federation, "FederationUnknownTask")
        .withArgs(4n);
    });

    it("rejects a sender with no identity, a suspended identity and a revoked identity", async function () {
      const { federation, identity, alice, outsider } = await networkHelpers.loadFixture(withRoundOpen);
      await expect(submit(federation.connect(outsider), commitment("outsider")))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(outsider.address, 0n, 0n);
      await identity.suspend(1n);
      await expect(submit(federation.connect(alice), commitment("alice")))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(alice.address, 1n, 2n);
      await identity.revoke(1n);
      await expect(submit(federation.connect(alice), commitment("alice")))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(alice.address, 0n, 0n);
    });

    it("rejects a claim of more examples than the task's cap, naming identity, claim and cap", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(withRoundOpen);
      const claim = { ...commitment("alice"), numExamples: MAX_EXAMPLES + 1n };
      await expect(submit(federation.connect(alice), claim))
        .to.be.revertedWithCustomError(federation, "FederationTooManyExamples")
        .withArgs(1n, 1n, MAX_EXAMPLES + 1n, MAX_EXAMPLES);
      await expect(submit(federation.connect(alice), { ...claim, numExamples: MAX_EXAMPLES })).to.emit(
        federation,
        "UpdateSubmitted",
      );
    });

    it("rejects a zero CID, zero digest or zero examples", async function () {
      const { federation, alice } = await networkHelpers.loadFixture(withRoundOpen);
      const asAlice = federation.connect(alice);
      await expect(submit(asAlice, { ...commitment("alice"), cid: "" })).to.be.revertedWithCustomError(
        federation,
        "FederationZeroCid",
      );
      await expect(
        submit(asAlice, { ...commitment("alice"), adapterSha256: ethers.ZeroHash }),
      ).to.be.revertedWithCustomError(federation, "FederationZeroDigest");
      await expect(submit(asAlice, { ...commitment("alice"), numExamples: 0n })).to.be.revertedWithCustomError(
        federation,
        "FederationZeroExamples",
      );
    });
  });

  describe("submitUpdateWithSignature", function () {
    it("accepts a relayed update signed by the identity, naming signer and relayer", async function () {
      const { federation, alice, relayer } = await networkHelpers.loadFixture(withRoundOpen);
      const c = commitment("alice");
      const sig = await sign(alice, federation, c);
      const tx = await relay(federation.connect(relayer), c, sig);
      await expect(tx)
        .to.emit(federation, "UpdateSubmitted")
        .withArgs(1n, 1n, 1n, alice.address, relayer.address, c.cid, c.adapterSha256, 100n, c.metricsDigest);
      expect((await federation.submission(1n, 1n, 1n)).adapterSha256).to.equal(c.adapterSha256);
      // about 1,000 more than a direct submission's ceiling: the signature, and reading the task's privacy mode
      expect(Number((await tx.wait())!.gasUsed)).to.be.at.most(92_000);
    });

    it("rejects a used signature when replayed", async function () {
      const { federation, alice, relayer } = await networkHelpers.loadFixture(withRoundOpen);
      const c = commitment("alice");
      const sig = await sign(alice, federation, c);
      await relay(federation.connect(relayer), c, sig);
      await expect(relay(federation.connect(relayer), c, sig))
        .to.be.revertedWithCustomError(federation, "FederationAlreadySubmitted")
        .withArgs(1n, 1n, 1n);
    });

    it("rejects a signature for another round, task, contract or chain, or over other fields", async function () {
      const f = await networkHelpers.loadFixture(withRoundOpen);
      const { federation, identity, alice, relayer, admin, aggregator } = f;
      const c = commitment("alice");
      const asRelayer = federation.connect(relayer);
      // Each signature recovers to some address that holds no identity.
      const rejects = (sig: string) =>
        expect(relay(asRelayer, c, sig))
          .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
          .withArgs(anyValue, 0n, 0n);

      await rejects(await sign(alice, federation, { ...c, round: 2n }));
      await federation.createTask(taskConfig(aggregator.address, { minUpdates: 1 }));
      await rejects(await sign(alice, federation, { ...c, task: 2n }));
      const other = await ethers.deployContract("Federation", [await identity.getAddress(), admin.address]);
      await rejects(await sign(alice, other as unknown as Fed, c));
      await rejects(await sign(alice, federation, c, 1n));
      await rejects(await sign(alice, federation, { ...c, numExamples: 101n }));
      await rejects(await sign(alice, federation, { ...c, cid: c.cid + "x" }));
      // the genuine one still goes through
      await expect(relay(asRelayer, c, await sign(alice, federation, c))).to.emit(federation, "UpdateSubmitted");
    });

    it("rejects signatures by a non-identity, a suspended and a revoked identity", async function () {
      const { federation, identity, alice, relayer, outsider } = await networkHelpers.loadFixture(withRoundOpen);
      const c = commitment("alice");
      const asRelayer = federation.connect(relayer);
      await expect(relay(asRelayer, c, await sign(outsider, federation, c)))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(outsider.address, 0n, 0n);
      await identity.suspend(1n);
      await expect(relay(asRelayer, c, await sign(alice, federation, c)))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(alice.address, 1n, 2n);
      await identity.revoke(1n);
      await expect(relay(asRelayer, c, await sign(alice, federation, c)))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(alice.address, 0n, 0n);
    });

    it("rejects a signature by the old key after key rotation", async function () {
      const { federation, identity, alice, relayer, outsider } = await networkHelpers.loadFixture(withRoundOpen);
      await rotate(identity, alice, outsider.address);
      const c = commitment("alice");
      await expect(relay(federation.connect(relayer), c, await sign(alice, federation, c)))
        .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
        .withArgs(alice.address, 0n, 0n);
      await expect(relay(federation.connect(relayer), c, await sign(outsider, federation, c)))
        .to.emit(federation, "UpdateSubmitted")
        .withArgs(1n, 1n, 1n, outsider.address, relayer.address, c.cid, c.adapterSha256, 100n, c.metricsDigest);
    });

    it("EIP-712 commitment binds identity and deadline: another identity's id or a late one fails", async function () {
      const { federation, alice, relayer } = await networkHelpers.loadFixture(withRoundOpen);
      const asRelayer = federation.connect(relayer);
      const c = commitment("alice");
      // alice signs naming bob's identity: the signature is alice's, so it cannot count as bob's
      const asBob = { ...c, identity: 2n };
      await expect(relay(asRelayer, asBob, await sign(alice, federation, asBob)))
        .to.be.revertedWithCustomError(federation, "FederationWrongIdentity")
        .withArgs(alice.address, 1n, 2n);
      // a relayer that changes the identity or the deadline of a genuine signature recovers another key
      const sig = await sign(alice, federation, c);
      for (const changed of [asBob, { ...c, deadline: FAR - 1n }]) {
        await expect(relay(asRelayer, changed, sig))
          .to.be.revertedWithCustomError(federation, "FederationIdentityNotActive")
          .withArgs(anyValue, 0n, 0n);
      }
      // a signature held past its deadline
      const now = BigInt(await networkHelpers.time.latest());
      const short = { ...c, deadline: now + 1n };
      const shortSig = await sign(alice, federation, short);
      await networkHelpers.time.increase(5);
      await expect(relay(asRelayer, short, shortSig))
        .to.be.revertedWithCustomError(federation, "FederationSignatureExpired")
        .withArgs(now + 1n);
      await expect(relay(asRelayer, c, sig)).to.emit(federation, "UpdateSubmitted");
    });

    it("rejects a malformed signature with OpenZeppelin's ECDSA error", async function () {
      const { federation, relayer } = await networkHelpers.loadFixture(withRoundOpen);
      await expect(relay(federation.connect(relayer), commitment("alice"), "0x1234"))
        .to.be.revertedWithCustomError(federation, "ECDSAInvalidSignatureLength")
        .withArgs(2n);
    });
  });

  describe("declareUnavailable", function () {
    it("records the aggregator's claim for submitters; the round finalizes without them", async function () {
      const { federation, aggregator, carol } = await networkHelpers.loadFixture(withTwoSubmissions);
      await submit(federation.connect(carol), commitment("carol"));
      await expect(federation.connect(aggregator).declareUnavailable(1n, 1n, [2n]))
        .to.emit(federation, "UpdatesUnavailable")
        .withArgs(1n, 1n, [2n]);
      const fin = federation
        .connect(aggregator)
        .finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 3n], [E18 / 2n, E18 / 2n], STRATEGY);
      await expect(fin).to.emit(federation, "RoundFinalized");
      const left = await federation.submission(1n, 1n, 2n);
      expect([left.aggregated, left.weight]).to.deep.equal([false, 0n]);
      await expect(federation.connect(aggregator).declareUnavailable(1n, 1n, [2n]))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 1n);
    });

    it("reverts for another caller, an identity that did not submit, an unknown task", async function () {
      const { federation, aggregator, alice } = await networkHelpers.loadFixture(withTwoSubmissions);
      await expect(federation.connect(alice).declareUnavailable(1n, 1n, [2n]))
        .to.be.revertedWithCustomError(federation, "FederationNotAggregator")
        .withArgs(1n, alice.address);
      await expect(federation.connect(aggregator).declareUnavailable(1n, 1n, [1n, 3n]))
        .to.be.revertedWithCustomError(federation, "FederationNotSubmitter")
        .withArgs(1n, 1n, 3n);
      await expect(federation.connect(aggregator).declareUnavailable(1n, 2n, [1n]))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 2n);
      await expect(federation.connect(aggregator).declareUnavailable(9n, 1n, [1n]))
        .to.be.revertedWithCustomError(federation, "FederationUnknownTask")
        .withArgs(9n);
    });
  });

  describe("finalizeRound", function () {
    const W = [E18 / 4n, (3n * E18) / 4n];

    it("publishes the global adapter, contributors and weights, then opens the next round", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      const gSha = ethers.id("global 1");
      const tx = await federation
        .connect(aggregator)
        .finalizeRound(1n, 1n, "bafkrei-global1", gSha, [1n, 2n], W, STRATEGY);
      const deadline = BigInt(await networkHelpers.time.latest()) + DURATION;
      await expect(tx)
        .to.emit(federation, "RoundFinalized")
        .withArgs(1n, 1n, STRATEGY, "bafkrei-global1", gSha, [1n, 2n], W);
      await expect(tx).to.emit(federation, "RoundOpened").withArgs(1n, 2n, "bafkrei-global1", gSha, deadline);
      await expect(tx).to.not.emit(federation, "TaskCompleted");
      expect((await federation.task(1n)).headSha256).to.equal(gSha);
      const s1 = await federation.submission(1n, 1n, 1n);
      const s2 = await federation.submission(1n, 1n, 2n);
      expect([s1.aggregated, s1.weight, s2.aggregated, s2.weight]).to.deep.equal([true, W[0], true, W[1]]);
      const t = await federation.task(1n);
      expect([t.currentRound, t.roundDeadline, t.status]).to.deep.equal([2n, deadline, 1n]);
    });

    it("completes the task after its last round and takes no more submissions", async function () {
      const { federation, aggregator, alice, bob } = await networkHelpers.loadFixture(withTwoSubmissions);
      const asAgg = federation.connect(aggregator);
      await asAgg.finalizeRound(1n, 1n, "bafkrei-g1", ethers.id("g1"), [1n, 2n], W, STRATEGY);
      await submit(federation.connect(alice), commitment("alice", 2n));
      await submit(federation.connect(bob), commitment("bob", 2n));
      const tx = asAgg.finalizeRound(1n, 2n, "bafkrei-g2", ethers.id("g2"), [1n, 2n], W, STRATEGY);
      await expect(tx).to.emit(federation, "TaskCompleted").withArgs(1n, 2n, "bafkrei-g2", ethers.id("g2"));
      await expect(tx).to.not.emit(federation, "RoundOpened");
      expect((await federation.task(1n)).status).to.equal(2n);
      await expect(submit(federation.connect(alice), commitment("alice", 3n)))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 3n);
      await expect(asAgg.finalizeRound(1n, 2n, "bafkrei-g2", ethers.id("g2"), [1n, 2n], W, STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 2n);
    });

    it("rejects a caller other than the task's aggregator", async function () {
      const { federation, admin } = await networkHelpers.loadFixture(withTwoSubmissions);
      await expect(federation.connect(admin).finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 2n], W, STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationNotAggregator")
        .withArgs(1n, admin.address);
    });

    it("rejects a strategy other than the task's, naming both", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      const krum = ethers.encodeBytes32String("krum");
      await expect(federation.connect(aggregator).finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 2n], W, krum))
        .to.be.revertedWithCustomError(federation, "FederationWrongStrategy")
        .withArgs(1n, STRATEGY, krum);
    });

    it("rejects listing an identity that did not submit in the round", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      await expect(
        federation.connect(aggregator).finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 3n], W, STRATEGY),
      )
        .to.be.revertedWithCustomError(federation, "FederationNotSubmitter")
        .withArgs(1n, 1n, 3n);
    });

    it("rejects unsorted or repeated contributors, bad lengths, too few, bad weights, wrong round", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      const asAgg = federation.connect(aggregator);
      const g = ethers.id("g");
      await expect(asAgg.finalizeRound(1n, 1n, "c", g, [2n, 1n], W, STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationContributorsNotSorted")
        .withArgs(1n, 1n);
      await expect(asAgg.finalizeRound(1n, 1n, "c", g, [1n, 1n], W, STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationContributorsNotSorted")
        .withArgs(1n, 1n);
      await expect(asAgg.finalizeRound(1n, 1n, "c", g, [1n, 2n], [E18], STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationLengthMismatch")
        .withArgs(2n, 1n);
      await expect(asAgg.finalizeRound(1n, 1n, "c", g, [1n], [E18], STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationTooFewUpdates")
        .withArgs(1n, 1n, 1n, 2n);
      await expect(asAgg.finalizeRound(1n, 1n, "c", g, [1n, 2n], [E18, 1n], STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationWeightsSum")
        .withArgs(E18 + 1n);
      await expect(asAgg.finalizeRound(1n, 2n, "c", g, [1n, 2n], W, STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 2n);
      await expect(asAgg.finalizeRound(1n, 1n, "", g, [1n, 2n], W, STRATEGY)).to.be.revertedWithCustomError(
        federation,
        "FederationZeroCid",
      );
      await expect(
        asAgg.finalizeRound(1n, 1n, "c", ethers.ZeroHash, [1n, 2n], W, STRATEGY),
      ).to.be.revertedWithCustomError(federation, "FederationZeroDigest");
    });

    it("zero-weight contributors counted towards the minimum: not any more", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      const asAgg = federation.connect(aggregator);
      // two listed, one with weight zero: one real contributor, below the task's minimum of two
      await expect(asAgg.finalizeRound(1n, 1n, "c", ethers.id("g"), [1n, 2n], [E18, 0n], STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationTooFewUpdates")
        .withArgs(1n, 1n, 1n, 2n);
      await expect(asAgg.finalizeRound(1n, 1n, "c", ethers.id("g"), [1n, 2n], [E18 - 1n, 1n], STRATEGY)).to.emit(
        federation,
        "RoundFinalized",
      );
    });

    it("stays within 60,000 + 8,000 gas per contributor", async function () {
      const { federation, aggregator } = await networkHelpers.loadFixture(withTwoSubmissions);
      const cid = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
      const tx = await federation.connect(aggregator).finalizeRound(1n, 1n, cid, ethers.id("g"), [1n, 2n], W, STRATEGY);
      expect(Number((await tx.wait())!.gasUsed)).to.be.at.most(60_000 + 2 * 8_000);
    });
  });

  describe("closeRound", function () {
    it("round below minimum at deadline: the aggregator closes it, the next starts where it did", async function () {
      const { federation, aggregator, alice } = await networkHelpers.loadFixture(withRoundOpen);
      await submit(federation.connect(alice), commitment("alice")); // 1 of the 2 the task needs
      const asAgg = federation.connect(aggregator);
      const deadline = (await federation.task(1n)).roundDeadline;
      await expect(asAgg.closeRound(1n, 1n, INIT_CID))
        .to.be.revertedWithCustomError(federation, "FederationTooEarlyToClose")
        .withArgs(1n, 1n, aggregator.address, deadline);
      await networkHelpers.time.increaseTo(deadline + 1n);
      await expect(asAgg.closeRound(1n, 1n, "bafkrei-other"))
        .to.be.revertedWithCustomError(federation, "FederationWrongStartCid")
        .withArgs(1n, 1n);
      const tx = await asAgg.closeRound(1n, 1n, INIT_CID);
      const next = BigInt(await networkHelpers.time.latest()) + DURATION;
      await expect(tx).to.emit(federation, "RoundClosed").withArgs(1n, 1n, aggregator.address);
      await expect(tx).to.emit(federation, "RoundOpened").withArgs(1n, 2n, INIT_CID, INIT_SHA, next);
      const t = await federation.task(1n);
      expect([t.currentRound, t.roundDeadline, t.status, t.headSha256]).to.deep.equal([2n, next, 1n, INIT_SHA]);
      await expect(asAgg.finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n], [E18], STRATEGY))
        .to.be.revertedWithCustomError(federation, "FederationRoundNotOpen")
        .withArgs(1n, 1n);
    });

    it("anyone may close a round one round duration after its deadline (the aggregator is gone)", async function () {
      const { federation, outsider } = await networkHelpers.loadFixture(withRoundOpen);
      const deadline = (await federation.task(1n)).roundDeadline;
      await networkHelpers.time.increaseTo(deadline + 1n);
      await expect(federation.connect(outsider).closeRound(1n, 1n, INIT_CID))
        .to.be.revertedWithCustomError(federation, "FederationTooEarlyToClose")
        .withArgs(1n, 1n, outsider.address, deadline + DURATION);
      await networkHelpers.time.increaseTo(deadline + DURATION + 1n);
      await expect(federation.connect(outsider).closeRound(1n, 1n, INIT_CID))
        .to.emit(federation, "RoundClosed")
        .withArgs(1n, 1n, outsider.address);
      // the last round closed completes the task with the adapter it started from
      const d2 = (await federation.task(1n)).roundDeadline;
      await networkHelpers.time.increaseTo(d2 + DURATION + 1n);
      await expect(federation.connect(outsider).closeRound(1n, 2n, INIT_CID))
        .to.emit(federation, "TaskCompleted")
        .withArgs(1n, 2n, INIT_CID, INIT_SHA);
      expect((await federation.task(1n)).status).to.equal(2n);
    });
  });

  describe("aggregator handover", function () {
    it("lost aggregator key: the task admin proposes a new one, which takes over when it accepts", async function () {
      const { federation, admin, aggregator, outsider, relayer } = await networkHelpers.loadFixture(withTwoSubmissions);
      await expect(federation.connect(outsider).proposeAggregator(1n, outsider.address))
        .to.be.revertedWithCustomError(federation, "AccessControlUnauthorizedAccount")
        .withArgs(outsider.address, await federation.TASK_ADMIN_ROLE());
      await expect(federation.connect(admin).proposeAggregator(1n, relayer.address))
        .to.emit(federation, "AggregatorProposed")
        .withArgs(1n, aggregator.address, relayer.address);
      expect((await federation.task(1n)).pendingAggregator).to.equal(relayer.address);
      // until it accepts, the old one stays in charge and nobody else may accept
      await expect(federation.connect(outsider).acceptAggregator(1n))
        .to.be.revertedWithCustomError(federation, "FederationNotPendingAggregator")
        .withArgs(1n, outsider.address);
      await expect(federation.connect(relayer).acceptAggregator(1n))
        .to.emit(federation, "AggregatorChanged")
        .withArgs(1n, aggregator.address, relayer.address);
      const t = await federation.task(1n);
      expect([t.aggregator, t.pendingAggregator]).to.deep.equal([relayer.address, ethers.ZeroAddress]);
      const W = [E18 / 2n, E18 / 2n];
      await expect(
        federation.connect(aggregator).finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 2n], W, STRATEGY),
      )
        .to.be.revertedWithCustomError(federation, "FederationNotAggregator")
        .withArgs(1n, aggregator.address);
      await expect(
        federation.connect(relayer).finalizeRound(1n, 1n, "bafkrei-g", ethers.id("g"), [1n, 2n], W, STRATEGY),
      ).to.emit(federation, "RoundFinalized");
      await expect(federation.connect(relayer).acceptAggregator(1n))
        .to.be.revertedWithCustomError(federation, "FederationNotPendingAggregator")
        .withArgs(1n, relayer.address);
    });
  });
});
