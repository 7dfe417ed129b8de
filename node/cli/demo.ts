/** `fok demo`: a whole federation in one process, then a per-hospital table and the final adapter's provenance. */
import { formatWeight } from "../weights.js";
import { runDemo, type DemoReport } from "../federation/demo.js";
import { OPTIONS, dpFrom, int, loraFrom, positive, privacyFrom, toJson, type CliIO, type Values } from "./options.js";

export async function demoCommand(v: Values, io: CliIO): Promise<void> {
  const report = await runDemo({
    clients: int(v, "clients"),
    rounds: int(v, "rounds"),
    steps: int(v, "steps"),
    batchSize: int(v, "batch-size"),
    lr: Number(v.lr),
    strategy: v.strategy as string,
    privacy: privacyFrom(v, 2).privacy,
    dp: dpFrom(v, int(v, "rounds")),
    maxUpdateNorm: positive(v, "max-update-norm"),
    workers: !v["no-workers"],
    storeDir: v["store-dir"] === OPTIONS!["store-dir"]!.default ? undefined : (v["store-dir"] as string),
    baseDir: v.base as string,
    lora: loraFrom(v),
    localOnly: Boolean(v["local-only"]),
    log: io.log,
  });
  io.out(v.json ? toJson(report) : formatDemoReport(report));
}

/** The demo's closing summary: a per-client table and the final adapter's provenance. */
export function formatDemoReport(r: DemoReport): string {
  return ["", ...perplexityTable(r), "", ...provenance(r), `Finished in ${r.seconds.toFixed(0)} s.`].join("\n");
}

function perplexityTable(r: DemoReport): string[] {
  const rounds = r.rows[0]?.perRoundPerplexity.length ?? 0;
  const local = r.rows.every((x) => x.localOnlyPerplexity !== undefined);
  const roundHeads = Array.from({ length: rounds }, (_, i) => `round ${i + 1}`.padStart(8)).join("  ");
  const lines = [
    `Held-out perplexity per hospital (lower is better), task ${r.task}, strategy ${r.strategy}:`,
    `  ${"hospital".padEnd(12)} ${"id".padStart(3)} ${"docs".padStart(5)}  ${"base".padStart(8)}  ` +
      `${roundHeads}  change${local ? "   local-only" : ""}`,
  ];
  for (const row of r.rows) {
    const change = ((row.finalPerplexity / row.basePerplexity - 1) * 100).toFixed(1) + "%";
    const perRound = row.perRoundPerplexity.map((p) => p.toFixed(1).padStart(8)).join("  ");
    const who = `${row.client.padEnd(12)} ${String(row.identity).padStart(3)} ${String(row.trainDocs).padStart(5)}`;
    const localOnly = local ? row.localOnlyPerplexity!.toFixed(1).padStart(13) : "";
    lines.push(
      `  ${who}  ${row.basePerplexity.toFixed(1).padStart(8)}  ${perRound}  ${change.padStart(6)}${localOnly}`,
    );
  }
  const worstBase = Math.max(...r.rows.map((x) => x.basePerplexity));
  const worstFinal = Math.max(...r.rows.map((x) => x.finalPerplexity));
  const worstLocal = local
    ? `, ${Math.max(...r.rows.map((x) => x.localOnlyPerplexity!)).toFixed(1)} local-only (same token budget)`
    : "";
  lines.push(`  worst hospital: ${worstBase.toFixed(1)} → ${worstFinal.toFixed(1)} federated${worstLocal}`);
  return lines;
}

function provenance(r: DemoReport): string[] {
  const last = r.history.rounds[r.history.rounds.length - 1]!;
  const fin = last.finalized!;
  const lines = [
    `Provenance of the final global adapter (round ${last.round}):`,
    `  CID ${fin.globalCid}`,
    `  sha256 ${fin.globalSha256}  (tx ${fin.transactionHash}, block ${fin.blockNumber})`,
    `  started from ${last.startCid}`,
  ];
  const what = r.history.privacy === "secure" ? "masked update" : "update";
  for (const [i, id] of fin.contributors.entries()) {
    const sub = last.submissions.find((s) => s.identity === id)!;
    const share = formatWeight(fin.weights[i]!);
    lines.push(
      `  identity ${id} (${sub.signer.slice(0, 10)}…) weight ${share}  ${sub.numExamples} examples  ${what} ${sub.cid}`,
    );
  }
  const contributors = r.history.rounds.map((x) => `${x.round}: ${x.finalized?.contributors.length ?? 0} contributors`);
  lines.push(`  rounds: ${contributors.join(", ")}`);
  return lines;
}
