/**
 * The temporary directories deployments clone into, and their cleanup.
 *
 * A deployment removes its clone when it ends, but a runner killed outright
 * (SIGKILL, a crash, the host's power) leaves it behind. Each directory's
 * name carries the runner's mark, so the next start of the same runner can
 * tell its predecessor's leftovers from another runner's live clones in the
 * same temp directory.
 */
import { lstat, mkdtemp, readdir, rm } from "node:fs/promises";
import path from "node:path";
import { createLogger, errorMessage } from "./logger.js";

const log = createLogger("runner:clone-dirs");

/**
 * File times come from the kernel's coarse clock, up to a tick (1–10 ms)
 * behind Date.now(): a directory made just after the start can look older
 * than it. A killed predecessor's directory is older by far more.
 */
const clockSlackMs = 100;

/** `aeroplane-<mark>-`, which mkdtemp completes with six random characters. */
export function cloneDirPrefix(runnerMark?: string): string {
  return runnerMark ? `aeroplane-${runnerMark}-` : "aeroplane-";
}

/** Creates a fresh, empty clone directory under `base`; returns its path. */
export function makeCloneDir(base: string, runnerMark?: string): Promise<string> {
  return mkdtemp(path.join(base, cloneDirPrefix(runnerMark)));
}

/**
 * Removes the clone directories under `base` that this runner's mark names
 * and that were last changed well before `olderThan` (ms since the epoch;
 * the process's start), so none a running job of this process uses. Returns
 * the paths removed; a directory that cannot be removed is logged and kept.
 */
export async function removeStaleCloneDirs(
  base: string,
  runnerMark: string,
  olderThan: number,
): Promise<string[]> {
  const pattern = new RegExp(`^${cloneDirPrefix(runnerMark)}[A-Za-z0-9]{6}$`);
  const entries = await readdir(base).catch((error: unknown) => {
    log.warn("Could not list the temp directory", { base, error: errorMessage(error) });
    return [];
  });

  const removed: string[] = [];
  for (const name of entries.filter((entry) => pattern.test(entry))) {
    const dir = path.join(base, name);
    try {
      // lstat: a symlink with our name is not ours to follow.
      const info = await lstat(dir);
      if (!info.isDirectory() || info.mtimeMs >= olderThan - clockSlackMs) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(dir);
      log.info("Removed a clone directory left by an earlier run", { dir });
    } catch (error) {
      log.warn("Could not remove a stale clone directory", {
        dir,
        error: errorMessage(error),
      });
    }
  }
  return removed;
}
