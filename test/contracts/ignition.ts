import { expect } from "chai";
import { network } from "hardhat";
import FlowOfKnowledge from "../../ignition/modules/FlowOfKnowledge.js";

const { ethers, ignition } = await network.create();

describe("ignition FlowOfKnowledge module", function () {
  it("deploys both contracts wired together, deployer as admin, registrar and task admin", async function () {
    const [deployer] = await ethers.getSigners();
    const { identity, federation } = await ignition.deploy(FlowOfKnowledge);
    expect(await federation.identities()).to.equal(await identity.getAddress());
    expect(await identity.hasRole(await identity.DEFAULT_ADMIN_ROLE(), deployer!.address)).to.equal(true);
    expect(await identity.hasRole(await identity.REGISTRAR_ROLE(), deployer!.address)).to.equal(true);
    expect(await federation.hasRole(await federation.TASK_ADMIN_ROLE(), deployer!.address)).to.equal(true);
  });
});
