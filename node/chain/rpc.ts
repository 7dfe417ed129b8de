/** The connection to a JSON-RPC endpoint that every fok command uses. */
import http from "node:http";
import https from "node:https";
import { FetchRequest } from "ethers";

/** How long one JSON-RPC request may take before it fails as a TIMEOUT (a transient error the commands retry), ms. */
export const RPC_REQUEST_TIMEOUT_MS = 60_000;

/**
 * The JSON-RPC endpoint as ethers requests it: a new connection per request and a 60 s limit (ethers: 300 s).
 * Node's default agent keeps connections alive, and a kept connection the far end no longer has (the server's
 * 5 s idle close racing the next request, a NAT's or firewall's idle timeout, a link that went down and came back)
 * fails the next request on it with ECONNRESET, "socket hang up": the consortium test saw it after every link cut,
 * and in one CI run a hospital hit it again and again and missed three rounds. Requests are few and small; a
 * connection each costs little.
 */
export function chainRequest(url: string, timeoutMs = RPC_REQUEST_TIMEOUT_MS): FetchRequest {
  const req = new FetchRequest(url);
  const agent = url.startsWith("https:") ? new https.Agent({ keepAlive: false }) : new http.Agent({ keepAlive: false });
  req.getUrlFunc = FetchRequest.createGetUrlFunc({ agent });
  req.timeout = timeoutMs;
  return req;
}
