/** What a task commits to on-chain about the model: the LoRA config hash and each identity's model fingerprint. */
import { sha256Hex } from "../digest.js";
import { solidityPackedKeccak256 } from "ethers";
import type { LoraConfig } from "../model/lora.js";

/** sha256 (0x hex) of the LoRA config's canonical JSON (PEFT key names, targets sorted). */
export function loraConfigHash(lora: LoraConfig): string {
  const canonical = JSON.stringify({
    lora_alpha: lora.alpha,
    lora_dropout: lora.dropout,
    r: lora.r,
    target_modules: [...lora.targetModules].sort(),
  });
  return sha256Hex(canonical);
}

/** An identity's model fingerprint: keccak256(base-model sha256 ‖ LoRA config hash). */
export function modelFingerprint(baseModelSha256: string, loraHash: string): string {
  return solidityPackedKeccak256(["bytes32", "bytes32"], [baseModelSha256, loraHash]);
}
