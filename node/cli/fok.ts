/** The `fok` process: runs one command with the process's streams and exits with its code. */
import { processIO, runCli } from "./main.js";

process.exit(await runCli(process.argv.slice(2), processIO()));
