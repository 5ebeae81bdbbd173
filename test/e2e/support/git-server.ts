/**
 * A real git server for tests: a repository in a temp directory served by
 * `git daemon` on 127.0.0.1, so the runner clones over git:// exactly as it
 * would from a remote host (and never from a local path).
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "../../../scripts/local-control-plane.js";

const run = promisify(execFile);

/** A fixed identity, and no user or system config, so commits work anywhere. */
const gitEnv = {
  ...process.env,
  GIT_AUTHOR_NAME: "Aeroplane Test",
  GIT_AUTHOR_EMAIL: "test@aeroplane.invalid",
  GIT_COMMITTER_NAME: "Aeroplane Test",
  GIT_COMMITTER_EMAIL: "test@aeroplane.invalid",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
};

async function git(cwd: string, ...args: string[]): Promise<string> {
  const { stdout } = await run("git", args, { cwd, env: gitEnv });
  return stdout.trim();
}

export interface ServedRepository {
  /** The git:// URL to clone. */
  readonly url: string;
  /** The working tree on disk. */
  readonly dir: string;
  /** The sha of the last commit on `main` ("" before the first). */
  readonly head: string;
  /** Writes `files` (path → content) and commits everything; returns the sha. */
  commit(files: Record<string, string>, message: string): Promise<string>;
  /** Points `branch` at the current commit. */
  branch(name: string): Promise<void>;
  /** Stops the daemon and deletes the repository. */
  stop(): Promise<void>;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

async function waitUntilListening(port: number, daemon: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (daemon.exitCode !== null)
      throw new Error(`git daemon exited with ${daemon.exitCode}`);
    if (await canConnect(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`git daemon did not listen on port ${port}`);
}

/** Creates an empty repository on branch `main` and serves it over git://. */
export async function servedRepository(name = "app"): Promise<ServedRepository> {
  const root = await mkdtemp(path.join(tmpdir(), "aeroplane-git-"));
  const dir = path.join(root, name);
  await mkdir(dir);
  await git(dir, "init", "--quiet", "--initial-branch=main");

  const port = await freePort();
  const daemon = spawn(
    "git",
    [
      "daemon",
      "--export-all",
      "--reuseaddr",
      `--base-path=${root}`,
      `--port=${port}`,
      "--listen=127.0.0.1",
      root,
    ],
    { stdio: "ignore", env: gitEnv },
  );
  await waitUntilListening(port, daemon);

  let head = "";
  return {
    url: `git://127.0.0.1:${port}/${name}`,
    dir,
    get head() {
      return head;
    },
    async commit(files, message) {
      for (const [file, content] of Object.entries(files)) {
        await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
        await writeFile(path.join(dir, file), content);
      }
      await git(dir, "add", "--all");
      await git(dir, "commit", "--quiet", "--allow-empty", "-m", message);
      head = await git(dir, "rev-parse", "HEAD");
      return head;
    },
    async branch(branchName) {
      await git(dir, "branch", "--force", branchName);
    },
    async stop() {
      daemon.kill();
      await rm(root, { recursive: true, force: true });
    },
  };
}
