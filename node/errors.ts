/**
 * The project's typed errors. Every error has a fixed `name` and `code` taken from its class, so callers and tests
 * can match on `err.name` (or `instanceof`) without parsing messages.
 */
export class FokError extends Error {
  /** Machine-readable code, e.g. `ERR_CHAIN_REVERT`; derived from the class name. */
  readonly code: string;

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
    this.code = `ERR_${new.target.name
      .replace(/Error$/, "")
      .replace(/([a-z0-9])([A-Z])/g, "$1_$2")
      .toUpperCase()}`;
  }
}

/** A contract call reverted with a custom error of ours (or OpenZeppelin's): its name and decoded arguments. */
export class ChainRevertError extends FokError {
  constructor(
    /** The Solidity custom error's name, e.g. `FederationRoundNotOpen`. */
    readonly errorName: string,
    /** Its arguments in declaration order, as ethers decodes them (bigint for integers). */
    readonly args: readonly unknown[],
    readonly action: string,
    options?: ErrorOptions,
  ) {
    super(`${action} reverted: ${errorName}(${args.map(formatArg).join(", ")})`, options);
  }
}

/** Something the chain returned does not match what it should (e.g. a missing event). */
export class ChainDataError extends FokError {}

/** A value given by the caller is not acceptable (bad flag, bad config). */
export class InvalidArgumentError extends FokError {}

function formatArg(a: unknown): string {
  return typeof a === "bigint" ? a.toString() : JSON.stringify(a);
}
