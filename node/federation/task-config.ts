/** What a task commits to on-chain about the model: the LoRA config hash and each identity's model fingerprint. */
import { solidityPackedKeccak256 } from "ethers";
export { loraConfigHash } from "../model/lora.js";

/** An identity's model fingerprint: keccak256(base-model sha256 ‖ LoRA config hash). */
export function modelFingerprint(baseModelSha256: string, loraHash: string): string {
  return solidityPackedKeccak256(["bytes32", "bytes32"], [baseModelSha256, loraHash]);
}
