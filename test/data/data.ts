import { expect } from "chai";
import { rejection } from "../../node/testing/rejection.js";
import { existsSync } from "node:fs";
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DataFormatError, PartitionError } from "../../node/data/errors.js";
import { loadJsonl, loadTextFolder } from "../../node/data/loaders.js";
import { loadPubMedQA, qaDocuments, qaPrompt } from "../../node/data/pubmedqa.js";
import { loadWordnetMedical } from "../../node/data/corpora.js";
import { GENERAL_MEDICINE, SPECIALTIES, specialtyOf } from "../../node/data/specialties.js";
import { apportion, partition, splitClients } from "../../node/data/partition.js";
import { jensenShannon, summarizePartition } from "../../node/data/summary.js";
import type { Document } from "../../node/data/types.js";
import { concatWindowed, fitQaPrompt, qaWindows } from "../../node/data/tokens.js";
import { BPETokenizer } from "../../node/model/tokenizer.js";
import type { QAItem } from "../../node/data/pubmedqa.js";

// PubMedQA PQA-L from the PubMedQA project (MIT); on the project's machines it sits in ../shared/data
const PUBMEDQA = process.env.FOK_PUBMEDQA ?? join(import.meta.dirname, "../../../shared/data/pubmedqa/ori_pqal.json");
const HAVE_PUBMEDQA = existsSync(PUBMEDQA);

const words = (t: string) =>
  t
    .toLowerCase()
    .split(/\W+/)
    .filter(Boolean)
    .map((w) => [...w].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 65536, 7));

