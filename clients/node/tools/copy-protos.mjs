// `prepack`: copies the protos the client loads into this package's proto/ folder, so that a
// packed tarball works outside the repository: the repository's proto/authsvc (the one source of
// truth) and, of google-proto-files (a dev dependency: 88 MB, 8000 files), only the google/*
// files they import, transitively, plus google/rpc's status and error details. The copy is not
// committed (.gitignore); `postpack` (`--clean`) removes it again, so that a checkout never
// reads a stale copy (index.js reads ../../proto and google-proto-files when it is absent).

import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = path.resolve(here, "../proto");
rmSync(out, { recursive: true, force: true });
if (process.argv.includes("--clean")) process.exit(0);

const repoProtos = path.resolve(here, "../../../proto");
if (!existsSync(path.join(repoProtos, "authsvc"))) {
  console.error(`copy-protos: ${repoProtos}/authsvc not found (run from the authsvc repository)`);
  process.exit(1);
}
const require = createRequire(import.meta.url);
const googleProtos = path.dirname(require.resolve("google-proto-files/package.json"));

const roots = [repoProtos, googleProtos];
const pending = [
  ...readdirSync(path.join(repoProtos, "authsvc", "v1"))
    .filter((name) => name.endsWith(".proto"))
    .map((name) => `authsvc/v1/${name}`),
  "google/rpc/status.proto",
  "google/rpc/error_details.proto",
];
const copied = new Set();
while (pending.length > 0) {
  const file = pending.pop();
  if (copied.has(file)) continue;
  const root = roots.find((candidate) => existsSync(path.join(candidate, file)));
  if (!root) {
    console.error(`copy-protos: ${file} not found in ${roots.join(", ")}`);
    process.exit(1);
  }
  mkdirSync(path.dirname(path.join(out, file)), { recursive: true });
  cpSync(path.join(root, file), path.join(out, file));
  copied.add(file);
  const source = readFileSync(path.join(root, file), "utf8");
  for (const [, imported] of source.matchAll(/^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"/gm)) {
    pending.push(imported);
  }
}
console.error(`copy-protos: ${copied.size} files into ${out}`);
