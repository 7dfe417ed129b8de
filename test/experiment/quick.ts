import { expect } from "chai";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DEFAULT_EXPERIMENT,
  METHODS,
  QUICK,
  runExperiment,
  validateExperimentConfig,
  type ExperimentConfig,
} from "../../node/experiment/run.js";
import { writeResults } from "../../node/experiment/report.js";

const DATA = process.env.FOK_PUBMEDQA ?? join(import.meta.dirname, "../../../shared/data/pubmedqa/ori_pqal.json");

// A smoke test of `npm run experiment -- --quick`: every artifact written and well-formed. Which method wins is a
// question for the report, not for a test.
describe("experiment --quick", function () {
  this.timeout(600_000);

  it("refuses a config that would run something other than it says, naming the field", function () {
    const bad = (o: Record<string, unknown>) => () =>
      validateExperimentConfig({ ...DEFAULT_EXPERIMENT, ...o } as ExperimentConfig);
    expect(bad({ trainOn: "answers" }))
      .to.throw('experiment trainOn must be "qa" or "text", got "answers"')
      .with.property("name", "InvalidArgumentError");
    expect(bad({ answerWeight: -1 })).to.throw("experiment answerWeight must be a finite non-negative number, got -1");
    expect(bad({ rounds: 0 })).to.throw("experiment rounds must be a positive integer, got 0");
    expect(bad({ seeds: [] })).to.throw("experiment seeds is empty");
    expect(bad({ methods: ["fedavg", "fedsgd"] })).to.throw(
      'unknown experiment methods ["fedsgd"]; choose from base, local, fedavg, exact-svd, fedprox, centralized',
    );
    expect(bad({})).to.not.throw();
  });

  it("writes results.json, report.md and five SVG plots, every method scored for every hospital", async function () {
    if (!existsSync(DATA)) this.skip(); // set FOK_PUBMEDQA to ori_pqal.json
    const out = await mkdtemp(join(tmpdir(), "fok-experiment-"));
    try {
      const cfg: ExperimentConfig = {
        ...DEFAULT_EXPERIMENT,
        ...QUICK,
        data: DATA,
        baseDir: join(import.meta.dirname, "../../models/base"),
      };
      const runs = await runExperiment(cfg, () => undefined);
      const files = await writeResults(out, cfg, runs, 1);
      expect(files.map((f) => f.slice(out.length + 1))).to.deep.equal([
        "results.json",
        "report.md",
        "convergence.svg",
        "min-vs-mean.svg",
        "partitions.svg",
        "probe-heatmap.svg",
        "min-acc-rounds.svg",
      ]);
      const results = JSON.parse(await readFile(join(out, "results.json"), "utf8"));
      expect(results.runs.length).to.equal(1);
      const run = results.runs[0];
      expect(run.partition).to.equal("specialty");
      expect(run.methods.map((m: { method: string }) => m.method)).to.deep.equal(METHODS);
      for (const m of run.methods) {
        expect(m.clients.length, m.method).to.equal(7);
        for (const c of m.clients) {
          expect(Number.isFinite(c.perplexity) && c.perplexity > 1, `${m.method} ${c.client} ppl`).to.equal(true);
          expect(c.accuracy, `${m.method} ${c.client} accuracy`).to.be.within(0, 1);
          // every held-out question answered once (QUICK scores 3 per hospital)
          expect(c.answers.yes + c.answers.no + c.answers.maybe, `${m.method} ${c.client} answers`).to.equal(3);
          expect(c.probeOwn, `${m.method} ${c.client} probe`).to.be.within(0, 1);
        }
        // the probe's cross-client matrix: the model each hospital ends with, on every hospital's items
        expect(m.probe.matrix.length, m.method).to.equal(7);
        expect(m.probe.matrix.every((row: number[]) => row.length === 7)).to.equal(true);
        const shared = m.method !== "local";
        if (shared) expect(new Set(m.probe.matrix.map((r: number[]) => r.join())).size, m.method).to.equal(1);
      }
      expect(run.majority.clients.length).to.equal(7);
      expect(run.majority.fairness.min).to.equal(
        Math.min(...run.majority.clients.map((c: { accuracy: number }) => c.accuracy)),
      );
      for (const m of run.methods.filter((x: { method: string }) =>
        ["fedavg", "exact-svd", "fedprox"].includes(x.method),
      )) {
        expect(m.curve.length, m.method).to.equal(QUICK.rounds);
        expect(m.roundsToConvergence, m.method).to.be.within(1, QUICK.rounds!);
        expect(m.minAccuracyCurve?.length, m.method).to.equal(m.method === "fedavg" ? QUICK.rounds : undefined);
      }
      expect(run.crossClient.perplexity.length).to.equal(7);
      expect(results.summary.length).to.equal(METHODS.length);
      const md = await readFile(join(out, "report.md"), "utf8");
      expect(md).to.contain(
        "| partition | method | worst ppl | mean ppl | Min-Acc % | mean Acc % | H-mean % | rounds to converge |",
      );
      const main = md.split("\n## ")[0]!; // the first table, before the sections
      expect(main.split("\n").filter((l) => l.startsWith("| specialty |")).length).to.equal(METHODS.length);
      for (const section of ["## Answers given", "## Knowledge-flow probe", "## The claims, run by run"])
        expect(md, section).to.contain(section);
      expect(md).to.contain("| specialty | majority class |");
      expect(md).to.contain("| FedAvg raises Min-Acc over local-only | specialty | ");
      // under the local-only matrix, one row per shared adapter (every method but base and local),
      // a column per hospital
      const shared = md.split("\n").filter((l) => / \(shared\)\* \|/.test(l));
      expect(shared.map((l) => l.split("|")[1]!.trim())).to.deep.equal([
        "*fedavg (shared)*",
        "*exact-svd (shared)*",
        "*fedprox (shared)*",
        "*centralized (shared)*",
      ]);
      expect(shared.every((l) => l.split("|").length === 7 + 3)).to.equal(true);
      for (const svg of files.filter((f) => f.endsWith(".svg")).map((f) => f.slice(out.length + 1))) {
        const text = await readFile(join(out, svg), "utf8");
        expect(text.startsWith("<svg"), svg).to.equal(true);
        expect(text.trimEnd().endsWith("</svg>"), svg).to.equal(true);
        expect(text, svg).to.match(/<path|<rect/);
      }
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
