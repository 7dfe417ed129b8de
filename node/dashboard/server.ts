/**
 * `fok dashboard`: a local page (127.0.0.1 unless told otherwise) over the chain and the store, with no database of
 * its own: identities, the lineage of global adapters round by round, per-client contributions, and training
 * curves drawn with Chart.js from the metrics each client committed (read from its adapter and checked against the
 * on-chain digest), and `fok verify`'s verdict on every task and round (green, or red naming each failing check),
 * with each institution's name from its identity's metadata. Every CID and transaction links to its details. The
 * page polls, so it follows new blocks while a federation runs.
 */
import { weightShare } from "../weights.js";
import { createServer, type Server } from "node:http";
import { sha256Hex } from "../digest.js";
import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { dirname, join } from "node:path";
import {
  FederationLedger,
  IdentityStatus,
  SecurePhase,
  decodeStrategy,
  type RoundHistory,
  type TaskHistory,
} from "../chain/index.js";
import { describeDp, identityEpsilons } from "../dp/privacy.js";
import type { AdapterStore } from "../store/index.js";
import { readSafetensorsHeader } from "../model/safetensors.js";
import { PAGE, SCRIPT, STYLE } from "./page.js";
import { Verdicts } from "./verdicts.js";

export interface DashboardOptions {
  ledger: FederationLedger;
  store: AdapterStore;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (a free port). */
  port?: number;
}

export interface Dashboard {
  url: string;
  close(): Promise<void>;
}

const require = createRequire(import.meta.url);

/** The largest adapter the dashboard reads to show its metrics (it does not know each task's model). */
const ADAPTER_VIEW_LIMIT = 64 * 1024 * 1024;

/**
 * On every response: scripts and styles only from this origin (no inline script, so a string that slipped into
 * the DOM as markup still could not run), no framing, no content sniffing, no referrer.
 */
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; " +
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};
const json = (x: unknown) => JSON.stringify(x, (_, v) => (typeof v === "bigint" ? v.toString() : v));

/** The whole state the page shows, rebuilt from events and adapter metadata, with verify's verdicts. */
/** A secure round's sets and phase transactions, as the page shows them. */
function secureView(r: RoundHistory) {
  const sec = r.secure!;
  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const survivors = sorted(r.submissions.map((s) => s.identity));
  const participants = sorted(sec.dealings.map((d) => d.identity));
  return {
    keys: sorted(sec.keys.map((k) => k.identity)),
    participants,
    survivors,
    dropped: participants.filter((p) => !survivors.includes(p)),
    revealed: sorted(sec.reveals.map((x) => x.identity)),
    phases: sec.phases.map((p) => ({
      phase: SecurePhase[p.phase],
      count: p.count,
      transactionHash: p.transactionHash,
    })),
  };
}

/** A DP task's settings, spending and per-identity ε, as the page shows them. */
function dpView(h: TaskHistory, dp: NonNullable<TaskHistory["dpConfig"]>) {
  const finalized = h.rounds.filter((r) => r.finalized);
  const spent = finalized.at(-1)?.finalized?.epsilon ?? 0;
  return {
    ...dp,
    clip: h.maxUpdateNorm,
    spent,
    summary: describeDp(dp, h.maxUpdateNorm, spent, finalized.length),
    identities: [...identityEpsilons(dp, h.rounds)].map(([identity, e]) => ({ identity, ...e })),
  };
}

