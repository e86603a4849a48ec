#!/usr/bin/env node
// A native-solc look-alike over solcjs's JS API, for py-solc-x's `solc_binary`.
//
//   solcjs-standard-json.js --version          prints "solc, the solidity compiler ... Version: X"
//   solcjs-standard-json.js --standard-json    reads standard JSON on stdin, writes it on stdout
//
// The npm CLI `solcjs` prints a banner before its JSON, which breaks py-solc-x; this wrapper
// prints nothing but the compiler's output. Imports are resolved against --base-path,
// every --include-path, and this package's node_modules (for @openzeppelin/...).
"use strict";
const fs = require("fs");
const path = require("path");

const here = path.resolve(__dirname, "..");
const solc = require(path.join(here, "node_modules", "solc"));

const args = process.argv.slice(2);
const roots = [];
let standardJson = false;
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--version" || a === "-v") {
    // Same shape as native solc, which py-solc-x parses with a regex.
    process.stdout.write(
      "solc, the solidity compiler commandline interface\nVersion: " + solc.version() + "\n");
    process.exit(0);
  } else if (a === "--standard-json") {
    standardJson = true;
  } else if (a === "--base-path" || a === "--include-path" || a === "--allow-paths") {
    const v = args[++i];
    if (a !== "--allow-paths") roots.push(path.resolve(v));
  } else if (a.startsWith("--base-path=") || a.startsWith("--include-path=")) {
    roots.push(path.resolve(a.split("=", 2)[1]));
  }
}
if (!standardJson) {
  process.stderr.write("usage: solcjs-standard-json.js --standard-json | --version\n");
  process.exit(2);
}
roots.push(process.cwd(), path.join(here, "node_modules"), here);

function findImports(importPath) {
  for (const root of roots) {
    const p = path.resolve(root, importPath);
    if (fs.existsSync(p)) return { contents: fs.readFileSync(p, "utf8") };
  }
  return { error: "File not found: " + importPath };
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  process.stdout.write(solc.compile(input, { import: findImports }));
});
