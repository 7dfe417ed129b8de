/**
 * The client side of a trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/): fetch a CAR.
 * It verifies nothing itself; the caller imports the CAR, which checks every block against its CID.
 */
import { BlobTooLargeError, StoreError } from "./errors.js";

/** GETs `<gateway>/ipfs/<cid>?format=car`; the caller verifies the blocks (importCar does). */
export async function fetchCarFromGateway(
  gateway: string,
  cid: string,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<Uint8Array> {
  const url = `${gateway.replace(/\/$/, "")}/ipfs/${cid}?format=car&dag-scope=all`;
  const res = await fetch(url, { signal, headers: { accept: "application/vnd.ipld.car" } });
  if (!res.ok) throw new GatewayResponseError(gateway, cid, res.status);
  const limit = Math.floor(maxBytes * 1.1) + 1_048_576; // blocks plus DAG and CAR overhead
  const parts: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > limit) throw new BlobTooLargeError(total, maxBytes, cid);
    parts.push(chunk);
  }
  return Buffer.concat(parts);
}

/** A gateway answered with an HTTP error. */
export class GatewayResponseError extends StoreError {
  constructor(
    readonly gateway: string,
    readonly cid: string,
    readonly status: number,
  ) {
    super(`gateway ${gateway} answered ${status} for ${cid}`);
  }
}
