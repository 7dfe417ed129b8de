/**
 * `fok identity register | list | suspend | reinstate | revoke | consent | rotate | cancel-rotation |
 * complete-rotation`: the consortium's registry of LLM clients. A key moves only with the identity's consent (its
 * current key signs `consent`), or after a delay during which that key can cancel the move.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { IdentityStatus, bytes32Id, identityMetadata } from "../chain/index.js";
import { loraConfigHash, modelFingerprint } from "../federation/task-config.js";
import type { Signer } from "ethers";
import {
  address,
  id,
  int,
  ledgerFrom,
  loraFrom,
  parse,
  readerFrom,
  str,
  withStore,
  type CliIO,
  type Values,
} from "./options.js";

const PAST = { suspend: "suspended", reinstate: "reinstated", revoke: "revoked" } as const;

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
    // without --metadata-cid, the institution's name is pinned as the identity's metadata document
    const metadataCid =
      (v["metadata-cid"] as string) ?? (await withStore(v, (store) => store.add(identityMetadata(institution))));
    const tokenId = await ledger.registerIdentity(signer, institution, fingerprint, metadataCid);
    io.out(`identity ${tokenId} registered to ${signer} (metadata ${metadataCid})`);
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
  } else if (ROTATION[sub ?? ""]) {
    await ROTATION[sub!]!(v, io);
  } else throw new InvalidArgumentError(`unknown: fok identity ${sub ?? ""}`);
}

const ROTATION: Record<string, (v: Values, io: CliIO) => Promise<void>> = {
  /** Run by the hospital with its identity's key: prints its consent to move to --address. */
  consent: async (v, io) => {
    const tokenId = id(v, "id");
    const newSigner = address(v, "address");
    const ledger = await ledgerFrom(v, io);
    const deadline = (await ledger.chainTime()) + int(v, "valid-for");
    const signature = await ledger.signKeyRotation(ledger.runner as Signer, tokenId, newSigner, deadline);
    io.out(`consent of identity ${tokenId} to key ${newSigner}, valid until ${deadline}:`);
    io.out(
      `  fok identity rotate --id ${tokenId} --address ${newSigner} --consent ${signature} ` +
        `--consent-deadline ${deadline}`,
    );
  },
  /** Run by the registrar: with --consent rotates now; without, proposes a rotation the key can cancel. */
  rotate: async (v, io) => {
    const tokenId = id(v, "id");
    const newSigner = address(v, "address");
    const ledger = await ledgerFrom(v, io);
    if (v.consent !== undefined) {
      await ledger.rotateKey(tokenId, newSigner, int(v, "consent-deadline"), str(v, "consent"));
      io.out(`identity ${tokenId}: key rotated to ${newSigner}`);
      return;
    }
    await ledger.proposeKeyRotation(tokenId, newSigner);
    const pending = await ledger.pendingKeyRotation(tokenId);
    io.out(`identity ${tokenId}: rotation to ${newSigner} proposed without consent; the identity's key can cancel it`);
    io.out(
      `  complete it after ${new Date(pending!.executableAt * 1000).toISOString()} with ` +
        `\`fok identity complete-rotation --id ${tokenId}\``,
    );
  },
  "cancel-rotation": async (v, io) => {
    const tokenId = id(v, "id");
    await (await ledgerFrom(v, io)).cancelKeyRotation(tokenId);
    io.out(`identity ${tokenId}: pending key rotation cancelled`);
  },
  "complete-rotation": async (v, io) => {
    const tokenId = id(v, "id");
    const ledger = await ledgerFrom(v, io);
    await ledger.completeKeyRotation(tokenId);
    io.out(`identity ${tokenId}: key rotated to ${(await ledger.identityRecord(tokenId)).signer}`);
  },
};
