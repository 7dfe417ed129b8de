/** The dashboard's one page: plain HTML + script, Chart.js served from node_modules. */
export const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flow of Knowledge — provenance</title>
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f23;background:#fafbfc}
 h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
 table{border-collapse:collapse;background:#fff}
 td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
 th{background:#f0f3f6} code,a.mono{font-family:ui-monospace,monospace;font-size:12px}
 .ok{color:#1a7f37} .bad{color:#cf222e} .muted{color:#6e7781}
 .charts{display:flex;gap:24px;flex-wrap:wrap}
 .chart{width:520px;height:300px;background:#fff;border:1px solid #d0d7de;padding:8px}
 #detail{white-space:pre-wrap;background:#fff;border:1px solid #d0d7de;padding:8px;display:none;max-height:360px;
   overflow:auto}
</style></head><body>
<h1>Flow of Knowledge — provenance</h1>
<div id="status" class="muted">loading…</div>
<h2>Identities</h2><table id="identities"><thead><tr>
 <th>id</th><th>status</th><th>signer</th><th>institution</th><th>history</th>
</tr></thead><tbody></tbody></table>
<h2>Global adapters, round by round</h2><div id="lineage"></div>
<h2>Training curves</h2><div class="charts">
 <div class="chart"><canvas id="lossChart"></canvas></div><div class="chart"><canvas id="shareChart"></canvas></div>
</div>
<h2>Details</h2><pre id="detail"></pre>
<script src="/vendor/chart.js"></script>
<script>
const short = (s) => s.length > 20 ? s.slice(0, 12) + "…" + s.slice(-6) : s;
const cidLink = (c) => '<a class="mono cid" href="/api/cid/' + c + '" data-kind="cid">' + short(c) + '</a>';
const txLink = (t) => '<a class="mono tx" href="/api/tx/' + t + '" data-kind="tx">' + short(t) + '</a>';
let charts = {};
function identityRow(i) {
  const status = "<td class='" + (i.status === "Active" ? "ok" : "bad") + "'>" + i.status + "</td>";
  const history = i.events.map((e) => e.kind + " " + txLink(e.transactionHash)).join("<br>");
  return "<tr class='identity'><td>" + i.tokenId + "</td>" + status + "<td class='mono'>" + i.signer + "</td>" +
    "<td class='mono'>" + short(i.institutionId) + "</td><td>" + history + "</td></tr>";
}
function taskHeading(t) {
  return "<h3>task " + t.task + " — " + t.strategy + ", " + t.rounds.length + "/" + t.maxRounds + " rounds" +
    (t.completed ? ", completed" : "") + " (created " + txLink(t.createdTx) + ", base " + cidLink(t.baseModelCid) +
    ")</h3>";
}
function roundRow(r) {
  const subs = r.submissions.map((x) => "identity " + x.identity + ": " + cidLink(x.cid) + " " +
    txLink(x.transactionHash) + " (" + x.numExamples + " ex." + (x.metricsVerified ? ", metrics ✓" : "") + ")");
  const f = r.finalized;
  const global = f ? cidLink(f.globalCid) + " " + txLink(f.transactionHash) + "<br>" + f.strategy
    : "<span class=muted>open</span>";
  const weights = f ? f.contributors.map((c, k) => c + " (" + (f.shares[k] * 100).toFixed(1) + "%)").join(", ") : "";
  return "<tr class='round'><td>" + r.round + "</td><td>" + cidLink(r.startCid) + "</td><td>" + subs.join("<br>") +
    "</td><td>" + global + "</td><td>" + weights + "</td></tr>";
}
async function refresh() {
  const s = await (await fetch("/api/state")).json();
  document.getElementById("status").textContent = "chain " + s.chainId + ", block " + s.block + " — Federation " +
    s.contracts.federation + " — updated " + new Date().toLocaleTimeString();
  document.querySelector("#identities tbody").innerHTML = s.identities.map(identityRow).join("");
  let html = "";
  const lossSeries = {}; const shareSeries = {}; let roundsSeen = 0;
  for (const t of s.tasks) {
    html += taskHeading(t) + "<table class='rounds'><thead><tr><th>round</th><th>starts from</th>" +
      "<th>submissions</th><th>global adapter</th><th>contributors (weight)</th></tr></thead><tbody>";
    for (const r of t.rounds) {
      roundsSeen = Math.max(roundsSeen, r.round);
      html += roundRow(r);
      for (const x of r.submissions) {
        const key = "task " + t.task + " · identity " + x.identity;
        const after = x.metrics && x.metrics.heldOutLossAfter;
        if (after != null) (lossSeries[key] ??= {})[r.round] = after;
      }
      const f = r.finalized;
      if (f) f.contributors.forEach((c, k) => ((shareSeries["identity " + c] ??= {})[r.round] = f.shares[k] * 100));
    }
    html += "</tbody></table>";
  }
  document.getElementById("lineage").innerHTML = html;
  const labels = Array.from({ length: roundsSeen }, (_, i) => "round " + (i + 1));
  const ds = (series) => Object.entries(series).map(([label, byRound]) =>
    ({ label, data: labels.map((_, i) => byRound[i + 1] ?? null), spanGaps: true }));
  draw("lossChart", "line", labels, ds(lossSeries), "held-out loss after local training (per client)");
  draw("shareChart", "bar", labels, ds(shareSeries), "weight in the global adapter (%)");
}
function draw(id, type, labels, datasets, title) {
  if (charts[id]) {
    charts[id].data.labels = labels; charts[id].data.datasets = datasets; charts[id].update("none");
    return;
  }
  const options = { animation: false, maintainAspectRatio: false, plugins: { title: { display: true, text: title } } };
  charts[id] = new Chart(document.getElementById(id), { type, data: { labels, datasets }, options });
}
document.addEventListener("click", async (ev) => {
  const a = ev.target.closest("a[data-kind]"); if (!a) return;
  ev.preventDefault();
  const d = document.getElementById("detail"); d.style.display = "block";
  d.textContent = JSON.stringify(await (await fetch(a.getAttribute("href"))).json(), null, 2);
});
refresh(); setInterval(refresh, 3000);
</script></body></html>`;
