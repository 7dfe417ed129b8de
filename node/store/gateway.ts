/**
 * An HTTP trustless gateway (https://specs.ipfs.tech/http-gateways/trustless-gateway/) over a store. It binds
 * 127.0.0.1 unless told otherwise. The client that fetches from one is gateway-client.ts.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { AdapterStore } from "./index.js";
import { parseCid } from "./dag.js";

export interface GatewayOptions {
  /** Default 127.0.0.1; anything else exposes the store beyond this machine. */
  host: string;
  /** Default 0 (a free port). */
  port: number;
}

export interface Gateway {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  close(): Promise<void>;
}

/** Serves `GET|HEAD /ipfs/<cid>?format=raw|car` (or the matching Accept header) from the store's local blocks. */
export async function serveGateway(store: AdapterStore, options: Partial<GatewayOptions> = {}): Promise<Gateway> {
  const { host, port } = { host: "127.0.0.1", port: 0, ...options };
  const server: Server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? "/", "http://x");
      const m = /^\/ipfs\/([^/]+)\/?$/.exec(url.pathname);
      if ((req.method !== "GET" && req.method !== "HEAD") || !m) {
        res.writeHead(req.method === "GET" || req.method === "HEAD" ? 404 : 405).end();
        return;
      }
      const cid = m[1]!;
      try {
        parseCid(cid);
      } catch {
        res.writeHead(400, { "content-type": "text/plain" }).end(`invalid CID ${cid}\n`);
        return;
      }
      const accept = req.headers.accept ?? "";
      const format =
        url.searchParams.get("format") ??
        (accept.includes("application/vnd.ipld.car")
          ? "car"
          : accept.includes("application/vnd.ipld.raw")
            ? "raw"
            : null);
      if (format !== "raw" && format !== "car") {
        res.writeHead(406, { "content-type": "text/plain" }).end("only ?format=raw and ?format=car are served\n");
        return;
      }
      if (!(await store.has(cid))) {
        res.writeHead(404, { "content-type": "text/plain" }).end(`${cid} not found\n`);
        return;
      }
      const headers = {
        "x-content-type-options": "nosniff",
        "cache-control": "public, max-age=29030400, immutable",
        etag: `"${cid}.${format}"`,
      };
      if (format === "raw") {
        const block = await store.localBlock(cid);
        res.writeHead(200, { ...headers, "content-type": "application/vnd.ipld.raw", "content-length": block!.length });
        res.end(req.method === "HEAD" ? undefined : block);
        return;
      }
      res.writeHead(200, { ...headers, "content-type": "application/vnd.ipld.car; version=1" });
      if (req.method === "HEAD") {
        res.end();
        return;
      }
      for await (const chunk of store.exportCar(cid)) {
        if (!res.write(chunk)) await new Promise((r) => res.once("drain", r));
      }
      res.end();
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" }).end(`${(e as Error).message}\n`);
      else res.destroy(e as Error);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, resolve);
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    url: `http://${shownHost}:${addr.port}`,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((e) => (e ? reject(e) : resolve()));
      }),
  };
}
