/** `fok chain deploy`: deploys LLMIdentity and Federation and writes the deployment file every command reads. */
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { deployContracts } from "../chain/index.js";
import { parse, signerFrom, type CliIO } from "./options.js";

export async function chainCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  if (sub !== "deploy") throw new InvalidArgumentError(`unknown: fok chain ${sub ?? ""}`);
  const { values: v } = parse(rest);
  const ledger = await deployContracts(await signerFrom(v, io));
  const out = (v.out as string) ?? (v.deployment as string);
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify(ledger.deployment, null, 2) + "\n");
  const d = ledger.deployment;
  io.out(`LLMIdentity ${d.identity}`);
  io.out(`Federation  ${d.federation}`);
  io.out(`chain ${d.chainId}, block ${d.deployBlock}; written to ${out}`);
}
