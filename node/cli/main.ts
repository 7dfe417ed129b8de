/**
 * `fok`: the Flow of Knowledge command line, one file per command beside this one. Every command that touches a
 * chain takes --rpc (default $FOK_RPC_URL or http://127.0.0.1:8545) and a key (--private-key, $FOK_PRIVATE_KEY, or
 * --keystore FILE with $FOK_KEYSTORE_PASSWORD); every command that touches the store takes --store-dir and
 * optional --peer / --gateway / --listen. A failure is one line on stderr and exit code 1.
 */
import { FokError, InvalidArgumentError } from "../errors.js";
import { STRATEGIES } from "../aggregate/index.js";
import { DEFAULT_MAX_UPDATE_NORM } from "../federation/task-config.js";
import { aggregatorCommand } from "./aggregator.js";
import { chainCommand } from "./chain.js";
import { clientCommand } from "./client.js";
import { dashboardCommand } from "./dashboard.js";
import { demoCommand } from "./demo.js";
import { identityCommand } from "./identity.js";
import { inspectCommand } from "./inspect.js";
import { parse, type CliIO } from "./options.js";
import { storeCommand } from "./store.js";
import { taskCommand } from "./task.js";
import { verifyCommand } from "./verify.js";

export const HELP = `fok — federated LoRA fine-tuning with on-chain provenance

  fok demo [--clients 4] [--rounds 3] [--steps 40] [--strategy fedavg] [--privacy open|secure] [--local-only]
           [--dp-epsilon E [--dp-delta 1e-5] [--dp-noise SIGMA] [--max-update-norm C]] [--no-workers] [--json]
      a whole federation in one process: in-process chain, embedded IPFS, aggregator and clients

  fok chain deploy [--out $FOK_HOME/deployment.json] [--registrar ADDR] [--task-admin ADDR] [--admin ADDR]
  fok identity register --address ADDR --institution NAME [--metadata-cid CID] [--base models/base]
  fok identity list [--json]
  fok identity suspend|reinstate|revoke --id N
  fok identity consent --id N --address NEW [--valid-for 86400]     (the identity's key consents to a new key)
  fok identity rotate --id N --address NEW [--consent SIG --consent-deadline T]   (without consent: a 3-day
                  proposal the key can cancel)    fok identity cancel-rotation | complete-rotation --id N
  fok task create --aggregator ADDR [--base models/base] [--strategy fedavg] [--rounds 3] [--min-updates 2]
                  [--duration 3600] [--max-examples 100000] [--max-update-norm ${DEFAULT_MAX_UPDATE_NORM}]
                  [--privacy open|secure] [--threshold T]   (secure: fedavg, fedprox or ffa-lora only)
                  [--dp-epsilon E [--dp-delta 1e-5] [--dp-noise SIGMA]]   client-level DP, budget E
  fok task propose-aggregator --task T --aggregator ADDR   |   fok task accept --task T   (two-step handover)
  fok task close --task T      end a round past its deadline without a global adapter
  fok client run --task T (--data notes.jsonl | --text-dir DIR | --wordnet-category NAME) [--steps 40]
                 [--relay | --relayer-key HEX]   (relay: the identity signs, another account sends)
                 [--threads auto] [--reserve-cores 0]   train one adapter data-parallel on N threads (N − 1
                   workers, each a base copy); auto ($FOK_THREADS sets the default): the cores less those reserved,
                   no more workers than free memory holds
  fok aggregator run --task T [--expected N]
  fok inspect [--task T] [--id IDENTITY] [--json]
  fok dashboard [--port 8090] [--host 127.0.0.1]    a local page over the chain and the store
  fok verify --task T [--round R] [--held-out FILE.jsonl] [--json]
      re-check a task from the chain and the bytes alone; exit 1 on failure
  fok store add FILE | get CID [--out FILE] | export CID [--out x.car] | import x.car | serve [--gateway-port 8080]

  chain:  --rpc URL  --private-key HEX | --keystore FILE  --deployment FILE (default $FOK_HOME/deployment.json)
  store:  --store-dir DIR (default $FOK_HOME/store)  --peer MULTIADDR  --gateway URL  --listen MULTIADDR
          --announce MULTIADDR   (with --listen or --peer: peers of the task found through the chain)
  home:   $FOK_HOME (default .fok): the folder of a party's deployment.json and store
  model:  --base DIR  --lora-r 8  --lora-alpha 16  --lora-targets q,v
  strategies: ${STRATEGIES.join(", ")}`;

