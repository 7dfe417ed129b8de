/** `fok store add | get | export | import | serve`: the adapter store by hand. */
import { readFile, writeFile } from "node:fs/promises";
import { InvalidArgumentError } from "../errors.js";
import { serveGateway } from "../store/gateway.js";
import type { AdapterStore } from "../store/index.js";
import { int, parse, str, withStore, type CliIO, type Values } from "./options.js";

export async function storeCommand(sub: string | undefined, rest: string[], io: CliIO): Promise<void> {
  const { values: v, positionals } = parse(rest);
  const verb = sub === undefined ? undefined : VERBS[sub];
  if (!verb) throw new InvalidArgumentError(`unknown: fok store ${sub ?? ""}`);
  await withStore(v, (store) => verb(store, v, positionals, io));
}

type Verb = (store: AdapterStore, v: Values, positionals: string[], io: CliIO) => Promise<void>;

const VERBS: Record<string, Verb> = {
  add: async (store, v, [file], io) => io.out(await store.add(await readFile(file ?? str(v, "out")))),
  get: async (store, v, [cid], io) => write(v, io, await store.get(required(cid, "a CID"))),
  export: async (store, v, [cid], io) => {
    const chunks: Uint8Array[] = [];
    for await (const c of store.exportCar(required(cid, "a CID"))) chunks.push(c);
    await write(v, io, Buffer.concat(chunks));
  },
  import: async (store, _v, [file], io) =>
    io.out((await store.importCar(await readFile(required(file, "a CAR file")))).join("\n")),
  serve: async (store, v, _p, io) => {
    const gw = await serveGateway(store, { host: v["gateway-host"] as string, port: int(v, "gateway-port") });
    io.out(`gateway ${gw.url}`);
    for (const m of store.multiaddrs()) io.out(`libp2p ${m}`);
    await io.stopped;
    await gw.close();
  },
};

function required(positional: string | undefined, what: string): string {
  if (!positional) throw new InvalidArgumentError(`give ${what}`);
  return positional;
}

async function write(v: Values, io: CliIO, bytes: Uint8Array): Promise<void> {
  if (v.out) await writeFile(v.out as string, bytes);
  else io.outBytes(bytes);
}
