import { expect } from "chai";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { FetchRequest, JsonRpcProvider, Network } from "ethers";
import { chainRequest } from "../../node/chain/index.js";
import { TRANSIENT_CODES, isTransientChainError } from "../../node/federation/rounds.js";
import { rejection } from "../../node/testing/rejection.js";

describe("node/chain chainRequest", function () {
  let server: http.Server;
  let url: string;
  let mute = false;
  before(async function () {
    // A JSON-RPC endpoint behind a middlebox that forgets a connection once it has carried a request (a NAT's or
    // firewall's idle timeout, a proxy restarted): the next request on it is reset.
    const used = new WeakSet<Socket>();
    server = http.createServer((req, res) => {
      if (used.has(req.socket)) return req.socket.destroy();
      used.add(req.socket);
      const body: Buffer[] = [];
      req.on("data", (c: Buffer) => body.push(c));
      req.on("end", () => {
        if (mute) return; // never answers
        const { id } = JSON.parse(Buffer.concat(body).toString()) as { id: number };
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ jsonrpc: "2.0", id, result: "0x2a" }));
      });
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => {
    server.closeAllConnections();
    server.close();
  });

  const provider = (connection: string | FetchRequest) =>
    new JsonRpcProvider(connection, Network.from(31337), { staticNetwork: true });

  it("a connection per request: one the far end forgot costs nothing; a kept-alive one resets", async function () {
    const kept = provider(url); // ethers' default: Node's agent, which keeps connections alive
    expect(await kept.send("eth_blockNumber", [])).to.equal("0x2a");
    const e = await rejection(kept.send("eth_blockNumber", []));
    expect([(e as { code?: string }).code, e.message, isTransientChainError(e)]).to.deep.equal([
      "ECONNRESET",
      "socket hang up",
      true,
    ]);
    kept.destroy();

    const fresh = provider(chainRequest(url));
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await fresh.send("eth_blockNumber", []));
    expect(answers).to.deep.equal(["0x2a", "0x2a", "0x2a"]);
    fresh.destroy();
  });

  it("fails a request the endpoint never answers with ethers' TIMEOUT, which the commands retry", async function () {
    mute = true;
    try {
      const p = provider(chainRequest(url, 300));
      const e = await rejection(p.send("eth_blockNumber", []));
      expect([(e as { code?: string }).code, isTransientChainError(e)]).to.deep.equal(["TIMEOUT", true]);
      p.destroy();
    } finally {
      mute = false;
    }
  });

  it("counts a failed connection as transient (the commands retry it), an answer from the chain as not", function () {
    const failed = (code: string) => Object.assign(new Error(`connect ${code} 10.0.0.2:8545`), { code });
    const codes = ["ECONNREFUSED", "ECONNRESET", "EHOSTUNREACH", "ENETUNREACH", "ETIMEDOUT", "EPIPE", "EAI_AGAIN"];
    expect(codes.filter((c) => !TRANSIENT_CODES.has(c) || !isTransientChainError(failed(c)))).to.deep.equal([]);
    const wrapped = new Error("request failed", { cause: failed("EHOSTUNREACH") });
    expect(isTransientChainError(wrapped)).to.equal(true);
    expect(
      [failed("ENOTFOUND"), failed("CALL_EXCEPTION"), new Error("execution reverted")].map(isTransientChainError),
    ).to.deep.equal([false, false, false]);
  });
});
