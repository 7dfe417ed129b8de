import { expect } from "chai";
import { network } from "hardhat";
import { FAR_DEADLINE, rotate, rotationConsent } from "../fixtures/consent.js";

const { ethers, networkHelpers } = await network.create();

const INSTITUTION = ethers.id("St. Mary's Hospital");
const FINGERPRINT = ethers.id("base-model-sha256|lora-config");
const CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";

enum Status {
  None,
  Active,
  Suspended,
  Revoked,
}

async function deployIdentity() {
  const [admin, alice, bob, carol, outsider] = await ethers.getSigners();
  const identity = await ethers.deployContract("LLMIdentity", [admin.address]);
  const REGISTRAR_ROLE = await identity.REGISTRAR_ROLE();
  return { identity, admin, alice, bob, carol, outsider, REGISTRAR_ROLE };
}

async function withAliceRegistered() {
  const f = await deployIdentity();
  await f.identity.register(f.alice.address, INSTITUTION, FINGERPRINT, CID);
  return f;
}

describe("LLMIdentity", function () {
  describe("register", function () {
    it("mints token 1 to the signer with its record; emits IdentityRegistered, Locked, Transfer", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(deployIdentity);
      const tx = identity.register(alice.address, INSTITUTION, FINGERPRINT, CID);
      await expect(tx)
        .to.emit(identity, "IdentityRegistered")
        .withArgs(1n, alice.address, INSTITUTION, FINGERPRINT, CID);
      await expect(tx).to.emit(identity, "Locked").withArgs(1n);
      await expect(tx).to.emit(identity, "Transfer").withArgs(ethers.ZeroAddress, alice.address, 1n);
      const ts = BigInt(await networkHelpers.time.latest());
      const rec = await identity.identity(1n);
      expect(rec.signer).to.equal(alice.address);
      expect(rec.status).to.equal(BigInt(Status.Active));
      expect(rec.registeredAt).to.equal(ts);
      expect(rec.institutionId).to.equal(INSTITUTION);
      expect(rec.modelFingerprint).to.equal(FINGERPRINT);
      expect(rec.metadataCid).to.equal(CID);
      expect(await identity.ownerOf(1n)).to.equal(alice.address);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([1n, BigInt(Status.Active)]);
      expect(await identity.totalIdentities()).to.equal(1n);
      expect(await identity.tokenURI(1n)).to.equal(`ipfs://${CID}`);
      expect(await identity.locked(1n)).to.equal(true);
    });

    it("reverts for a caller without REGISTRAR_ROLE", async function () {
      const { identity, alice, outsider, REGISTRAR_ROLE } = await networkHelpers.loadFixture(deployIdentity);
      await expect(identity.connect(outsider).register(alice.address, INSTITUTION, FINGERPRINT, CID))
        .to.be.revertedWithCustomError(identity, "AccessControlUnauthorizedAccount")
        .withArgs(outsider.address, REGISTRAR_ROLE);
    });

    it("reverts for the zero address and an empty metadata CID", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(deployIdentity);
      await expect(identity.register(ethers.ZeroAddress, INSTITUTION, FINGERPRINT, CID)).to.be.revertedWithCustomError(
        identity,
        "LLMIdentityZeroAddress",
      );
      await expect(identity.register(alice.address, INSTITUTION, FINGERPRINT, "")).to.be.revertedWithCustomError(
        identity,
        "LLMIdentityEmptyMetadata",
      );
    });

    it("allows one live identity per address", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(withAliceRegistered);
      await expect(identity.register(alice.address, INSTITUTION, FINGERPRINT, CID))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySignerTaken")
        .withArgs(alice.address, 1n);
    });

    it("lets a revoked identity's key hold a new identity", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(withAliceRegistered);
      await identity.revoke(1n);
      await expect(identity.register(alice.address, INSTITUTION, FINGERPRINT, CID))
        .to.emit(identity, "IdentityRegistered")
        .withArgs(2n, alice.address, INSTITUTION, FINGERPRINT, CID);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([2n, BigInt(Status.Active)]);
      expect((await identity.identity(1n)).status).to.equal(BigInt(Status.Revoked));
    });
  });

  describe("soulbound", function () {
    it("reverts transferFrom, both safeTransferFrom, approve and setApprovalForAll", async function () {
      const { identity, alice, bob } = await networkHelpers.loadFixture(withAliceRegistered);
      const asAlice = identity.connect(alice);
      await expect(asAlice.transferFrom(alice.address, bob.address, 1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(1n);
      await expect(asAlice["safeTransferFrom(address,address,uint256)"](alice.address, bob.address, 1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(1n);
      await expect(asAlice["safeTransferFrom(address,address,uint256,bytes)"](alice.address, bob.address, 1n, "0x"))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(1n);
      await expect(asAlice.approve(bob.address, 1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(1n);
      await expect(asAlice.setApprovalForAll(bob.address, true))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(0n);
      expect(await identity.ownerOf(1n)).to.equal(alice.address);
    });

    it("reports ERC-5192, ERC-721 and AccessControl interfaces", async function () {
      const { identity } = await networkHelpers.loadFixture(deployIdentity);
      expect(await identity.supportsInterface("0xb45a3c0e")).to.equal(true); // ERC-5192
      expect(await identity.supportsInterface("0x80ac58cd")).to.equal(true); // ERC-721
      expect(await identity.supportsInterface("0x7965db0b")).to.equal(true); // IAccessControl
      expect(await identity.supportsInterface("0xffffffff")).to.equal(false);
    });

    it("reverts locked and tokenURI for an id never minted", async function () {
      const { identity } = await networkHelpers.loadFixture(deployIdentity);
      await expect(identity.locked(7n)).to.be.revertedWithCustomError(identity, "ERC721NonexistentToken").withArgs(7n);
      await expect(identity.tokenURI(7n))
        .to.be.revertedWithCustomError(identity, "ERC721NonexistentToken")
        .withArgs(7n);
      await expect(identity.identity(7n))
        .to.be.revertedWithCustomError(identity, "ERC721NonexistentToken")
        .withArgs(7n);
    });
  });

  describe("status changes", function () {
    it("suspend › reinstate › revoke, each with its event and the new status", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(withAliceRegistered);
      await expect(identity.suspend(1n)).to.emit(identity, "IdentitySuspended").withArgs(1n);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([1n, BigInt(Status.Suspended)]);
      await expect(identity.reinstate(1n)).to.emit(identity, "IdentityReinstated").withArgs(1n);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([1n, BigInt(Status.Active)]);
      await expect(identity.revoke(1n)).to.emit(identity, "IdentityRevoked").withArgs(1n, alice.address);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([0n, BigInt(Status.None)]);
      expect((await identity.identity(1n)).status).to.equal(BigInt(Status.Revoked));
    });

    it("rejects changes from the wrong status, naming the current one", async function () {
      const { identity, alice } = await networkHelpers.loadFixture(withAliceRegistered);
      await expect(identity.reinstate(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidStatus")
        .withArgs(1n, Status.Active);
      await identity.suspend(1n);
      await expect(identity.suspend(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidStatus")
        .withArgs(1n, Status.Suspended);
      await identity.revoke(1n);
      await expect(identity.revoke(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidStatus")
        .withArgs(1n, Status.Revoked);
      await expect(rotate(identity, alice, ethers.Wallet.createRandom().address))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidStatus")
        .withArgs(1n, Status.Revoked);
      await expect(identity.suspend(9n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidStatus")
        .withArgs(9n, Status.None);
    });

    it("reverts every registrar call from a caller without REGISTRAR_ROLE", async function () {
      const { identity, outsider, bob, REGISTRAR_ROLE } = await networkHelpers.loadFixture(withAliceRegistered);
      const asOutsider = identity.connect(outsider);
      for (const call of [
        () => asOutsider.suspend(1n),
        () => asOutsider.reinstate(1n),
        () => asOutsider.revoke(1n),
        () => asOutsider.rotateKey(1n, bob.address, FAR_DEADLINE, "0x"),
        () => asOutsider.proposeKeyRotation(1n, bob.address),
        () => asOutsider.completeKeyRotation(1n),
      ]) {
        await expect(call())
          .to.be.revertedWithCustomError(identity, "AccessControlUnauthorizedAccount")
          .withArgs(outsider.address, REGISTRAR_ROLE);
      }
    });
  });

  describe("rotateKey", function () {
    it("moves the token to the new key with the old key's consent, and frees the old key", async function () {
      const { identity, alice, bob } = await networkHelpers.loadFixture(withAliceRegistered);
      expect(await identity.rotationNonce(1n)).to.equal(0n);
      const tx = rotate(identity, alice, bob.address);
      await expect(tx).to.emit(identity, "IdentityKeyRotated").withArgs(1n, alice.address, bob.address);
      await expect(tx).to.emit(identity, "Transfer").withArgs(alice.address, bob.address, 1n);
      expect(await identity.ownerOf(1n)).to.equal(bob.address);
      expect(await identity.identityOfSigner(bob.address)).to.deep.equal([1n, BigInt(Status.Active)]);
      expect(await identity.identityOfSigner(alice.address)).to.deep.equal([0n, BigInt(Status.None)]);
      expect(await identity.rotationNonce(1n)).to.equal(1n);
      // still soulbound for its new holder
      await expect(identity.connect(bob).transferFrom(bob.address, alice.address, 1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySoulbound")
        .withArgs(1n);
    });

    it("registrar key rotation without the identity's consent: the registrar cannot take it over", async function () {
      const { identity, admin, alice, bob, outsider } = await networkHelpers.loadFixture(withAliceRegistered);
      // the registrar signs for itself, or has someone else sign: neither is the identity's key
      for (const key of [admin, outsider, bob]) {
        const forged = await rotationConsent(identity, key, 1n, outsider.address);
        await expect(identity.rotateKey(1n, outsider.address, FAR_DEADLINE, forged))
          .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidConsent")
          .withArgs(1n);
      }
      // the key's consent to another address, or with another deadline, does not move it to this one
      const toBob = await rotationConsent(identity, alice, 1n, bob.address);
      await expect(identity.rotateKey(1n, outsider.address, FAR_DEADLINE, toBob))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidConsent")
        .withArgs(1n);
      await expect(identity.rotateKey(1n, bob.address, FAR_DEADLINE - 1n, toBob))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidConsent")
        .withArgs(1n);
      // an expired consent
      const now = BigInt(await networkHelpers.time.latest());
      const stale = await rotationConsent(identity, alice, 1n, bob.address, now);
      await expect(identity.rotateKey(1n, bob.address, now, stale))
        .to.be.revertedWithCustomError(identity, "LLMIdentityConsentExpired")
        .withArgs(now);
      expect(await identity.ownerOf(1n)).to.equal(alice.address);
      // a used consent cannot be replayed once the key came back (the nonce moved on)
      await identity.rotateKey(1n, bob.address, FAR_DEADLINE, toBob);
      await rotate(identity, bob, alice.address);
      await expect(identity.rotateKey(1n, bob.address, FAR_DEADLINE, toBob))
        .to.be.revertedWithCustomError(identity, "LLMIdentityInvalidConsent")
        .withArgs(1n);
    });

    it("a rotation proposed without consent waits 3 days, and the identity's key can cancel it", async function () {
      const { identity, alice, bob, outsider } = await networkHelpers.loadFixture(withAliceRegistered);
      const delay = await identity.KEY_ROTATION_DELAY();
      expect(delay).to.equal(3n * 24n * 3600n);
      const proposed = await identity.proposeKeyRotation(1n, outsider.address);
      const due = BigInt(await networkHelpers.time.latest()) + delay;
      await expect(proposed).to.emit(identity, "KeyRotationProposed").withArgs(1n, outsider.address, due);
      expect(await identity.pendingKeyRotation(1n)).to.deep.equal([outsider.address, due]);
      await expect(identity.completeKeyRotation(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityRotationNotDue")
        .withArgs(1n, due);
      // the hospital contests it with its key; nobody else but a registrar may cancel
      await expect(identity.connect(bob).cancelKeyRotation(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityNotKeyOrRegistrar")
        .withArgs(1n, bob.address);
      await expect(identity.connect(alice).cancelKeyRotation(1n))
        .to.emit(identity, "KeyRotationCancelled")
        .withArgs(1n, alice.address);
      await networkHelpers.time.increaseTo(due);
      await expect(identity.completeKeyRotation(1n))
        .to.be.revertedWithCustomError(identity, "LLMIdentityNoPendingRotation")
        .withArgs(1n);
      expect(await identity.ownerOf(1n)).to.equal(alice.address);
      // uncontested (the key is lost), it completes once due
      await identity.proposeKeyRotation(1n, bob.address);
      await networkHelpers.time.increase(delay);
      await expect(identity.completeKeyRotation(1n))
        .to.emit(identity, "IdentityKeyRotated")
        .withArgs(1n, alice.address, bob.address);
      expect(await identity.pendingKeyRotation(1n)).to.deep.equal([ethers.ZeroAddress, 0n]);
    });

    it("reverts for a zero or taken key", async function () {
      const { identity, alice, bob } = await networkHelpers.loadFixture(withAliceRegistered);
      await identity.register(bob.address, INSTITUTION, FINGERPRINT, CID);
      await expect(rotate(identity, alice, ethers.ZeroAddress)).to.be.revertedWithCustomError(
        identity,
        "LLMIdentityZeroAddress",
      );
      await expect(rotate(identity, alice, bob.address))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySignerTaken")
        .withArgs(bob.address, 2n);
      await expect(identity.proposeKeyRotation(1n, bob.address))
        .to.be.revertedWithCustomError(identity, "LLMIdentitySignerTaken")
        .withArgs(bob.address, 2n);
      expect(await identity.ownerOf(1n)).to.equal(alice.address);
    });
  });
});
