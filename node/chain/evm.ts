/**
 * What the contracts need of a chain, checked before anything is sent. They are compiled for the Cancun fork
 * (solc `evmVersion: "cancun"`): OpenZeppelin 5.7's Bytes and Strings copy memory with MCOPY (EIP-5656, Cancun) and
 * solc emits PUSH0 (EIP-3855, Shanghai). A node on an older fork deploys them — creation code needs neither — and
 * then fails every call that reaches such code ("invalid opcode"); so every command that attaches runs one eth_call
 * of a 10-byte creation code that executes MCOPY and PUSH0, and refuses the endpoint in one line when it cannot.
 */
import { isError, type Provider } from "ethers";
import { FokError } from "../errors.js";

/** The fork the contracts are compiled for, and the opcodes that pin it. */
export const EVM_REQUIREMENT = "Cancun or later (MCOPY, EIP-5656; PUSH0, EIP-3855)";

/** Creation code: mcopy(0x20, 0, 0x20); return(0, 0) — PUSH1 20 PUSH1 00 PUSH1 20 MCOPY PUSH0 PUSH0 RETURN. */
export const EVM_PROBE = "0x6020600060205e5f5ff3";

/** The endpoint's EVM cannot run the contracts. */
export class ChainCompatibilityError extends FokError {}

/**
 * Throws ChainCompatibilityError when `provider`'s chain does not execute the probe; a failure to reach it (a
 * network error) passes through as it is, to be retried or reported as such.
 */
export async function checkEvm(provider: Provider, where: string): Promise<void> {
  try {
    await provider.call({ data: EVM_PROBE });
  } catch (e) {
    if (!isError(e, "CALL_EXCEPTION")) throw e;
    const why = (e.info?.error as { message?: string } | undefined)?.message ?? e.shortMessage;
    throw new ChainCompatibilityError(
      `${where} cannot run the contracts, which need an EVM of ${EVM_REQUIREMENT}: a probe of MCOPY and PUSH0 ` +
        `failed (${why.split("\n")[0]}); use a node on the Cancun fork or later`,
    );
  }
}
