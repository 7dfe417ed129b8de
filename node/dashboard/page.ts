/**
 * The dashboard's one page: HTML, a stylesheet and a script, each served from its own path so that the
 * Content-Security-Policy can forbid inline script. The script builds every element with createElement and puts
 * every string from the chain or a store (CIDs, strategy names, addresses, metrics, institution names, verify's
 * details) in as text, never as HTML.
 */
export const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Flow of Knowledge — provenance</title>
<link rel="stylesheet" href="/app.css"></head><body>
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
<script src="/app.js"></script>
</body></html>`;

export const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f23;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;background:#fff}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6} code,a.mono{font-family:ui-monospace,monospace;font-size:12px}
.ok{color:#1a7f37} .bad{color:#cf222e} .muted{color:#6e7781}
.verdict{font-weight:600;margin:4px 0 8px} td.verdict{font-weight:normal}
.charts{display:flex;gap:24px;flex-wrap:wrap}
.chart{width:520px;height:300px;background:#fff;border:1px solid #d0d7de;padding:8px}
#detail{white-space:pre-wrap;background:#fff;border:1px solid #d0d7de;padding:8px;display:none;max-height:360px;
  overflow:auto}
`;

export const SCRIPT = `"use strict";
const short = (s) => (s.length > 20 ? s.slice(0, 12) + "…" + s.slice(-6) : s);
/** An element with attributes; string children become text nodes, never markup. */
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  e.append(...children.filter((c) => c !== null && c !== undefined).map((c) => (c instanceof Node ? c : String(c))));
  return e;
}
const lines = (items) => items.flatMap((x, i) => (i === 0 ? [x] : [el("br"), x]));
const link = (kind, value) => {
  const href = "/api/" + kind + "/" + encodeURIComponent(value);
  return el("a", { class: "mono " + kind, href, "data-kind": kind }, short(value));
};
const cidLink = (c) => link("cid", c);
const txLink = (t) => link("tx", t);
const td = (...children) => el("td", {}, ...children);
let charts = {};
function institutionCell(i) {
  const n = i.institution;
  if (!n) return el("td", { class: "mono", title: "no name in the metadata document" }, short(i.institutionId));
  const mark = n.matches ? el("span", { class: "ok", title: "keccak256 of the name is the institution id" }, " ✓")
    : el("span", { class: "bad", title: "the name does not hash to the on-chain institution id" }, " (unverified)");
  return el("td", { class: "institution" }, n.name, mark);
}
function identityRow(i) {
  const history = lines(i.events.map((e) => el("span", {}, e.kind + " ", txLink(e.transactionHash))));
  const status = el("td", { class: i.status === "Active" ? "ok" : "bad" }, i.status);
  return el("tr", { class: "identity" }, td(i.tokenId), status, el("td", { class: "mono" }, i.signer),
    institutionCell(i), td(...history));
}
const where = (c) => (c.round === null ? "task" : "round " + c.round) + (c.identity === null ? "" : " identity " +
  c.identity);
function verdictLine(t) {
  const v = t.verdict;
  if (v.ok === null) return el("div", { class: "verdict muted" }, "verify could not run here: " + v.error);
  if (v.ok) return el("div", { class: "verdict ok" }, "✓ VERIFIED — all " + v.checks + " checks of fok verify pass");
  const taskLevel = v.failed.filter((c) => c.round === null)
    .map((c) => el("div", { class: "bad" }, "✗ " + where(c) + " " + c.check + ": " + c.detail));
  return el("div", { class: "verdict bad" }, "✗ NOT VERIFIED — " + v.failed.length + " of " + v.checks +
    " checks fail", ...taskLevel);
}
function taskHeading(t) {
  const summary = "task " + t.task + " — " + t.strategy + ", " + t.rounds.length + "/" + t.maxRounds + " rounds" +
    (t.privacy === "secure" ? ", secure aggregation (threshold " + t.threshold + ")" : "") +
    (t.completed ? ", completed" : "");
  const dp = t.dp ? [el("div", { class: "muted dp" }, t.dp.summary + "; ε per identity: " +
    (t.dp.identities.map((x) => x.identity + ": " + x.epsilon.toFixed(3)).join(", ") || "none yet"))] : [];
  return el("div", { class: "task" },
    el("h3", {}, summary + " (created ", txLink(t.createdTx), ", base ", cidLink(t.baseModelCid), ")"),
    ...dp, verdictLine(t));
}
function roundVerdict(t, r) {
  const v = t.verdict;
  if (v.ok === null) return el("td", { class: "muted" }, "–");
  const failed = v.failed.filter((c) => c.round === r.round);
  if (failed.length === 0) return el("td", { class: "ok verdict" }, "✓ verified");
  return el("td", { class: "bad verdict" }, ...lines(failed.map((c) =>
    el("span", { title: c.detail }, "✗ " + where(c) + ": " + c.check))));
}
function roundRow(t, r) {
  const subs = r.submissions.map((x) => el("span", {}, "identity " + x.identity + ": ", cidLink(x.cid), " ",
    txLink(x.transactionHash), " (" + x.numExamples + " ex." + (x.metricsVerified ? ", metrics ✓" : "") + ")"));
  const f = r.finalized;
  const global = f ? [cidLink(f.globalCid), " ", txLink(f.transactionHash), el("br"), f.strategy +
      (f.epsilon === null ? "" : ", ε spent " + f.epsilon.toFixed(3))]
    : r.closed ? [el("span", { class: "muted" }, "closed without one by " + short(r.closed.closedBy) + " "),
      txLink(r.closed.transactionHash)]
    : [el("span", { class: "muted" }, "open")];
  const weights = f ? f.contributors.map((c, k) => c + " (" + (f.shares[k] * 100).toFixed(1) + "%)").join(", ") : "";
  if (r.secure) subs.push(...secureLines(r.secure));
  return el("tr", { class: "round" }, td(r.round), td(cidLink(r.startCid)), td(...lines(subs)), td(...global),
    td(weights), roundVerdict(t, r));
}
function secureLines(s) {
  const set = (xs) => "[" + xs.join(", ") + "]";
  return [
    el("span", { class: "muted" }, "masked updates; participants " + set(s.participants) + ", survivors " +
      set(s.survivors) + ", dropped " + set(s.dropped) + ", revealed " + set(s.revealed)),
    ...s.phases.map((p) => el("span", { class: "muted" }, "→ " + p.phase + " after " + p.count + " ",
      txLink(p.transactionHash))),
  ];
}
function roundsTable(t) {
  const head = el("tr", {}, ...["round", "starts from", "submissions", "global adapter", "contributors (weight)",
    "fok verify"].map((h) => el("th", {}, h)));
  return el("table", { class: "rounds" }, el("thead", {}, head),
    el("tbody", {}, ...t.rounds.map((r) => roundRow(t, r))));
}
function series(tasks) {
  const loss = {};
  const share = {};
  let rounds = 0;
  for (const t of tasks) {
    for (const r of t.rounds) {
      rounds = Math.max(rounds, r.round);
      for (const x of r.submissions) {
        const after = x.metrics && x.metrics.heldOutLossAfter;
        if (typeof after === "number") (loss["task " + t.task + " · identity " + x.identity] ??= {})[r.round] = after;
      }
      const f = r.finalized;
      if (f) f.contributors.forEach((c, k) => ((share["identity " + c] ??= {})[r.round] = f.shares[k] * 100));
    }
  }
  return { loss, share, rounds };
}
async function refresh() {
  const s = await (await fetch("/api/state")).json();
  document.getElementById("status").textContent = "chain " + s.chainId + ", block " + s.block + " — Federation " +
    s.contracts.federation + " — updated " + new Date().toLocaleTimeString();
  document.querySelector("#identities tbody").replaceChildren(...s.identities.map(identityRow));
  document.getElementById("lineage").replaceChildren(...s.tasks.flatMap((t) => [taskHeading(t), roundsTable(t)]));
  const { loss, share, rounds } = series(s.tasks);
  const labels = Array.from({ length: rounds }, (_, i) => "round " + (i + 1));
  const ds = (byLabel) => Object.entries(byLabel).map(([label, byRound]) =>
    ({ label, data: labels.map((_, i) => byRound[i + 1] ?? null), spanGaps: true }));
  draw("lossChart", "line", labels, ds(loss), "held-out loss after local training (per client)");
  draw("shareChart", "bar", labels, ds(share), "weight in the global adapter (%)");
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
`;
