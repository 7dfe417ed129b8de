/** `fok inspect`: the identities and every task's rounds, or one identity's whole contribution history. */
import { formatWeight } from "../weights.js";
import { InvalidArgumentError } from "../errors.js";
import {
  IdentityStatus,
  SecurePhase,
  decodeStrategy,
  type FederationLedger,
  type IdentityHistory,
  type RoundHistory,
  type TaskHistory,
} from "../chain/index.js";
import { id, readerFrom, parse, toJson, type CliIO, type Values } from "./options.js";
import { describeDp, fmtEpsilon, identityEpsilons } from "../dp/privacy.js";

export async function inspectCommand(args: (string | undefined)[], io: CliIO): Promise<void> {
  const { values: v } = parse(args);
  const only = v.task === undefined ? undefined : id(v, "task");
  const identity = v.id === undefined ? undefined : id(v, "id");
  const ledger = await readerFrom(v, io);
  const identities = await ledger.readIdentities();
  const tasks = await readTasks(ledger, only);
  if (only !== undefined && tasks.length === 0) throw new InvalidArgumentError(`no task ${only}`);
  if (identity !== undefined) return inspectIdentity(identity, identities, tasks, v, io);
  if (v.json) return io.out(toJson({ identities, tasks }));
  io.out("identities:");
  for (const i of identities) io.out(`  ${i.tokenId}  ${IdentityStatus[i.status]}  ${i.signer}`);
  for (const t of tasks) printTask(t, io);
}

async function readTasks(ledger: FederationLedger, only: number | undefined): Promise<TaskHistory[]> {
  const total = await ledger.totalTasks();
  const tasks = [];
  for (let t = 1; t <= total; t++) if (!only || only === t) tasks.push(await ledger.readTaskHistory(t));
  return tasks;
}

/** One task as `fok inspect` prints it (exported for tests). */
export function printTask(t: TaskHistory, io: Pick<CliIO, "out">): void {
  const done = t.completed ? ", completed" : "";
  io.out(
    `task ${t.task}: strategy ${t.strategy}, ${t.rounds.length}/${t.maxRounds} rounds, base ${t.baseModelCid}${done}`,
  );
  const limits = `at least ${t.minUpdates} contributors, at most ${t.maxExamples} examples per claim`;
  io.out(`  ${limits}, update norm at most ${t.maxUpdateNorm}, rounds of ${t.roundDuration} s`);
  io.out(
    t.privacy === "secure"
      ? `  privacy: secure aggregation, threshold ${t.threshold} (only masked updates are published)`
      : "  privacy: open (updates published in the clear)",
  );
  if (t.dpConfig) printDp(t, t.dpConfig, io);
  for (const c of t.aggregatorChanges) io.out(`  aggregator ${c.previous} → ${c.current} (block ${c.blockNumber})`);
  for (const r of t.rounds) {
    io.out(`  round ${r.round} from ${r.startCid}`);
    if (r.secure) printSecureRound(r, io);
    const what = r.secure ? "masked update " : "";
    for (const s of r.submissions) {
      const relayed = s.relayer ? `, relayed by ${s.relayer}` : "";
      io.out(`    identity ${s.identity} submitted ${what}${s.cid} (${s.numExamples} examples${relayed})`);
    }
    for (const d of r.unavailable)
      io.out(
        `    aggregator declared the updates of [${d.identities.join(", ")}] unavailable (tx ${d.transactionHash})`,
      );
    const f = r.finalized;
    if (f) {
      const shares = f.contributors.map((c, i) => `${c}: ${formatWeight(f.weights[i]!)}`).join(", ");
      const eps = f.epsilon === undefined ? "" : `; ε spent ${fmtEpsilon(f.epsilon)}`;
      io.out(`    → global ${f.globalCid} by ${decodeStrategy(f.strategyId)} from [${shares}]${eps}`);
    } else if (r.closed) io.out(`    → closed without a global adapter by ${r.closed.closedBy}`);
  }
}

