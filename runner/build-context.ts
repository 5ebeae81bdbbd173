/**
 * Packs a build context directory into the tar stream Docker's build API
 * expects, honouring `.dockerignore` the way the docker CLI does.
 */
import { statSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import dockerignore from "@balena/dockerignore";
import tar, { type Pack } from "tar-fs";

/**
 * Reads `<contextDir>/.dockerignore` and returns a tar stream of the context.
 *
 * `dockerfile` (relative to the context) and `.dockerignore` are always sent,
 * as the CLI does, because the daemon needs them even when a pattern
 * excludes them.
 */
export async function packBuildContext(
  contextDir: string,
  dockerfile: string,
): Promise<Pack> {
  const patterns = await readFile(path.join(contextDir, ".dockerignore"), "utf8").catch(
    () => "",
  );
  const rules = dockerignore({ ignorecase: false }).add(patterns);
  const keep = new Set([".dockerignore", toPosix(dockerfile)]);
  // An exception (`!dir/keep`) can re-include files below an ignored
  // directory, so with one present ignored directories are still walked.
  const hasExceptions = patterns.split("\n").some((line) => line.trim().startsWith("!"));

  return tar.pack(contextDir, {
    // tar-fs asks for every entry, directories included; skipping a
    // directory skips its whole tree.
    ignore(name) {
      const relative = toPosix(path.relative(contextDir, name));
      if (relative === "" || keep.has(relative) || !rules.ignores(relative)) return false;
      return !(hasExceptions && isDirectory(name));
    },
    map(header) {
      // Ownership on the runner host means nothing inside the image.
      header.uid = 0;
      header.gid = 0;
      return header;
    },
  });
}

function toPosix(relative: string): string {
  return relative.split(path.sep).join("/");
}

function isDirectory(name: string): boolean {
  try {
    return statSync(name).isDirectory();
  } catch {
    return false;
  }
}
