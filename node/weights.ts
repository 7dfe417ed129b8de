/**
 * The on-chain weight scale, in one place: a round's contributor weights are fixed-point numbers that add up to
 * exactly WEIGHT_SCALE (Federation.sol's `WEIGHT_SCALE`, 1e18).
 */
export const WEIGHT_SCALE = 10n ** 18n;

/**
 * On-chain fixed-point weights from integer units (example counts, or 1 each): unitsᵢ·1e18/Σunits rounded down,
 * the remainder to the first of the largest, so they add up to exactly 1e18.
 */
export function unitsToWeights(units: number[]): bigint[] {
  const u = units.map((x) => BigInt(x));
  const total = u.reduce((a, b) => a + b, 0n);
  const w = u.map((x) => (x * WEIGHT_SCALE) / total);
  const rest = WEIGHT_SCALE - w.reduce((a, b) => a + b, 0n);
  w[units.indexOf(Math.max(...units))]! += rest;
  return w;
}

/** A fixed-point weight as a fraction of 1, rounded down to `decimals` decimal places (default 6). */
export function weightShare(weight: bigint, decimals = 6): number {
  const unit = 10n ** BigInt(decimals);
  return Number((weight * unit) / WEIGHT_SCALE) / Number(unit);
}

/** A fixed-point weight as a percentage with two decimals, rounded down: `16.66%`. */
export function formatWeight(weight: bigint): string {
  return (Number((weight * 10_000n) / WEIGHT_SCALE) / 100).toFixed(2) + "%";
}
