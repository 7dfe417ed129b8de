/**
 * A second store process for tests and benchmarks: adds `size` deterministic bytes, serves them over libp2p
 * (bitswap) and a trustless gateway on 127.0.0.1, prints one JSON line, and exits when its stdin closes.
 */
import { createStore } from "../store/index.js";
import { serveGateway } from "../store/gateway.js";
import { deterministicBytes } from "./deterministic.js";

const size = Number(process.argv[2] ?? 1024);
const store = await createStore({ listen: ["/ip4/127.0.0.1/tcp/0"] });
const cid = await store.add(deterministicBytes(size, "peer-process"));
const gateway = await serveGateway(store);
process.stdout.write(JSON.stringify({ cid, multiaddrs: store.multiaddrs(), gateway: gateway.url }) + "\n");
process.stdin.resume();
process.stdin.on("end", async () => {
  await gateway.close();
  await store.close();
  process.exit(0);
});
