/**
 * Contract reverts as typed values: every custom error our contracts (and the OpenZeppelin code they inherit) can
 * raise has a constant here, and a failed call becomes a {@link ChainRevertError} carrying that name and the
 * decoded arguments. Callers match with `isRevert(e, Revert.RoundNotOpen)`, never by a string of their own.
 */
import { type ContractTransactionResponse, type TransactionReceipt, Interface, isError, isHexString } from "ethers";
import { Federation__factory, LLMIdentity__factory } from "../../types/ethers-contracts/index.js";
import { ChainDataError, ChainRevertError } from "../errors.js";

/** Every custom error of Federation and LLMIdentity, their own and inherited (a test checks it against the ABIs). */
export const Revert = {
  UnknownTask: "FederationUnknownTask",
  ZeroAddress: "FederationZeroAddress",
  InvalidTaskConfig: "FederationInvalidTaskConfig",
  NotAggregator: "FederationNotAggregator",
  AlreadyStarted: "FederationAlreadyStarted",
  RoundNotOpen: "FederationRoundNotOpen",
  DeadlinePassed: "FederationDeadlinePassed",
  IdentityNotActive: "FederationIdentityNotActive",
  AlreadySubmitted: "FederationAlreadySubmitted",
  ZeroCid: "FederationZeroCid",
  ZeroDigest: "FederationZeroDigest",
  ZeroExamples: "FederationZeroExamples",
  TooManyExamples: "FederationTooManyExamples",
  LengthMismatch: "FederationLengthMismatch",
  TooFewUpdates: "FederationTooFewUpdates",
  ContributorsNotSorted: "FederationContributorsNotSorted",
  NotSubmitter: "FederationNotSubmitter",
  WeightsSum: "FederationWeightsSum",
  WrongStrategy: "FederationWrongStrategy",
  NotPendingAggregator: "FederationNotPendingAggregator",
  SignatureExpired: "FederationSignatureExpired",
  WrongIdentity: "FederationWrongIdentity",
  TooEarlyToClose: "FederationTooEarlyToClose",
  WrongStartCid: "FederationWrongStartCid",
  InvalidThreshold: "FederationInvalidThreshold",
  WrongPrivacy: "FederationWrongPrivacy",
  WrongPhase: "FederationWrongPhase",
  AlreadyDone: "FederationAlreadyDone",
  NotParticipant: "FederationNotParticipant",
  PhaseShort: "FederationPhaseShort",
  TooManyParticipants: "FederationTooManyParticipants",
  NotSurvivors: "FederationNotSurvivors",
  ZeroKey: "FederationZeroKey",
  InvalidDpConfig: "FederationInvalidDpConfig",
  DpMismatch: "FederationDpMismatch",
  BudgetExceeded: "FederationBudgetExceeded",
  WeightsNotUniform: "FederationWeightsNotUniform",
  InvalidAnnouncement: "FederationInvalidAnnouncement",
  IdentitySoulbound: "LLMIdentitySoulbound",
  IdentityZeroAddress: "LLMIdentityZeroAddress",
  IdentityEmptyMetadata: "LLMIdentityEmptyMetadata",
  IdentitySignerTaken: "LLMIdentitySignerTaken",
  IdentityInvalidStatus: "LLMIdentityInvalidStatus",
  IdentityConsentExpired: "LLMIdentityConsentExpired",
  IdentityInvalidConsent: "LLMIdentityInvalidConsent",
  IdentityNotKeyOrRegistrar: "LLMIdentityNotKeyOrRegistrar",
  IdentityNoPendingRotation: "LLMIdentityNoPendingRotation",
  IdentityRotationNotDue: "LLMIdentityRotationNotDue",
  // inherited from OpenZeppelin
  Unauthorized: "AccessControlUnauthorizedAccount",
  BadConfirmation: "AccessControlBadConfirmation",
  InvalidSignature: "ECDSAInvalidSignature",
  InvalidSignatureLength: "ECDSAInvalidSignatureLength",
  InvalidSignatureS: "ECDSAInvalidSignatureS",
  InvalidShortString: "InvalidShortString",
  StringTooLong: "StringTooLong",
  IncorrectOwner: "ERC721IncorrectOwner",
  InsufficientApproval: "ERC721InsufficientApproval",
  InvalidApprover: "ERC721InvalidApprover",
  InvalidOperator: "ERC721InvalidOperator",
  InvalidOwner: "ERC721InvalidOwner",
  InvalidReceiver: "ERC721InvalidReceiver",
  InvalidSender: "ERC721InvalidSender",
  NonexistentToken: "ERC721NonexistentToken",
} as const;

export type RevertName = (typeof Revert)[keyof typeof Revert];

/** Whether `e` is a revert with the custom error `name`. */
export function isRevert(e: unknown, name: RevertName): e is ChainRevertError {
  return e instanceof ChainRevertError && e.errorName === name;
}

/** Every custom error any of our contracts can raise, for decoding reverts that ethers left raw. */
export const errorInterface = new Interface([
  ...Federation__factory.abi.filter((f) => f.type === "error"),
  ...LLMIdentity__factory.abi.filter((f) => f.type === "error"),
]);

/**
 * Sends a transaction and waits for its receipt; a revert becomes a ChainRevertError naming the custom error and
 * its arguments.
 */
export async function send(
  action: string,
  fn: () => Promise<ContractTransactionResponse>,
): Promise<TransactionReceipt> {
  try {
    const tx = await fn();
    const receipt = await tx.wait();
    if (!receipt) throw new ChainDataError(`${action}: no receipt`);
    return receipt;
  } catch (e) {
    throw toChainError(action, e);
  }
}

/**
 * Maps a failed call to a ChainRevertError where it carries revert data we can decode: ethers' CALL_EXCEPTION, or a
 * JSON-RPC error with revert data (as Hardhat's in-process network raises). Other errors pass through unchanged.
 */
export function toChainError(action: string, e: unknown): unknown {
  if (isError(e, "CALL_EXCEPTION") && e.revert) {
    return new ChainRevertError(e.revert.name, [...e.revert.args], action, { cause: e });
  }
  const data = revertData(e);
  const parsed = data ? errorInterface.parseError(data) : null;
  return parsed ? new ChainRevertError(parsed.name, [...parsed.args], action, { cause: e }) : e;
}

/** Revert data wherever an ethers or JSON-RPC error keeps it. */
function revertData(e: unknown): string | null {
  const seen = new Set<unknown>();
  let cur: unknown = e;
  for (let depth = 0; cur && typeof cur === "object" && depth < 5 && !seen.has(cur); depth++) {
    seen.add(cur);
    const o = cur as { data?: unknown; error?: unknown; info?: { error?: unknown }; cause?: unknown };
    if (typeof o.data === "string" && isHexString(o.data) && o.data.length >= 10) return o.data;
    if (o.data && typeof o.data === "object" && typeof (o.data as { data?: unknown }).data === "string") {
      return (o.data as { data: string }).data;
    }
    cur = o.error ?? o.info?.error ?? o.cause;
  }
  return null;
}