/** A DP task's settings, the ε recorded so far and each identity's own (the rounds it contributed to). */
function printDp(t: TaskHistory, dp: NonNullable<TaskHistory["dpConfig"]>, io: Pick<CliIO, "out">): void {
  const finalized = t.rounds.filter((r) => r.finalized);
  const spent = finalized.at(-1)?.finalized?.epsilon ?? 0;
  io.out(`  ${describeDp(dp, t.maxUpdateNorm, spent, finalized.length)}`);
  const each = [...identityEpsilons(dp, t.rounds)].map(([id, e]) => `${id}: ${fmtEpsilon(e.epsilon)} (${e.rounds})`);
  if (each.length) io.out(`  ε per identity (rounds contributed): ${each.join(", ")}`);
}

/** A secure round's phases: who advertised keys, dealt shares (the participants), survived and revealed, with txs. */
function printSecureRound(r: RoundHistory, io: Pick<CliIO, "out">): void {
  const sec = r.secure!;
  const ids = (xs: { identity: number }[]) =>
    `[${xs
      .map((x) => x.identity)
      .sort((a, b) => a - b)
      .join(", ")}]`;
  const survivors = r.submissions.map((s) => ({ identity: s.identity }));
  const dropped = sec.dealings.filter((d) => !r.submissions.some((s) => s.identity === d.identity));
  io.out(`    keys ${ids(sec.keys)}; participants (dealt shares) ${ids(sec.dealings)}`);
  io.out(`    survivors ${ids(survivors)}, dropped ${ids(dropped)}; revealed ${ids(sec.reveals)}`);
  for (const p of sec.phases)
    io.out(`    phase ${SecurePhase[p.phase]} after ${p.count} (block ${p.blockNumber}, tx ${p.transactionHash})`);
  for (const d of sec.dealings) io.out(`    identity ${d.identity} dealt ${d.cid} (tx ${d.transactionHash})`);
  for (const x of sec.reveals) io.out(`    identity ${x.identity} revealed ${x.cid} (tx ${x.transactionHash})`);
}

/** Every submission of identity `id` across the tasks, with its weight where it was aggregated. */
function contributionsOf(id: number, tasks: TaskHistory[]) {
  return tasks.flatMap((t) =>
    t.rounds.flatMap((r) =>
      r.submissions
        .filter((s) => s.identity === id)
        .map((s) => {
          const k = r.finalized?.contributors.indexOf(id) ?? -1;
          return {
            task: t.task,
            round: r.round,
            cid: s.cid,
            adapterSha256: s.adapterSha256,
            numExamples: s.numExamples,
            transactionHash: s.transactionHash,
            aggregated: k >= 0,
            declaredUnavailable: r.unavailable.some((d) => d.identities.includes(id)),
            weight: k >= 0 ? r.finalized!.weights[k]! : 0n,
            globalCid: r.finalized?.globalCid ?? null,
          };
        }),
    ),
  );
}

function inspectIdentity(id: number, identities: IdentityHistory[], tasks: TaskHistory[], v: Values, io: CliIO) {
  const who = identities.find((i) => i.tokenId === id);
  if (!who) throw new InvalidArgumentError(`no identity ${id}`);
  const history = contributionsOf(id, tasks);
  if (v.json) return io.out(toJson({ identity: who, contributions: history }));
  io.out(`identity ${id}: ${IdentityStatus[who.status]}, signer ${who.signer}, institution ${who.institutionId}`);
  for (const e of who.events)
    io.out(`  ${e.kind} (key ${e.signer}) in block ${e.blockNumber}, tx ${e.transactionHash}`);
  for (const c of history) {
    const left = c.declaredUnavailable ? "not aggregated: declared unavailable by the aggregator" : "not aggregated";
    const share = c.aggregated ? `${formatWeight(c.weight)} of ${c.globalCid}` : left;
    io.out(`  task ${c.task} round ${c.round}: ${c.cid} (${c.numExamples} examples) → ${share}`);
  }
}
