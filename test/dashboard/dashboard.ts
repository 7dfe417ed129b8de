import { expect } from "chai";
import { network } from "hardhat";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { serveDashboard } from "../../node/dashboard/server.js";
import { runAllRounds, tinyFederation } from "../fixtures/tiny-federation.js";

const { ethers } = await network.create();

describe("node/dashboard (fok dashboard)", function () {
  this.timeout(300_000);
  const CHROMIUM = process.env.FOK_CHROMIUM ?? "/usr/bin/chromium";

  it("shows the identities, the rounds and a chart of a finished run in headless Chromium", async function () {
    if (!existsSync(CHROMIUM)) this.skip(); // .ci/run installs Debian's chromium
    const s = await tinyFederation(await ethers.getSigners());
    await runAllRounds(s);
    const dash = await serveDashboard({ ledger: s.ledger, store: s.store });
    expect(dash.url).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const { chromium } = await import("playwright-core");
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
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
      const out = join(import.meta.dirname, "../../test-output");
      await mkdir(out, { recursive: true });
      await page.screenshot({ path: join(out, "dashboard.png"), fullPage: true });
      expect(existsSync(join(out, "dashboard.png"))).to.equal(true);
    } finally {
      await browser.close();
      await dash.close();
      await s.store.close();
    }
  });
});
