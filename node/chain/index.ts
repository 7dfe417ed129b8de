/**
 * Typed access to the on-chain identity registry and round ledger: deploy or attach, register identities, create
 * tasks, open / finalize rounds, submit updates directly or signed-and-relayed, read tasks, rounds and identities
 * back as typed values (from views and from events). Contract reverts surface as ChainRevertError, matched with
 * `isRevert(e, Revert.X)`.
 *
 * - types.ts: the records and the id encodings
 * - ledger.ts: FederationLedger (the only holder of contract objects) and deployContracts
 * - history.ts: history rebuilt from events, per task, per round, per identity
 * - reverts.ts: revert names, decoding, sending
 * - metadata.ts: the identity metadata document (an institution's name)
 * - evm.ts: the EVM the contracts need, checked on every endpoint before use
 * - rpc.ts: the HTTP connection to an endpoint (no keep-alive, a request timeout)
 */
export * from "./types.js";
export * from "./metadata.js";
export { ChainCompatibilityError, EVM_PROBE, EVM_REQUIREMENT, checkEvm } from "./evm.js";
export { FederationLedger, KEY_ROTATION_TYPES, UPDATE_TYPES, deployContracts, normUnits } from "./ledger.js";
export { IdentityTimeline } from "./history.js";
export { RPC_REQUEST_TIMEOUT_MS, chainRequest } from "./rpc.js";
export { LogReader, DEFAULT_LOG_SPAN, type LogReaderOptions } from "./logs.js";
export { Revert, isRevert, send, toChainError, type RevertName } from "./reverts.js";
export { WEIGHT_SCALE } from "../weights.js";
