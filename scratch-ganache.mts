import ganache from "ganache";
import { JsonRpcProvider } from "ethers";
const server = ganache.server({ logging: { quiet: true }, wallet: { deterministic: true }, chain: { chainId: 1337 } });
await server.listen(8599, "127.0.0.1");
const p = new JsonRpcProvider("http://127.0.0.1:8599");
console.log("hardfork", (server as any).provider.getOptions().chain.hardfork);
try { console.log("probe ok", await p.call({ data: "0x6020600060205e5f5ff3" })); } catch (e: any) { console.log("probe failed", e.code, e.shortMessage, JSON.stringify(e.info?.error ?? e.error)); }
try { console.log("push0 ok", await p.call({ data: "0x5f5ff3" })); } catch (e: any) { console.log("push0 failed", e.code, e.shortMessage); }
p.destroy(); await server.close();
