/**
 * Non-IID partitions of documents across hospitals, all seeded and deterministic (same seed, same bytes):
 *  - by label (specialty): one hospital per label;
 *  - Dirichlet(alpha) over labels (Hsu et al. 2019): each label's documents split across clients with proportions
 *    drawn from Dir(alpha); small alpha, skewed hospitals;
 *  - quantity skew: client sizes in geometric progression from 1 to `ratio` (10x by default);
 *  - IID: a shuffled round-robin, the control.
 * Then per client a train / held-out split by document: no document is in both.
 */
import { mulberry32, shuffle } from "../random.js";
import { PartitionError } from "./errors.js";
import type { Document } from "./types.js";

export interface ClientData {
  /** Client name, e.g. "oncology" or "client-3". */
  name: string;
  train: Document[];
  heldOut: Document[];
}

export type PartitionSpec =
  | { kind: "label" }
  | { kind: "dirichlet"; clients: number; alpha: number }
  | { kind: "quantity"; clients: number; ratio?: number }
  | { kind: "iid"; clients: number };

const byId = (a: Document, b: Document) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** Documents per client (before the held-out split), in a fixed order. */
export function partition(
  docs: readonly Document[],
  spec: PartitionSpec,
  seed: number,
): { name: string; docs: Document[] }[] {
  const sorted = [...docs].sort(byId); // input order never matters
  const rand = mulberry32(seed);
  switch (spec.kind) {
    case "label": {
      const labels = [...new Set(sorted.map((d) => d.label ?? "unlabelled"))];
      return labels.map((name) => ({ name, docs: sorted.filter((d) => (d.label ?? "unlabelled") === name) }));
    }
    case "iid": {
      checkClients(spec.clients, sorted.length);
      const order = shuffle([...sorted], rand);
      return Array.from({ length: spec.clients }, (_, c) => ({
        name: `client-${c + 1}`,
        docs: order.filter((_, i) => i % spec.clients === c),
      }));
    }
    case "quantity": {
      checkClients(spec.clients, sorted.length);
      const ratio = spec.ratio ?? 10;
      const weights = Array.from(
        { length: spec.clients },
        (_, c) => ratio ** (spec.clients === 1 ? 0 : c / (spec.clients - 1)),
      );
      const order = shuffle([...sorted], rand);
      const sizes = apportion(order.length, weights);
      let at = 0;
      return sizes.map((n, c) => ({ name: `client-${c + 1}`, docs: order.slice(at, (at += n)) }));
    }
    case "dirichlet": {
      checkClients(spec.clients, sorted.length);
      if (!(spec.alpha > 0)) throw new PartitionError(`Dirichlet alpha must be positive, got ${spec.alpha}`);
      const out: Document[][] = Array.from({ length: spec.clients }, () => []);
      const labels = [...new Set(sorted.map((d) => d.label ?? "unlabelled"))].sort();
      for (const label of labels) {
        const group = shuffle(
          sorted.filter((d) => (d.label ?? "unlabelled") === label),
          rand,
        );
        const p = dirichlet(spec.alpha, spec.clients, rand);
        const sizes = apportion(group.length, p);
        let at = 0;
        sizes.forEach((n, c) => out[c]!.push(...group.slice(at, (at += n))));
      }
      // every client needs at least one document: move one from the largest client to any empty one
      for (const c of out.keys()) {
        if (out[c]!.length === 0) {
          const donor = out.reduce((best, docs, i) => (docs.length > out[best]!.length ? i : best), 0);
          out[c]!.push(out[donor]!.pop()!);
        }
      }
      return out.map((docs, c) => ({ name: `client-${c + 1}`, docs: docs.sort(byId) }));
    }
  }
}

/** Splits each client's documents into train and held-out (at least one of each where it has two or more). */
export function splitClients(
  parts: { name: string; docs: Document[] }[],
  heldOutFraction: number,
  seed: number,
): ClientData[] {
  if (!(heldOutFraction > 0 && heldOutFraction < 1))
    throw new PartitionError(`held-out fraction must be in (0, 1), got ${heldOutFraction}`);
  return parts.map((p, i) => {
    const order = shuffle([...p.docs], mulberry32(seed + 7919 * (i + 1)));
    const n = order.length < 2 ? 0 : Math.max(1, Math.round(order.length * heldOutFraction));
    return { name: p.name, heldOut: order.slice(0, n).sort(byId), train: order.slice(n).sort(byId) };
  });
}

/** Integer sizes adding up to `total`, proportional to `weights` (largest remainders, ties by index). */
export function apportion(total: number, weights: number[]): number[] {
  const sum = weights.reduce((a, b) => a + b, 0);
  const exact = weights.map((w) => (total * w) / sum);
  const sizes = exact.map(Math.floor);
  let left = total - sizes.reduce((a, b) => a + b, 0);
  const order = exact.map((e, i) => [e - Math.floor(e), i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, i] of order) {
    if (left-- <= 0) break;
    sizes[i]!++;
  }
  return sizes;
}

/** A draw from Dirichlet(alpha · 1_k) with the seeded generator (Marsaglia–Tsang gammas). */
export function dirichlet(alpha: number, k: number, rand: () => number): number[] {
  const g = Array.from({ length: k }, () => gamma(alpha, rand));
  const s = g.reduce((a, b) => a + b, 0);
  return s > 0 ? g.map((x) => x / s) : g.map(() => 1 / k);
}

function gamma(shape: number, rand: () => number): number {
  if (shape < 1) return gamma(shape + 1, rand) * Math.pow(rand() || Number.MIN_VALUE, 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(rand);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = rand();
    if (u < 1 - 0.0331 * x ** 4 || Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

function normal(rand: () => number): number {
  const u = rand() || Number.MIN_VALUE;
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

function checkClients(clients: number, docs: number): void {
  if (!Number.isInteger(clients) || clients < 1)
    throw new PartitionError(`clients must be a positive integer, got ${clients}`);
  if (clients > docs) throw new PartitionError(`${clients} clients but only ${docs} documents`);
}
