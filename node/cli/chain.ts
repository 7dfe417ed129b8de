/**
 * `fok chain deploy`: deploys LLMIdentity and Federation and writes the deployment file every command reads. The
 * deploying account holds every role unless --registrar, --task-admin or --admin hand one to another account.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { deployContracts } from "../chain/index.js";
import { address, parse, signerFrom, type CliIO } from "./options.js";

export async function chainCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  if (sub !== "deploy") throw new InvalidArgumentError(`unknown: fok chain ${sub ?? ""}`);
  const { values: v } = parse(rest);
  const to = { registrar: v.registrar, taskAdmin: v["task-admin"], admin: v.admin };
  for (const [k, a] of Object.entries({ registrar: to.registrar, "task-admin": to.taskAdmin, admin: to.admin })) {
    if (a !== undefined) address(v, k);
  }
  const ledger = await deployContracts(await signerFrom(v, io));
  const out = (v.out as string) ?? (v.deployment as string);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(ledger.deployment, null, 2) + "\n");
  const d = ledger.deployment;
  io.out(`LLMIdentity ${d.identity}`);
  io.out(`Federation  ${d.federation}`);
  io.out(`chain ${d.chainId}, block ${d.deployBlock}; written to ${out}`);
  if (to.registrar || to.taskAdmin || to.admin) {
    await ledger.separateRoles(to as { registrar?: string; taskAdmin?: string; admin?: string });
    const roles = [
      to.registrar && `registrar ${to.registrar}`,
      to.taskAdmin && `task admin ${to.taskAdmin}`,
      to.admin && `role admin ${to.admin}`,
    ].filter(Boolean);
    io.out(`roles handed over and dropped by the deployer: ${roles.join(", ")}`);
  }
}