export async function dashboardState(ledger: FederationLedger, store: AdapterStore, verdicts: Verdicts) {
  const [identities, total, block] = await Promise.all([
    ledger.readIdentities(),
    ledger.totalTasks(),
    ledger.blockNumber(),
  ]);
  const tasks = [];
  for (let t = 1; t <= total; t++) {
    const h = await ledger.readTaskHistory(t);
    const rounds = [];
    for (const r of h.rounds) {
      const submissions = [];
      for (const s of r.submissions) {
        let metrics: Record<string, unknown> | null = null;
        let metricsVerified = false;
        try {
          const bytes = await store.get(s.cid, { expectedSha256: s.adapterSha256, maxBytes: ADAPTER_VIEW_LIMIT });
          const meta = readSafetensorsHeader(bytes).metadata["fok.metrics"];
          if (meta) {
            metrics = JSON.parse(meta);
            metricsVerified = sha256Hex(meta) === s.metricsDigest;
          }
        } catch {
          metrics = null; // not fetchable from here: shown as missing
        }
        submissions.push({ ...s, metrics, metricsVerified });
      }
      const f = r.finalized;
      rounds.push({
        round: r.round,
        startCid: r.startCid,
        deadline: r.deadline,
        openedTx: r.opened.transactionHash,
        closed: r.closed && { closedBy: r.closed.closedBy, transactionHash: r.closed.transactionHash },
        submissions,
        secure: r.secure && secureView(r),
        finalized: f && {
          globalCid: f.globalCid,
          globalSha256: f.globalSha256,
          strategy: decodeStrategy(f.strategyId),
          contributors: f.contributors,
          shares: f.weights.map((w) => weightShare(w)),
          epsilon: f.epsilon ?? null,
          transactionHash: f.transactionHash,
          blockNumber: f.blockNumber,
        },
      });
    }
    tasks.push({
      task: h.task,
      strategy: h.strategy,
      privacy: h.privacy,
      threshold: h.threshold,
      dp: h.dpConfig && dpView(h, h.dpConfig),
      baseModelCid: h.baseModelCid,
      maxRounds: h.maxRounds,
      minUpdates: h.minUpdates,
      completed: h.completed,
      createdTx: h.transactionHash,
      rounds,
      verdict: await verdicts.of(h),
    });
  }
  const named = await Promise.all(
    identities.map(async (i) => ({
      ...i,
      status: IdentityStatus[i.status],
      institution: await verdicts.institution(i.metadataCid, i.institutionId),
    })),
  );
  return {
    block,
    chainId: ledger.deployment.chainId,
    contracts: { identity: ledger.deployment.identity, federation: ledger.deployment.federation },
    identities: named,
    tasks,
  };
}

export async function serveDashboard(o: DashboardOptions): Promise<Dashboard> {
  // the UMD build is not in chart.js's exports map: resolve the package, then take the file beside its main entry
  const chartJs = await readFile(join(dirname(require.resolve("chart.js")), "chart.umd.js"));
  const verdicts = new Verdicts(o.ledger, o.store);
  const server: Server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://x");
      for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
      if (url.pathname === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
      } else if (url.pathname === "/app.js") {
        res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(SCRIPT);
      } else if (url.pathname === "/app.css") {
        res.writeHead(200, { "content-type": "text/css; charset=utf-8" }).end(STYLE);
      } else if (url.pathname === "/vendor/chart.js") {
        res.writeHead(200, { "content-type": "text/javascript", "cache-control": "max-age=3600" }).end(chartJs);
      } else if (url.pathname === "/api/state") {
        res
          .writeHead(200, { "content-type": "application/json" })
          .end(json(await dashboardState(o.ledger, o.store, verdicts)));
      } else if (url.pathname.startsWith("/api/tx/")) {
        const hash = decodeURIComponent(url.pathname.slice("/api/tx/".length));
        if (!/^0x[0-9a-fA-F]{64}$/.test(hash)) return void res.writeHead(400).end("not a transaction hash\n");
        const decoded = await o.ledger.describeTransaction(hash);
        if (!decoded) return void res.writeHead(404).end();
        res.writeHead(200, { "content-type": "application/json" }).end(json(decoded));
      } else if (url.pathname.startsWith("/api/cid/")) {
        const cid = decodeURIComponent(url.pathname.slice("/api/cid/".length));
        const stat = await o.store.stat(cid);
        const bytes = await o.store.get(cid);
        const sha256 = sha256Hex(bytes);
        let header: Record<string, unknown> | null = null;
        try {
          const f = readSafetensorsHeader(bytes); // the header only: no tensor is read
          header = { metadata: f.metadata, tensors: Object.fromEntries(f.tensors.map((t) => [t.name, t.shape])) };
        } catch {
          header = null;
        }
        res.writeHead(200, { "content-type": "application/json" }).end(json({ ...stat, sha256, safetensors: header }));
      } else res.writeHead(404).end();
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" }).end(`${(e as Error).message}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", resolve);
  });
  const a = server.address() as AddressInfo;
  return {
    url: `http://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
