/**
 * Finding the other parties' IPFS nodes from the chain alone: each party announces its node's multiaddrs on-chain
 * (`announcePeer` → `PeerAnnounced`), and each reads the latest announcement of the accounts that matter to a task —
 * every identity's signer and every aggregator the task had — checks it (parseAnnouncement: anyone can announce
 * anything) and dials it. Blocks then flow over bitswap from whoever has them. `--peer` stays as an override.
 */
import type { FederationLedger } from "../chain/index.js";
import { parseAnnouncement, type AdapterStore } from "../store/index.js";

/** How long after a failed dial the same node is tried again, ms. */
const REDIAL_AFTER_MS = 10_000;

export class PeerBook {
  /** When each account's node was last tried, and at which announcement. */
  private readonly tried = new Map<string, { text: string; at: number }>();

  constructor(
    private readonly ledger: FederationLedger,
    private readonly store: AdapterStore,
    private readonly task: number,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /**
   * Announces this node's addresses (`addrs`, default every address it listens on) from the ledger's account when
   * they differ from its latest announcement; returns whether it sent one.
   */
  async announce(addrs: readonly string[] = this.store.multiaddrs()): Promise<boolean> {
    if (addrs.length === 0) return false;
    const text = addrs.join(" ");
    parseAnnouncement(text); // what others will check
    const runner = this.ledger.runner as { getAddress?: () => Promise<string> };
    const me = runner.getAddress ? await runner.getAddress() : null;
    if (me && (await this.ledger.peerAnnouncements()).get(me)?.text === text) return false;
    await this.ledger.announcePeer(addrs);
    this.log(`announced this node on-chain: ${text}`);
    return true;
  }

  /** The accounts whose nodes matter to the task: every identity's signer and every aggregator it had. */
  private async accounts(): Promise<Set<string>> {
    const [identities, history] = await Promise.all([
      this.ledger.readIdentities(),
      this.ledger.readTaskHistory(this.task),
    ]);
    return new Set([
      ...identities.map((i) => i.signer),
      history.aggregator,
      ...history.aggregatorChanges.map((c) => c.current),
    ]);
  }

  /**
   * Dials the announced node of every account of the task that this node is not connected to (a node that failed
   * is tried again after REDIAL_AFTER_MS, or at once when it announces anew); returns how many it connected to.
   */
  async refresh(): Promise<number> {
    const [accounts, announced] = await Promise.all([this.accounts(), this.ledger.peerAnnouncements()]);
    const own = new Set(this.store.multiaddrs());
    const connectedTo = new Set(this.store.connectedPeers());
    let connected = 0;
    for (const [account, a] of announced) {
      if (!accounts.has(account)) continue;
      const last = this.tried.get(account);
      if (last?.text === a.text && Date.now() - last.at < REDIAL_AFTER_MS) continue;
      let addrs: string[];
      try {
        addrs = parseAnnouncement(a.text);
      } catch (e) {
        if (last?.text !== a.text) this.log(`peer announcement of ${account} ignored: ${(e as Error).message}`);
        this.tried.set(account, { text: a.text, at: Infinity }); // not again until it announces anew
        continue;
      }
      const peer = addrs[0]!.slice(addrs[0]!.lastIndexOf("/p2p/") + 5);
      if (addrs.some((x) => own.has(x)) || connectedTo.has(peer)) continue; // ourselves, or connected already
      this.tried.set(account, { text: a.text, at: Date.now() });
      if (await this.dialAny(account, addrs)) connected++;
    }
    return connected;
  }

  private async dialAny(account: string, addrs: string[]): Promise<boolean> {
    for (const addr of addrs) {
      try {
        await this.store.dial(addr, { signal: AbortSignal.timeout(10_000) });
        this.log(`connected to ${account}'s node at ${addr}`);
        return true;
      } catch (e) {
        this.log(`cannot reach ${account}'s node at ${addr}: ${(e as Error).message.split("\n")[0]}`);
      }
    }
    return false;
  }
}
