/**
 * The knowledge-flow probe's generator: items only ever come from the hospital's own training documents, the
 * correct option's position is balanced, and the same seed gives the same items.
 */
import { expect } from "chai";
import { buildProbe, PROBE_OPTIONS, type ProbeItem } from "../../node/data/probe.js";
import { mulberry32 } from "../../node/random.js";
import type { Document } from "../../node/data/types.js";

/** `n` documents of sentences made of words only this hospital uses (its own letters), plus shared short words. */
function hospitalDocs(name: string, letters: string, n: number, seed: number): Document[] {
  const rand = mulberry32(seed);
  const word = () =>
    Array.from({ length: 6 + Math.floor(rand() * 6) }, () => letters[Math.floor(rand() * letters.length)]).join("");
  const vocabulary = Array.from({ length: 120 }, word);
  const pick = () => vocabulary[Math.floor(rand() * vocabulary.length)]!;
  return Array.from({ length: n }, (_, i) => ({
    id: `${name}/${i}`,
    text: Array.from(
      { length: 4 },
      () => "The " + Array.from({ length: 10 }, () => (rand() < 0.3 ? "of the" : pick())).join(" ") + ".",
    ).join(" "),
  }));
}

describe("node/data knowledge-flow probe", function () {
  const a = hospitalDocs("a", "abcdefghijklm", 60, 1);
  const b = hospitalDocs("b", "nopqrstuvwxyz", 60, 2);

  it("items come only from the hospital's own training documents: prompt, answer and distractors", function () {
    const items = buildProbe("a", a, { items: 40, seed: 7 });
    expect(items).to.have.length(40);
    const byId = new Map(a.map((d) => [d.id, d.text]));
    const ownWords = new Set(a.flatMap((d) => d.text.split(/\s+/)));
    const otherWords = new Set(b.flatMap((d) => d.text.split(/\s+/)).filter((w) => !ownWords.has(w)));
    const sources = new Set<string>();
    for (const item of items) {
      expect(item.hospital).to.equal("a");
      const text = byId.get(item.sourceId);
      expect(text, item.sourceId).to.be.a("string");
      sources.add(item.sourceId);
      // the prompt followed by the right option is a passage of the source document
      expect(text).to.contain(item.prompt + item.options[item.answer]!);
      expect(item.options).to.have.length(PROBE_OPTIONS);
      expect(new Set(item.options).size).to.equal(PROBE_OPTIONS);
      for (const o of item.options) {
        expect(o.startsWith(" ")).to.equal(true);
        expect(ownWords.has(o.slice(1)), o).to.equal(true);
        expect(otherWords.has(o.slice(1)), o).to.equal(false);
      }
      // a distractor is never a word of the sentence asked about
      const sentence = text!.slice(text!.indexOf(item.prompt)).split(".")[0]!.split(" ");
      item.options.forEach((o, i) => i === item.answer || expect(sentence).to.not.include(o.slice(1)));
    }
    expect(sources.size).to.equal(40); // one item per document
  });

  it("balances the correct option's position and gives the same items for the same seed", function () {
    const items = buildProbe("a", a, { items: 41, seed: 3 });
    const counts = [0, 0, 0, 0];
    for (const item of items) counts[item.answer]!++;
    expect(counts).to.deep.equal([11, 10, 10, 10]);
    const again = buildProbe("a", a, { items: 41, seed: 3 });
    expect(again).to.deep.equal(items);
    const other: ProbeItem[] = buildProbe("a", a, { items: 41, seed: 4 });
    expect(other.map((i) => i.sourceId)).to.not.deep.equal(items.map((i) => i.sourceId));
    // the hospital's name is part of the seed: the same documents under another name give other items
    expect(buildProbe("c", a, { items: 41, seed: 3 }).map((i) => i.sourceId)).to.not.deep.equal(
      items.map((i) => i.sourceId),
    );
  });

  it("gives fewer items when too few documents have a usable sentence, and refuses a bad count", function () {
    expect(buildProbe("a", a.slice(0, 5), { items: 40, seed: 1 })).to.have.length(5);
    expect(buildProbe("a", [{ id: "x", text: "Too short." }], { items: 3, seed: 1 })).to.deep.equal([]);
    expect(() => buildProbe("a", a, { items: -1, seed: 1 })).to.throw("probe items must be a non-negative integer");
  });
});
