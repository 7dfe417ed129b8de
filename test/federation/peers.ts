/**
 * Peers found through the chain: a hospital's node announces its multiaddrs on-chain, a verifier with an empty store
 * reads the announcements of the task's accounts, dials them and fetches blocks over bitswap; hostile or unrelated
 * announcements are never dialed.
 */
import { expect } from "chai";
import { network } from "hardhat";
import { deployContracts, isRevert, Revert } from "../../node/chain/index.js";
import { createStore, parseAnnouncement, StoreError, type AdapterStore } from "../../node/store/index.js";
import { PeerBook } from "../../node/federation/peers.js";
import { sha256Hex } from "../../node/digest.js";
import { rejection } from "../../node/testing/rejection.js";

const { ethers } = await network.create();

describe("peers found through the chain", function () {
  this.timeout(120_000);
  const stores: AdapterStore[] = [];
  after(async () => Promise.all(stores.map((s) => s.close())));

  it("a verifier with an empty store dials the node announced on-chain and fetches its blocks", async function () {
    const [admin, aggregator, hospital, stranger] = await ethers.getSigners();
    const ledger = await deployContracts(admin!);
    await ledger.registerIdentity(hospital!.address, "h", sha256Hex(new Uint8Array([1])), "bafkreimeta");
    const task = await ledger.createTask({
      baseModelCid: "bafkreibase",
      baseModelSha256: sha256Hex(new Uint8Array([2])),
      loraConfigHash: sha256Hex(new Uint8Array([3])),
      aggregator: aggregator!.address,
      strategy: "fedavg",
      minUpdates: 1,
      roundDuration: 3600,
      maxRounds: 1,
      maxExamples: 10,
      maxUpdateNorm: 20,
    });
    const hospitalStore = await createStore({ listen: ["/ip4/127.0.0.1/tcp/0"] });
    const strangerStore = await createStore({ listen: ["/ip4/127.0.0.1/tcp/0"] });
    const verifierStore = await createStore({ listen: ["/ip4/127.0.0.1/tcp/0"], fetchTimeoutMs: 5_000 });
    stores.push(hospitalStore, strangerStore, verifierStore);
    const bytes = new TextEncoder().encode("an update only the hospital's node holds");
    const cid = await hospitalStore.add(bytes);
    const logs: string[] = [];
    const hospitalBook = new PeerBook(ledger.connect(hospital!), hospitalStore, task, (l) => logs.push(l));
    expect(await hospitalBook.announce()).to.equal(true);
    expect(await hospitalBook.announce()).to.equal(false); // unchanged: not sent again
    // an account that is no identity or aggregator of the task, and an identity-less hostile string
    await ledger.connect(stranger!).announcePeer(strangerStore.multiaddrs());
    await ledger.connect(aggregator!).announcePeer(["/ip4/127.0.0.1/tcp/1/p2p/not-a-peer-id"]);
    const verifierLog: string[] = [];
    const verifier = new PeerBook(ledger, verifierStore, task, (l) => verifierLog.push(l));
    expect(await verifier.refresh()).to.equal(1);
    expect(verifierStore.connectedPeers()).to.deep.equal([hospitalStore.multiaddrs()[0]!.split("/p2p/")[1]]);
    expect(await verifierStore.get(cid, { expectedSha256: sha256Hex(bytes) })).to.deep.equal(bytes);
    expect(verifierLog.filter((l) => l.startsWith("peer announcement of"))).to.deep.equal([
      `peer announcement of ${aggregator!.address} ignored: not a peer id: "not-a-peer-id"`,
    ]);
    expect(await verifier.refresh()).to.equal(0); // connected already; the bad one is not tried again
  });

  it("checks announcements: one peer id, ip/dns + tcp + p2p, at most 8; the contract caps length", async function () {
    const id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    expect(parseAnnouncement(`/ip4/10.0.0.2/tcp/4001/p2p/${id} /dns4/h.example/tcp/4001/p2p/${id}`)).to.have.length(2);
    for (const [text, why] of [
      ["", "holds 1 to 8 multiaddrs, this one 0"],
      [Array(9).fill(`/ip4/10.0.0.2/tcp/1/p2p/${id}`).join(" "), "this one 9"],
      [`/ip4/10.0.0.2/udp/1/p2p/${id}`, "must be ip4|ip6|dns4|dns6/tcp/p2p, got /ip4/udp/p2p"],
      ["/ip4/10.0.0.2/tcp/1", "got /ip4/tcp"],
      ["<script>", 'not a multiaddr: "<script>"'],
      [
        `/ip4/10.0.0.2/tcp/1/p2p/${id} /ip4/10.0.0.3/tcp/1/p2p/12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE`,
        "one announcement names one peer, this one 2",
      ],
    ] as const)
      expect(() => parseAnnouncement(text), text.slice(0, 40)).to.throw(StoreError, why);
    const [admin] = await ethers.getSigners();
    const ledger = await deployContracts(admin!);
    const e = await rejection(ledger.announcePeer(["x".repeat(1025)]));
    expect(isRevert(e, Revert.InvalidAnnouncement) && e.args).to.deep.equal([1025n]);
  });
});
