/** `fok dashboard`: serves the local page over the chain and the store until stopped (Ctrl-C). */
import { serveDashboard } from "../dashboard/server.js";
import { ledgerFrom, parse, withStore, type CliIO } from "./options.js";

export async function dashboardCommand(args: (string | undefined)[], io: CliIO): Promise<void> {
  const { values: v } = parse(args);
  const ledger = await ledgerFrom(v, io);
  await withStore(v, async (store) => {
    const dash = await serveDashboard({ ledger, store, host: v.host as string, port: Number(v.port) });
    io.out(`dashboard ${dash.url} (Ctrl-C to stop)`);
    await io.stopped;
    await dash.close();
  });
}
