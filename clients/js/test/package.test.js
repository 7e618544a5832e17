// The npm package: one source (src/herald.js) and its generated script-tag build agree, the
// tarball `npm pack` makes holds what a user needs and nothing else, and the TypeScript
// declarations match the class and type-check the README's usage.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import vm from "node:vm";

import * as published from "herald-push-client";
import { scriptBuild } from "../build.js";

const PACKAGE = dirname(dirname(fileURLToPath(import.meta.url)));
const read = (path) => readFileSync(join(PACKAGE, path), "utf8");

test("the script-tag build is what build.js makes of the module source", () => {
  const fresh = read("herald.js") === scriptBuild(read("src/herald.js"));
  assert.ok(fresh, "herald.js is stale: run `node build.js` in clients/js and commit it");
});

test("the build refuses module syntax it cannot turn into a script", () => {
  assert.throws(() => scriptBuild('import { x } from "y";\n'), /src\/herald.js:1/);
  assert.throws(() => scriptBuild("export { Herald as H };\n"), /src\/herald.js:1/);
});

test("in a page, the script defines the global Herald and nothing else", () => {
  const page = vm.createContext({});
  vm.runInContext(read("herald.js"), page);

  assert.deepEqual(Object.keys(page), ["Herald"]);
  const herald = new page.Herald("ws://x/ws", { token: "ht_t", WebSocket: class {} });
  assert.equal(typeof herald.connect, "function");
});

test("the module exports the class by name and as default", () => {
  assert.deepEqual(Object.keys(published).sort(), ["Herald", "default"]);
  assert.equal(published.default, published.Herald);
});

test("without a WebSocket to use, the constructor says what to pass", () => {
  assert.throws(() => new published.Herald("ws://x/ws", { token: "t", WebSocket: undefined }), /options.WebSocket/);
});

test("npm pack makes a tarball of the module, the script build, the types and the docs", () => {
  const destination = mkdtempSync(join(tmpdir(), "herald-pack-"));
  const [packed] = JSON.parse(
    execFileSync("npm", ["pack", "--json", "--pack-destination", destination], { cwd: PACKAGE, encoding: "utf8" }),
  );
  const tarball = join(destination, packed.filename);
  const files = execFileSync("tar", ["-tzf", tarball], { encoding: "utf8" }).trim().split("\n").sort();

  assert.equal(packed.name, "herald-push-client");
  assert.deepEqual(files, [
    "package/CHANGELOG.md",
    "package/README.md",
    "package/herald.js",
    "package/index.d.ts",
    "package/package.json",
    "package/src/herald.js",
  ]);
  const manifest = JSON.parse(execFileSync("tar", ["-xzOf", tarball, "package/package.json"], { encoding: "utf8" }));
  const targets = [manifest.types, ...Object.values(manifest.exports["."]), manifest.exports["./herald.js"]];
  for (const target of targets) assert.ok(files.includes(`package/${target.replace(/^\.\//, "")}`), target);
});

test("the changelog has an entry for the package's version", () => {
  const { version } = JSON.parse(read("package.json"));
  assert.match(read("CHANGELOG.md"), new RegExp(`^## ${version.replaceAll(".", "\\.")}\\b`, "m"));
});

test("the declarations name exactly the class's public methods and fields", () => {
  const declared = read("index.d.ts").match(/export class Herald \{([\s\S]*?)\n\}/)[1];
  const names = (pattern) => new Set([...declared.matchAll(pattern)].map((m) => m[1]));
  const methods = names(/^\s+(\w+)(?:<[^>]*>)?\(/gm);
  const fields = names(/^\s+(?:readonly )?(\w+): /gm);
  const herald = new published.Herald("ws://x/ws", { token: "t", WebSocket: class {} });

  methods.delete("constructor");
  assert.deepEqual([...methods].sort(), Object.getOwnPropertyNames(published.Herald.prototype).filter((n) => n !== "constructor").sort());
  assert.deepEqual([...fields].sort(), Object.keys(herald).sort());
});

test("the declarations type-check the README's usage under tsc --strict", () => {
  const tsc = join(PACKAGE, "node_modules", "typescript", "bin", "tsc");
  const options = ["--noEmit", "--strict", "--module", "nodenext", "--moduleResolution", "nodenext",
    "--target", "es2022", "--lib", "es2022,dom"];
  try {
    execFileSync(process.execPath, [tsc, ...options, join(PACKAGE, "test", "types", "usage.ts")], { cwd: PACKAGE, encoding: "utf8" });
  } catch (error) {
    assert.fail(`tsc found errors:\n${error.stdout}${error.stderr}`);
  }
});
