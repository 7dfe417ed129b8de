import { expect } from "chai";
import { network } from "hardhat";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { serveDashboard } from "../../node/dashboard/server.js";
import { WEIGHT_SCALE, deployContracts, identityMetadata } from "../../node/chain/index.js";
import { createStore } from "../../node/store/index.js";
import { runAllRounds, tinyFederation } from "../fixtures/tiny-federation.js";

const { ethers } = await network.create();

describe("node/dashboard (fok dashboard)", function () {
  this.timeout(300_000);
  const CHROMIUM = process.env.FOK_CHROMIUM ?? "/usr/bin/chromium";
  const launch = async () => {
    const { chromium } = await import("playwright-core");
    const args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"];
    args.push("--disable-background-networking", "--disable-component-update", "--disable-sync");
    return chromium.launch({ executablePath: CHROMIUM, args });
  };

  it("shows the identities, the rounds and a chart of a finished run in headless Chromium", async function () {
    if (!existsSync(CHROMIUM)) this.skip(); // .ci/run installs Debian's chromium
    const s = await tinyFederation(await ethers.getSigners());
    await runAllRounds(s);
    const dash = await serveDashboard({ ledger: s.ledger, store: s.store });
    expect(dash.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const browser = await launch();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
      await page.goto(dash.url);
      await page.waitForSelector("tr.round");
      expect(await page.locator("tr.identity").count()).to.equal(3);
      expect(await page.locator("tr.round").count()).to.equal(2);
      const h = await s.ledger.readTaskHistory(s.task);
      const text = await page.locator("#lineage").innerText();
      expect(text).to.contain("task 1 — fedavg, 2/2 rounds, completed");
      expect(await page.locator(`a[href="/api/cid/${h.rounds[1]!.finalized!.globalCid}"]`).count()).to.be.greaterThan(
        0,
      );
      // the loss chart has one line per client with a point per round
      const series = await page.evaluate(() => {
        const chart = (
          globalThis as unknown as {
            Chart: { getChart(id: string): { data: { datasets: { data: (number | null)[] }[] } } };
          }
        ).Chart.getChart("lossChart");
        return chart.data.datasets.map((d) => d.data.filter((x) => x !== null).length);
      });
      expect(series).to.deep.equal([2, 2, 2]);
      // a transaction link opens its details
      await page.locator("a.tx").first().click();
      await page.waitForFunction(() =>
        (globalThis as unknown as { document: { getElementById(id: string): { textContent: string } } }).document
          .getElementById("detail")
          .textContent.includes('"hash"'),
      );
      // verify's verdict on the task and on each round, and each institution's name from its metadata
      expect(await page.locator(".task .verdict").innerText()).to.match(
        /^✓ VERIFIED — all \d+ checks of fok verify pass$/,
      );
      expect(await page.locator("td.verdict").allInnerTexts()).to.deep.equal(["✓ verified", "✓ verified"]);
      expect(await page.locator("td.institution").allInnerTexts()).to.deep.equal([
        "hospital-0 ✓",
        "hospital-1 ✓",
        "hospital-2 ✓",
      ]);
      const out = join(import.meta.dirname, "../../test-output");
      await mkdir(out, { recursive: true });
      await page.screenshot({ path: join(out, "dashboard.png"), fullPage: true });
      expect(existsSync(join(out, "dashboard.png"))).to.equal(true);
      // the same chain over a store that lacks round 2's updates: round 2 is red, naming the failing checks
      const partial = await createStore();
      await partial.add(s.baseBytes);
      for (const r of h.rounds) await partial.add(await s.store.get(r.startCid));
      for (const sub of h.rounds[0]!.submissions) await partial.add(await s.store.get(sub.cid));
      await partial.add(await s.store.get(h.rounds[1]!.finalized!.globalCid));
      const dash2 = await serveDashboard({ ledger: s.ledger, store: partial });
      await page.goto(dash2.url);
      await page.waitForSelector("td.verdict");
      const cells = await page.locator("td.verdict").allInnerTexts();
      expect(cells[0]).to.equal("✓ verified");
      expect(cells[1]!.split("\n")).to.include.members([
        "✗ round 2 identity 1: update digest",
        "✗ round 2 identity 3: update digest",
        "✗ round 2: aggregate",
      ]);
      expect(await page.locator(".task .verdict").first().innerText()).to.match(/^✗ NOT VERIFIED — \d+ of \d+ checks/);
      await dash2.close();
      await partial.close();
    } finally {
      await browser.close();
      await dash.close();
      await s.store.close();
    }
  });

  it("shows a DP task's settings, the ε each round spent and each identity's", async function () {
    if (!existsSync(CHROMIUM)) this.skip(); // .ci/run installs Debian's chromium
    const dp = { noiseMultiplier: 1, delta: 1e-5, epsilonMax: 10 };
    const s = await tinyFederation(await ethers.getSigners(), { maxUpdateNorm: 0.05, dp });
    await runAllRounds(s);
    const h = await s.ledger.readTaskHistory(s.task);
    const eps = h.rounds.map((r) => r.finalized!.epsilon!.toFixed(3));
    const dash = await serveDashboard({ ledger: s.ledger, store: s.store });
    const browser = await launch();
    try {
      const page = await browser.newPage();
      await page.goto(dash.url);
      await page.waitForSelector("tr.round");
      expect(await page.locator(".task .dp").innerText()).to.equal(
        "client-level DP (central noise, added by the aggregator): σ 1 × clip 0.05, δ 0.00001; " +
          `ε spent ${eps[1]} of 10 after 2 finalized rounds; ε per identity: 1: ${eps[1]}, 2: ${eps[1]}, 3: ${eps[1]}`,
      );
      const cells = await page.locator("tr.round td:nth-child(4)").allInnerTexts();
      expect(cells.map((c) => c.split("\n").at(-1))).to.deep.equal(eps.map((e) => `fedavg, ε spent ${e}`));
      expect(await page.locator("td.verdict").allInnerTexts()).to.deep.equal(["✓ verified", "✓ verified"]);
    } finally {
      await browser.close();
      await dash.close();
      await s.store.close();
    }
  });

  it("renders HTML and script payloads in CIDs and strategy names as text, and runs none", async function () {
    if (!existsSync(CHROMIUM)) this.skip(); // .ci/run installs Debian's chromium
    const [admin, aggregator, hospital] = await ethers.getSigners();
    const ledger = await deployContracts(admin!);
    const store = await createStore();
    // any submitter chooses its CID string, the task admin the strategy name: the contract checks neither's form
    const strategy = "<img src=x onerror=xss(1)>";
    const startCid = "<script>xss(2)</script>";
    const updateCid = '"><img src=x onerror=xss(3)>';
    const globalCid = "<svg onload=xss(4)>";
    await ledger.registerIdentity(hospital!.address, "<b>bold</b>", ethers.id("fp"), "<iframe src=javascript:xss(5)>");
    // an institution whose name (in its metadata document) is a payload
    const named = "<img src=x onerror=xss(7)>";
    await ledger.registerIdentity(
      aggregator!.address,
      named,
      ethers.id("fp"),
      await store.add(identityMetadata(named)),
    );
    const sha = (t: string) => ethers.sha256(ethers.toUtf8Bytes(t));
    const task = await ledger.createTask({
      baseModelCid: "<script>xss(6)</script>",
      baseModelSha256: sha("base"),
      loraConfigHash: sha("lora"),
      aggregator: aggregator!.address,
      strategy,
      minUpdates: 1,
      roundDuration: 3600,
      maxRounds: 1,
      maxExamples: 1000,
      maxUpdateNorm: 10,
    });
    await ledger.connect(aggregator!).openFirstRound(task, startCid, sha("start"));
    const c = { task, round: 1, cid: updateCid, adapterSha256: sha("u"), numExamples: 5, metricsDigest: sha("m") };
    await ledger.connect(hospital!).submitUpdate(c);
    await ledger.connect(aggregator!).finalizeRound(task, 1, globalCid, sha("g"), [1], [WEIGHT_SCALE], strategy);
    const dash = await serveDashboard({ ledger, store });
    const browser = await launch();
    try {
      const page = await browser.newPage();
      const ran: string[] = [];
      await page.exposeFunction("xss", (n: number) => ran.push(String(n)));
      const response = await page.goto(dash.url);
      const headers = response!.headers();
      expect(headers["content-security-policy"]).to.contain("script-src 'self'");
      expect(headers["content-security-policy"]).to.contain("frame-ancestors 'none'");
      expect([headers["x-content-type-options"], headers["x-frame-options"]]).to.deep.equal(["nosniff", "DENY"]);
      await page.waitForSelector("tr.round");
      const lineage = await page.locator("#lineage").innerText();
      expect(lineage).to.contain(`task 1 — ${strategy}, 1/1 rounds, completed`);
      // the long payloads are shortened for display, as every CID is; their first 12 characters show as text
      for (const p of [startCid, updateCid, globalCid]) expect(lineage).to.contain(p.length > 20 ? p.slice(0, 12) : p);
      expect(await page.locator(`a.cid[href="/api/cid/${encodeURIComponent(globalCid)}"]`).count()).to.equal(1);
      expect(await page.locator("#lineage img, #lineage svg, #lineage script, #lineage iframe").count()).to.equal(0);
      expect(await page.locator("td.institution").allInnerTexts()).to.deep.equal([`${named} ✓`]);
      expect(await page.locator("#identities img, #identities iframe").count()).to.equal(0);
      // verify cannot run on a base-model "CID" that is a payload: said as text
      expect(await page.locator(".task .verdict").innerText()).to.equal(
        `verify could not run here: UnsupportedContentError: not a CID: ${JSON.stringify("<script>xss(6)</script>")}`,
      );
      await page.waitForTimeout(300);
      expect(ran).to.deep.equal([]);
    } finally {
      await browser.close();
      await dash.close();
      await store.close();
    }
  });
});
