#!/usr/bin/env node
// The `fok` command: runs the TypeScript CLI through tsx's loader (Node >= 22).
import { register } from "tsx/esm/api";

register();
await import("../node/cli/fok.ts");
