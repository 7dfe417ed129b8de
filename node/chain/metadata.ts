/**
 * An identity's metadata document, the blob its `metadataCid` names: who runs the client, in JSON. Only `name` is
 * read today; its keccak256 is the identity's `institutionId` when registered by name, so a reader can tell a name
 * that matches the on-chain commitment from one that does not.
 */
import { bytes32Id } from "./types.js";

/** The schema tag every document we write carries. */
export const IDENTITY_METADATA_SCHEMA = "fok-identity-metadata/1";

/** The most bytes a reader fetches for one identity's metadata document. */
export const IDENTITY_METADATA_MAX_BYTES = 64 * 1024;

/** The longest name shown. */
const MAX_NAME = 200;

/** The document for an institution `name` (keys sorted, so one name always gives one CID). */
export function identityMetadata(name: string): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ name, schema: IDENTITY_METADATA_SCHEMA }));
}

/**
 * The name in a metadata document, and whether it is the one `institutionId` commits to; null for anything that is
 * not such a document (not JSON, no string name, a name longer than 200 characters).
 */
export function institutionName(bytes: Uint8Array, institutionId: string): { name: string; matches: boolean } | null {
  let doc: unknown;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return null;
  }
  const name = (doc as { name?: unknown } | null)?.name;
  if (typeof name !== "string" || name.length === 0 || name.length > MAX_NAME) return null;
  return { name, matches: bytes32Id(name) === institutionId };
}
