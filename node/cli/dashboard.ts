/** `fok dashboard`: serves the local page over the chain and the store until stopped (Ctrl-C). */
import { serveDashboard } from "../dashboard/server.js";
import { int, parse, readerFrom, withStore, type CliIO } from "./options.js";

export async function dashboardCommand(args: (string | undefined)[], io: CliIO): Promise<void> {
  const { values: v } = parse(args);
  const port = int(v, "port");
  const ledger = await readerFrom(v, io);
  await withStore(v, async (store) => {
    const dash = await serveDashboard({ ledger, store, host: v.host as string, port });
    io.out(`dashboard ${dash.url} (Ctrl-C to stop)`);
    await io.stopped;
    await dash.close();
  });
}
