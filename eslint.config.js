// ESLint for the whole tree. The layering of DESIGN.md is encoded below: each folder of node/ may import only the
// folders beneath it, and only node/chain may touch the generated contract bindings. Prettier formats; this file
// checks what a formatter cannot (line length of strings and comments, function length, imports, unused code).
import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** node/<folder> → the node/ folders it may import (the top-level modules node/*.ts are open to every folder). */
const LAYERS = {
  model: [],
  data: ["model"],
  train: ["model", "data"],
  aggregate: ["model"],
  chain: [],
  store: [],
  dp: ["model", "chain"],
  secure: ["model", "aggregate", "chain", "dp"],
  provenance: ["model", "aggregate", "chain", "secure", "dp"],
  federation: ["model", "data", "train", "aggregate", "chain", "store", "secure", "dp"],
  dashboard: ["model", "aggregate", "chain", "store", "provenance", "secure", "dp"],
  experiment: ["model", "data", "train", "aggregate", "chain", "store", "federation", "secure", "dp"],
  testing: ["model", "data", "train", "aggregate", "chain", "store", "federation", "provenance", "secure", "dp"],
  cli: [
    ...["model", "data", "train", "aggregate", "chain", "store", "secure", "dp"],
    ...["federation", "provenance", "dashboard", "experiment"],
  ],
};
const FOLDERS = Object.keys(LAYERS);
const CONTRACT_BINDINGS = {
  group: ["**/types/ethers-contracts", "**/types/ethers-contracts/**"],
  message: "only node/chain touches contract objects; use the ledger's typed methods",
};

const layerRules = FOLDERS.map((folder) => ({
  files: [`node/${folder}/**/*.ts`],
  rules: {
    "no-restricted-imports": [
      "error",
      {
        patterns: [
          ...FOLDERS.filter((f) => f !== folder && !LAYERS[folder].includes(f)).map((f) => ({
            group: [`../${f}`, `../${f}/**`],
            message: `node/${folder} may not import node/${f} (layers: DESIGN.md, eslint.config.js)`,
          })),
          ...(folder === "chain" ? [] : [CONTRACT_BINDINGS]),
        ],
      },
    ],
  },
}));

export default tseslint.config(
  {
    ignores: [
      "node_modules/",
      "artifacts/",
      "cache/",
      "types/",
      "coverage/",
      "results/",
      "test-output/",
      "scratch/",
      ".fok/",
      "ignition/deployments/",
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: {
      globals: {
        process: "readonly",
        console: "readonly",
        Buffer: "readonly",
        performance: "readonly",
        setTimeout: "readonly",
        clearTimeout: "readonly",
        setInterval: "readonly",
        clearInterval: "readonly",
        URL: "readonly",
        fetch: "readonly",
        AbortController: "readonly",
        AbortSignal: "readonly",
        TextEncoder: "readonly",
        TextDecoder: "readonly",
        structuredClone: "readonly",
        queueMicrotask: "readonly",
      },
    },
    rules: {
      "max-len": ["error", { code: 120, ignoreUrls: true }],
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrors: "none" },
      ],
      "@typescript-eslint/no-non-null-assertion": "off",
      "no-restricted-imports": ["error", { patterns: [] }],
    },
  },
  {
    files: ["node/**/*.ts", "scripts/**/*.ts"],
    rules: { "max-lines-per-function": ["error", { max: 80, skipBlankLines: true, skipComments: true, IIFEs: true }] },
  },
  ...layerRules,
);
