/** `fok identity register | list | suspend | reinstate | revoke`: the consortium's registry of LLM clients. */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { IdentityStatus, bytes32Id } from "../chain/index.js";
import { loraConfigHash, modelFingerprint } from "../federation/task-config.js";
import { address, id, ledgerFrom, loraFrom, parse, readerFrom, str, type CliIO } from "./options.js";

const PAST = { suspend: "suspended", reinstate: "reinstated", revoke: "revoked" } as const;

/** The metadata CID registered when none is given (an empty JSON object's). */
const DEFAULT_METADATA_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku";

export async function identityCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  const { values: v } = parse(rest);
  if (sub === "register") {
    const signer = address(v, "address");
    const institution = str(v, "institution");
    const ledger = await ledgerFrom(v, io);
    const report = await readFile(join(v.base as string, "pretrain-report.json"), "utf8").catch(() => "{}");
    const base = JSON.parse(report);
    const fingerprint = base.sha256
      ? modelFingerprint(base.sha256, loraConfigHash(loraFrom(v)))
      : bytes32Id("unspecified");
    const metadataCid = (v["metadata-cid"] as string) ?? DEFAULT_METADATA_CID;
    const tokenId = await ledger.registerIdentity(signer, institution, fingerprint, metadataCid);
    io.out(`identity ${tokenId} registered to ${signer}`);
  } else if (sub === "list") {
    const ids = await (await readerFrom(v, io)).readIdentities();
    if (v.json) return io.out(JSON.stringify(ids, null, 2));
    for (const i of ids) {
      const keys = i.events.filter((e) => e.kind === "keyRotated").length + 1;
      const institution = `${i.institutionId.slice(0, 12)}…`;
      const status = IdentityStatus[i.status].padEnd(9);
      io.out(`${String(i.tokenId).padStart(4)}  ${status} ${i.signer}  institution ${institution}  keys: ${keys}`);
    }
  } else if (sub === "suspend" || sub === "reinstate" || sub === "revoke") {
    const tokenId = id(v, "id");
    await (await ledgerFrom(v, io))[sub](tokenId);
    io.out(`identity ${tokenId}: ${PAST[sub]}`);
  } else throw new InvalidArgumentError(`unknown: fok identity ${sub ?? ""}`);
}
