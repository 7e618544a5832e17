// Generates herald.js, the script-tag build push nodes serve at /herald.js (a global
// `Herald`), from src/herald.js, the ES module and the one source of the client.
//
//   node build.js           write herald.js
//   node build.js --check   exit 1 if herald.js is not what src/herald.js gives (the tests run this)
//
// No bundler: the module has no imports, so the build only drops its `export` keywords and
// wraps it in a function. Any other import or export form stops the build rather than
// producing a script that would fail in a page.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const SOURCE = join(here, "src", "herald.js");
const TARGET = join(here, "herald.js");

export function scriptBuild(source) {
  const body = source.split("\n").flatMap((line, index) => {
    if (/^export default \w+;\s*$/.test(line)) return [];
    const declaration = /^export (class|function|const) /.exec(line);
    if (declaration) return [line.slice("export ".length)];
    if (/^\s*(import|export)\b/.test(line)) {
      throw new Error(`src/herald.js:${index + 1}: the script build handles only "export class|function|const" and "export default <name>;"`);
    }
    return [line];
  });
  return [
    "// GENERATED from src/herald.js by build.js (node build.js): edit that file, not this one.",
    "// The script-tag build of Herald's client: <script src=\".../herald.js\"> defines a global `Herald`.",
    "(function (root) {",
    "\"use strict\";",
    "",
    ...body.join("\n").trimEnd().split("\n"),
    "",
    "root.Herald = Herald;",
    "})(globalThis);",
    "",
  ].join("\n");
}

function main(argv) {
  const built = scriptBuild(readFileSync(SOURCE, "utf8"));
  if (argv.includes("--check")) {
    let current = "";
    try { current = readFileSync(TARGET, "utf8"); } catch { /* missing counts as stale */ }
    if (current !== built) {
      console.error("herald.js is stale: run `node build.js` in clients/js and commit the result");
      return 1;
    }
    return 0;
  }
  writeFileSync(TARGET, built);
  return 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = main(process.argv.slice(2));