type Command = (sub: string | undefined, rest: string[], io: CliIO) => Promise<void>;

/** Commands that take a verb (`fok chain deploy`) get it as `sub`; the others get every argument as flags. */
const COMMANDS: Record<string, Command> = {
  demo: (sub, rest, io) => demoCommand(parse([sub, ...rest]).values, io),
  chain: chainCommand,
  identity: identityCommand,
  task: taskCommand,
  client: clientCommand,
  aggregator: aggregatorCommand,
  inspect: (sub, rest, io) => inspectCommand([sub, ...rest], io),
  dashboard: (sub, rest, io) => dashboardCommand([sub, ...rest], io),
  verify: (sub, rest, io) => verifyCommand([sub, ...rest], io),
  store: storeCommand,
};

/** Runs one `fok` invocation; returns its exit code. Errors are reported on `io.log` as one line. */
export async function runCli(argv: string[], io: CliIO): Promise<number> {
  const [cmd, sub, ...rest] = argv;
  try {
    if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
      io.out(HELP);
      return 0;
    }
    const command = COMMANDS[cmd];
    if (!command) throw new InvalidArgumentError(`unknown command ${cmd}; see \`fok help\``);
    // strings from the chain or a peer may carry terminal escape sequences: no control character reaches the screen
    const screened: CliIO = Object.assign(Object.create(io) as CliIO, {
      out: (line: string) => io.out(printable(line)),
      log: (line: string) => io.log(printable(line)),
    });
    await command(sub, rest, screened);
    return screened.exitCode;
  } catch (e) {
    io.log(`fok: ${errorLine(e)}`);
    return 1;
  } finally {
    for (const close of io.cleanup.splice(0)) close();
  }
}

/** `text` with every control character but the line break shown as `?` (C0, DEL and C1, which holds CSI). */
export function printable(text: string): string {
  return [...text].map((c) => (c !== "\n" && (c < " " || (c >= "\x7f" && c <= "\x9f")) ? "?" : c)).join("");
}

/**
 * One line for any error, never a stack trace: ours and flag errors by name, an operating-system error by its code
 * and path or address, an ethers error by its short message (ethers errors carry whole transactions), anything else
 * by its name and first line ($FOK_DEBUG=1 adds the stack).
 */
export function errorLine(e: unknown): string {
  const err = (e instanceof Error ? e : new Error(String(e))) as Error & {
    shortMessage?: string;
    code?: string;
    syscall?: string;
    path?: string;
    address?: string;
    port?: number;
  };
  // one line, and no terminal escape sequences from strings that came from a node or a file
  const firstLine = (s: string) => printable(s.split("\n")[0]!);
  if (process.env.FOK_DEBUG) return err.stack ?? err.message;
  if (err instanceof FokError || err.name === "TypeError") return `${err.name}: ${firstLine(err.message)}`;
  if (err.syscall) {
    const where = err.path ?? (err.address ? `${err.address}${err.port ? `:${err.port}` : ""}` : "");
    return `${err.code}: cannot ${err.syscall} ${printable(where)}`.trimEnd();
  }
  if (err.shortMessage) return `${err.code}: ${firstLine(err.shortMessage)}`;
  return `${err.name}: ${firstLine(err.message)}`;
}

/** The process's streams, and Ctrl-C as the stop of a serving command. */
export function processIO(): CliIO {
  return {
    out: (line) => console.log(line),
    outBytes: (bytes) => process.stdout.write(bytes),
    log: (line) => process.stderr.write(line + "\n"),
    stopped: new Promise<void>((resolve) => process.once("SIGINT", () => resolve())),
    exitCode: 0,
    cleanup: [],
  };
}