describe("node/data", function () {
  this.timeout(60_000);
  let dir: string;
  before(async function () {
    dir = await mkdtemp(join(tmpdir(), "fok-data-"));
  });
  after(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  describe("loaders", function () {
    it("loads PubMedQA PQA-L: 1000 items with decisions, MeSH terms and specialties", async function () {
      if (!HAVE_PUBMEDQA) this.skip(); // set FOK_PUBMEDQA to ori_pqal.json
      const { items, skipped } = await loadPubMedQA(PUBMEDQA);
      expect(items.length).to.equal(1000);
      expect(skipped).to.deep.equal([]);
      const count = (d: string) => items.filter((i) => i.decision === d).length;
      expect([count("yes"), count("no"), count("maybe")]).to.deep.equal([552, 338, 110]);
      const first = items.find((i) => i.id === "21645374")!;
      expect(first.question).to.equal(
        "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?",
      );
      expect(qaPrompt(first).endsWith("\nAnswer:")).to.equal(true);
      const specialties = new Set(items.map((i) => i.specialty));
      expect([...specialties].sort()).to.deep.equal([...SPECIALTIES.map((s) => s.name), GENERAL_MEDICINE].sort());
      expect(qaDocuments([first])[0]!.label).to.equal(first.specialty);
    });

    it("maps MeSH headings to specialties by the table", function () {
      expect(specialtyOf(["Humans", "Breast Neoplasms", "Mastectomy"])).to.equal("oncology");
      expect(specialtyOf(["Myocardial Infarction", "Coronary Angiography", "Laparoscopy"])).to.equal("cardiovascular");
      expect(specialtyOf(["Humans", "Child", "Adolescent"])).to.equal(GENERAL_MEDICINE);
    });

    it("names file, line and field for each malformed PubMedQA record, or skips and counts them", async function () {
      const file = join(dir, "bad_pqal.json");
      await writeFile(
        file,
        JSON.stringify(
          {
            "1": { QUESTION: "q?", CONTEXTS: ["c"], LONG_ANSWER: "a", final_decision: "yes" },
            "2": { QUESTION: "q?", CONTEXTS: ["c"], LONG_ANSWER: "a", final_decision: "perhaps" },
            "3": { QUESTION: "", CONTEXTS: ["c"], LONG_ANSWER: "a", final_decision: "no" },
          },
          null,
          1,
        ),
      );
      const err = await rejection(loadPubMedQA(file));
      expect(err).to.be.instanceOf(DataFormatError);
      expect(err.message).to.equal(`${file}:10: field "final_decision" is "perhaps", not yes/no/maybe`);
      const r = await loadPubMedQA(file, { skipMalformed: true });
      expect(r.items.map((i) => i.id)).to.deep.equal(["1"]);
      expect(r.skipped.map((e) => [e.line, e.field])).to.deep.equal([
        [10, "final_decision"],
        [18, "QUESTION"],
      ]);
      await writeFile(file, "{not json");
      expect((await rejection(loadPubMedQA(file))).message).to.match(/field "\(file\)" is not valid JSON/);
    });

    it("loads JSONL and reports every malformed line by file, line and field", async function () {
      const file = join(dir, "notes.jsonl");
      await writeFile(
        file,
        [
          '{"text": "chest pain", "label": "cardio"}',
          "",
          "{broken",
          '{"label": "x"}',
          '{"text": "ok", "label": 3}',
          '["text"]',
          '{"text": "fine"}',
        ].join("\n"),
      );
      const err = await rejection(loadJsonl(file));
      expect(err.message).to.match(
        new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}:3: field "\\(record\\)" is not valid JSON`),
      );
      const r = await loadJsonl(file, { skipMalformed: true });
      expect(r.items.map((d) => d.text)).to.deep.equal(["chest pain", "fine"]);
      expect(r.skipped.map((e) => [e.line, e.field])).to.deep.equal([
        [3, "(record)"],
        [4, "text"],
        [5, "label"],
        [6, "(record)"],
      ]);
    });

    it("loads text files labelled by sub-folder; empty and non-UTF-8 files are malformed", async function () {
      const root = join(dir, "notes");
      await mkdir(join(root, "cardiology"), { recursive: true });
      await writeFile(join(root, "cardiology", "a.txt"), "stent placed");
      await writeFile(join(root, "b.txt"), "general note");
      await writeFile(join(root, "empty.txt"), "   ");
      await writeFile(join(root, "latin1.txt"), Buffer.from([0x63, 0x61, 0x66, 0xe9]));
      const r = await loadTextFolder(root, { skipMalformed: true });
      expect(r.items.map((d) => [d.id, d.label])).to.deep.equal([
        ["b.txt", undefined],
        ["cardiology/a.txt", "cardiology"],
      ]);
      expect(r.skipped.map((e) => e.message.split(": field ")[1])).to.deep.equal([
        '"(file)" is empty',
        '"(file)" is not valid UTF-8',
      ]);
      expect(await rejection(loadTextFolder(root))).to.be.instanceOf(DataFormatError);
    });

    it("loads WordNet's medical definitions, each with its category", async function () {
      const docs = await loadWordnetMedical();
      const counts: Record<string, number> = {};
      for (const d of docs) counts[d.label!] = (counts[d.label!] ?? 0) + 1;
      expect(counts).to.deep.equal({
        "body part": 1791,
        disease: 606,
        drug: 915,
        organism: 262,
        procedure: 165,
        symptom: 462,
      });
      expect(docs.find((d) => d.id === "wordnet/00035498")!.text).to.equal(
        "abdominoplasty, tummy tuck: cosmetic surgery of the abdomen to remove wrinkles and tighten the skin " +
          "over the stomach",
      );
    });
  });

  describe("partitions", function () {
    let docs: Document[];
    before(async function () {
      if (!HAVE_PUBMEDQA) this.skip(); // set FOK_PUBMEDQA to ori_pqal.json
      docs = qaDocuments((await loadPubMedQA(PUBMEDQA)).items);
    });

    it("gives byte-identical partitions for the same seed, whatever the input order", function () {
      for (const spec of [
        { kind: "label" },
        { kind: "iid", clients: 5 },
        { kind: "quantity", clients: 5 },
        { kind: "dirichlet", clients: 5, alpha: 0.5 },
      ] as const) {
        const a = JSON.stringify(splitClients(partition(docs, spec, 3), 0.2, 3));
        const b = JSON.stringify(splitClients(partition([...docs].reverse(), spec, 3), 0.2, 3));
        const c = JSON.stringify(splitClients(partition(docs, spec, 4), 0.2, 4));
        expect(a, spec.kind).to.equal(b);
        expect(a, spec.kind).to.not.equal(c);
      }
    });

    it("puts no document in both train and held-out, and loses none", function () {
      const clients = splitClients(partition(docs, { kind: "dirichlet", clients: 6, alpha: 1 }, 1), 0.2, 1);
      const seen = new Set<string>();
      for (const c of clients) {
        expect(c.heldOut.length).to.be.greaterThan(0);
        for (const d of [...c.train, ...c.heldOut]) {
          expect(seen.has(d.id), d.id).to.equal(false);
          seen.add(d.id);
        }
      }
      expect(seen.size).to.equal(docs.length);
    });

    it("splits by specialty into one hospital per specialty", function () {
      const parts = partition(docs, { kind: "label" }, 1);
      expect(parts.length).to.equal(7);
      for (const p of parts) expect(new Set(p.docs.map((d) => d.label))).to.deep.equal(new Set([p.name]));
    });

    it("makes clients 10x apart in size under quantity skew", function () {
      const sizes = partition(docs, { kind: "quantity", clients: 5 }, 1).map((p) => p.docs.length);
      expect(sizes.reduce((a, b) => a + b, 0)).to.equal(1000);
      expect(sizes[4]! / sizes[0]!).to.be.within(9, 11);
      expect(apportion(10, [1, 1, 1])).to.deep.equal([4, 3, 3]);
    });

    it("raises label divergence between clients as Dirichlet alpha falls (100 → 1 → 0.1)", async function () {
      const js: number[] = [];
      for (const alpha of [100, 1, 0.1]) {
        let sum = 0;
        for (const seed of [1, 2, 3]) {
          const clients = splitClients(partition(docs, { kind: "dirichlet", clients: 5, alpha }, seed), 0.2, seed);
          sum += (await summarizePartition(clients, words)).labelJs;
        }
        js.push(sum / 3);
      }
      expect(js[0]!).to.be.below(0.05);
      expect(js[1]!).to.be.above(js[0]! * 3);
      expect(js[2]!).to.be.above(js[1]!);
      const iid = await summarizePartition(
        splitClients(partition(docs, { kind: "iid", clients: 5 }, 1), 0.2, 1),
        words,
      );
      expect(iid.labelJs).to.be.below(js[1]!);
    });

    it("computes Jensen–Shannon divergence in bits", function () {
      expect(jensenShannon(new Map([["a", 1]]), new Map([["b", 1]]))).to.equal(1);
      expect(
        jensenShannon(
          new Map([
            ["a", 2],
            ["b", 2],
          ]),
          new Map([
            ["a", 1],
            ["b", 1],
          ]),
        ),
      ).to.equal(0);
    });

    it("refuses impossible requests with PartitionError", function () {
      expect(() => partition(docs.slice(0, 3), { kind: "iid", clients: 5 }, 1)).to.throw(
        PartitionError,
        "5 clients but only 3 documents",
      );
      expect(() => partition(docs, { kind: "dirichlet", clients: 5, alpha: 0 }, 1)).to.throw(
        PartitionError,
        "Dirichlet alpha must be positive, got 0",
      );
    });
  });

  describe("token windows", function () {
    it("builds supervised QA windows that end on the answer, weighted, and pools them with offsets", async function () {
      const tokenizer = await BPETokenizer.train(
        ["Question: is it safe? Context: a trial of aspirin. Answer: yes no maybe. ".repeat(30)],
        300,
      );
      const item = (id: string, question: string, decision: QAItem["decision"]): QAItem => ({
        id,
        question,
        contexts: ["a trial of aspirin in adults with chest pain"],
        longAnswer: "",
        decision,
        meshes: [],
        year: "2000",
        specialty: "cardiovascular",
      });
      const items = [item("1", "is it safe?", "yes"), item("2", "does it work in children with fever?", "maybe")];
      const seqLen = 16;
      const w = await qaWindows(tokenizer, items, seqLen, 5);
      expect(w.starts.length).to.equal(2);
      for (const [i, it] of items.entries()) {
        const answer = await tokenizer.encode(` ${it.decision}`);
        const prompt = await fitQaPrompt(tokenizer, it, seqLen - answer.length);
        const s = w.starts[i]!;
        // targets are tokens s+1 .. s+seqLen: the last answer.length of them are the answer, after the prompt's tail
        expect([...w.tokens.subarray(s + seqLen + 1 - answer.length, s + seqLen + 1)]).to.deep.equal(answer);
        expect([
          ...w.tokens.subarray(s + seqLen + 1 - answer.length - 4, s + seqLen + 1 - answer.length),
        ]).to.deep.equal(prompt.slice(-4));
        expect([...w.weights.subarray(s + seqLen + 1 - answer.length, s + seqLen + 1)]).to.deep.equal(
          answer.map(() => 5),
        );
        expect(w.weights[s + seqLen - answer.length]).to.equal(1);
      }
      expect(w.tokens[w.starts[1]! + seqLen + 1]).to.equal(tokenizer.endOfTextId);
      const pooled = concatWindowed([w, w]);
      expect([...pooled.starts]).to.deep.equal([...w.starts, ...[...w.starts].map((s) => s + w.tokens.length)]);
      expect(pooled.weights.length).to.equal(2 * w.tokens.length);
      expect((await rejection(qaWindows(tokenizer, [], seqLen))).name).to.equal("InvalidArgumentError");
      // a long context is cut at its end, never the question: head, the context's first tokens, then the cue
      const long = { ...item("3", "is it safe?", "no"), contexts: [Array(60).fill("aspirin helps").join(" ")] };
      const head = await tokenizer.encode("Question: is it safe?\nContext:");
      const tail = await tokenizer.encode("\nAnswer:");
      const context = await tokenizer.encode(` ${long.contexts[0]}`);
      const fitted = await fitQaPrompt(tokenizer, long, head.length + tail.length + 10);
      expect(fitted).to.deep.equal([...head, ...context.slice(0, 10), ...tail]);
      expect(await fitQaPrompt(tokenizer, long, 5)).to.deep.equal([...head, ...tail].slice(-5)); // a head too long
    });
  });
});
