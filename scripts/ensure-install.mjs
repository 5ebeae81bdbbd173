// Installs the project's dependencies when they are missing or older than
// package-lock.json, so `npm start` and `npm test` work on a fresh clone.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const installed = `${root}node_modules/.package-lock.json`;
const lock = `${root}package-lock.json`;

const upToDate =
  existsSync(installed) &&
  existsSync(lock) &&
  statSync(installed).mtimeMs >= statSync(lock).mtimeMs;

if (!upToDate) {
  console.log("Installing dependencies (npm ci)…");
  const result = spawnSync("npm", ["ci", "--no-audit", "--no-fund"], {
    cwd: root,
    stdio: "inherit",
  });
  if (result.status !== 0) process.exit(result.status ?? 1);
}
