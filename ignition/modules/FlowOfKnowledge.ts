import { buildModule } from "@nomicfoundation/hardhat-ignition/modules";

/** LLMIdentity and Federation wired together; the deploying account is admin, registrar and task admin. */
export default buildModule("FlowOfKnowledge", (m) => {
  const admin = m.getAccount(0);
  const identity = m.contract("LLMIdentity", [admin]);
  const federation = m.contract("Federation", [identity, admin]);
  return { identity, federation };
});
