/**
 * Event history the way a hosted RPC endpoint allows it: every log query covers a bounded window of blocks (hosted
 * endpoints cap `eth_getLogs` ranges and result counts), a window the endpoint refuses is halved and retried, and
 * what was read is kept per query, so polling the same query again reads only the blocks since (a client waiting on
 * its round costs a few log queries of new blocks per poll, however long the history is).
 *
 * What is kept is assumed final: on a chain that can reorganise, give `confirmations` so that only blocks that deep
 * are cached (newer ones are read again on each query).
 */
import type { Provider } from "ethers";
import { ChainDataError } from "../errors.js";

export interface LogReaderOptions {
  /** The most blocks one log query covers (default $FOK_LOG_SPAN or 5,000). */
  span?: number;
  /** Blocks behind the head below which events are cached (default 0: a chain with instant finality). */
  confirmations?: number;
}

/** An endpoint's refusal of a window as too wide or too full, in the words hosted providers use. */
const TOO_MUCH = /range|too (many|large|wide)|exceed|limit|more than|10000 results|response size/i;

/** The default window: below the caps of common hosted endpoints (10,000 blocks or 10,000 results). */
export const DEFAULT_LOG_SPAN = 5_000;

export class LogReader {
  /** Log queries sent so far (one per window), for benchmarks. */
  queries = 0;
  private span: number;
  private readonly confirmations: number;
  private readonly cache = new Map<string, { through: number; events: unknown[] }>();
  private head: Promise<number> | null = null;

  constructor(
    private readonly provider: Provider,
    /** The first block that can hold our events (the deployment's). */
    readonly from: number,
    o: LogReaderOptions = {},
  ) {
    this.span = o.span ?? (Number(process.env.FOK_LOG_SPAN) || DEFAULT_LOG_SPAN);
    if (!(Number.isInteger(this.span) && this.span >= 1))
      throw new ChainDataError(`log span must be >= 1: ${this.span}`);
    this.confirmations = o.confirmations ?? 0;
  }

  /**
   * The chain's head: one request shared by the queries that start while it is in flight (a history read starts
   * ten at once), never an answer older than the call (a reader sees the transactions it waited for).
   */
  private latest(): Promise<number> {
    // asked with eth_blockNumber where the provider can send it: ethers' getBlockNumber() may answer from a 250 ms
    // cache, which would hide the block of a transaction just waited for
    const p = this.provider as Provider & { send?: (method: string, params: unknown[]) => Promise<unknown> };
    this.head ??= (p.send ? p.send("eth_blockNumber", []).then(Number) : p.getBlockNumber()).finally(() => {
      this.head = null;
    });
    return this.head;
  }

  /**
   * Every event `query` returns from the deployment's block to the head, in the order the windows return them;
   * `key` names the query (its event and topics) for the cache.
   */
  async read<E>(key: string, query: (from: number, to: number) => Promise<E[]>): Promise<E[]> {
    const head = await this.latest();
    // a head below what was cached: the chain went back (a reorganisation deeper than `confirmations`, a test's
    // snapshot revert); nothing cached can be trusted
    if ([...this.cache.values()].some((c) => c.through > head)) this.cache.clear();
    const kept = this.cache.get(key) as { through: number; events: E[] } | undefined;
    const start = kept ? kept.through + 1 : this.from;
    const fresh: E[] = [];
    for (let a = start; a <= head;) {
      const b = Math.min(head, a + this.span - 1);
      try {
        this.queries++;
        fresh.push(...(await query(a, b)));
        a = b + 1;
      } catch (e) {
        if (!TOO_MUCH.test((e as Error).message) || b === a) throw e;
        this.span = Math.max(1, Math.floor((b - a + 1) / 2)); // the endpoint's cap, learned once for all queries
      }
    }
    const events = [...(kept?.events ?? []), ...fresh];
    const final = head - this.confirmations;
    if (final >= start) {
      // cache only what is final: events of newer blocks are read again next time
      const settled = this.confirmations === 0 ? events : events.filter((e) => blockOf(e) <= final);
      this.cache.set(key, { through: Math.max(final, kept?.through ?? -1), events: settled });
    }
    return events;
  }
}

function blockOf(e: unknown): number {
  return (e as { blockNumber: number }).blockNumber;
}
