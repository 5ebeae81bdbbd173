/**
 * Checks out one commit of a repository with the system `git`.
 *
 * The CLI rather than a library because it speaks every transport and
 * credential form users already have working, and because a child process
 * can be killed outright when a deployment is aborted.
 */
import { spawn } from "node:child_process";
import { createLogger } from "./logger.js";

const log = createLogger("runner:git");

/** Hides `user:password@` (or a bare token) in any URL inside `text`. */
export function redactUrlCredentials(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@]+@/gi, "$1***@");
}

export interface CheckoutOptions {
  repoUrl: string;
  branch: string;
  /** Check out exactly this commit (full or abbreviated); null = the branch head. */
  commitSha: string | null;
  /** An empty directory that receives the working tree. */
  dir: string;
  /** Also allow file:// URLs (the runner's --allow-file-repos). */
  allowFileRepos?: boolean;
  /** Receives git's progress and error output, credentials already hidden. */
  onLine(line: string): void;
  signal: AbortSignal;
}

/** git exited with a failure; the message is its last words on stderr. */
export class GitError extends Error {
  override name = "GitError";
}

/** The commit to deploy is not in the repository; the message says which. */
export class CommitNotFoundError extends GitError {
  override name = "CommitNotFoundError";
}

/** Clones `branch` (or fetches `commitSha`) into `dir`; returns the full sha. */
export async function checkout(options: CheckoutOptions): Promise<string> {
  const { repoUrl, branch, commitSha, dir } = options;
  if (repoUrl.startsWith("file://") && !options.allowFileRepos) {
    throw new GitError(
      "This runner does not deploy file:// repositories; start it with --allow-file-repos",
    );
  }
  if (commitSha === null) {
    await runGit(
      [
        "clone",
        "--depth=1",
        `--branch=${branch}`,
        "--single-branch",
        "--no-tags",
        "--",
        repoUrl,
        dir,
      ],
      options,
    );
    return resolveHead(options);
  }

  if (!/^[0-9a-f]{4,40}$/i.test(commitSha)) {
    throw new GitError(`"${commitSha}" is not a commit sha`);
  }
  await runGit(["init", "--quiet", dir], options);
  await runGit(["-C", dir, "remote", "add", "origin", repoUrl], options);
  // Servers that allow fetching a commit by id save a full-history fetch;
  // the rest (and abbreviated shas) need the branch history to find it.
  const fetchedExactly =
    commitSha.length === 40 &&
    (await runGit(
      ["-C", dir, "fetch", "--depth=1", "--no-tags", "origin", commitSha],
      options,
    )
      .then(() => true)
      .catch((error: unknown) => {
        if (options.signal.aborted) throw error;
        options.onLine("Fetching the commit alone failed; fetching the branch history");
        return false;
      }));
  if (!fetchedExactly) {
    const refspec = `+refs/heads/${branch}:refs/remotes/origin/${branch}`;
    await runGit(["-C", dir, "fetch", "--no-tags", "origin", refspec], options);
  }
  // Resolved first: git checks out a name it cannot resolve as a path, and
  // says only "--detach does not take a path argument".
  const sha = await resolveCommit(options, commitSha);
  await runGit(
    [
      "-C",
      dir,
      "-c",
      "advice.detachedHead=false",
      "checkout",
      "--quiet",
      "--detach",
      sha,
    ],
    options,
  );
  return resolveHead(options);
}

/** The full sha of `commitSha` among what was fetched; a GitError naming it if absent. */
async function resolveCommit(
  options: CheckoutOptions,
  commitSha: string,
): Promise<string> {
  const { dir, repoUrl, branch } = options;
  const resolved = await runGit(
    ["-C", dir, "rev-parse", "--verify", "--quiet", `${commitSha}^{commit}`],
    options,
  ).catch((error: unknown) => {
    if (options.signal.aborted) throw error;
    return "";
  });
  const sha = resolved.trim();
  if (!/^[0-9a-f]{40,64}$/.test(sha)) {
    throw new CommitNotFoundError(
      `Commit ${commitSha} not found in ${redactUrlCredentials(repoUrl)} (branch ${branch})`,
    );
  }
  return sha;
}

async function resolveHead(options: CheckoutOptions): Promise<string> {
  const sha = (await runGit(["-C", options.dir, "rev-parse", "HEAD"], options)).trim();
  if (!/^[0-9a-f]{40,64}$/.test(sha)) throw new GitError(`Unexpected commit id "${sha}"`);
  return sha;
}

/** Runs git without a shell; resolves with its stdout. */
function runGit(args: string[], options: CheckoutOptions): Promise<string> {
  const { signal, onLine } = options;
  signal.throwIfAborted();
  log.debug("git", { args: redactUrlCredentials(args.join(" ")) });

  return new Promise((resolve, reject) => {
    const child = spawn("git", args, {
      stdio: ["ignore", "pipe", "pipe"],
      // Own process group, so an abort also kills the helpers git starts
      // (remote-https, index-pack) instead of leaving them to finish.
      detached: true,
      env: {
        ...process.env,
        // Never wait for a password on a terminal nobody watches.
        GIT_TERMINAL_PROMPT: "0",
        GIT_SSH_COMMAND: process.env.GIT_SSH_COMMAND ?? "ssh -o BatchMode=yes",
        // Only network transports: a repository URL must not read the
        // runner host's own files (file://, local paths, ext::).
        GIT_ALLOW_PROTOCOL: `https:http:ssh:git${options.allowFileRepos ? ":file" : ""}`,
        LC_ALL: "C",
      },
    });

    let stdout = "";
    let lastError = "";
    let pending = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      const lines = (pending + chunk).split(/\r\n|\r|\n/);
      pending = lines.pop() ?? "";
      for (const line of lines.map(redactUrlCredentials)) {
        if (line.trim() === "") continue;
        lastError = line;
        onLine(line);
      }
    });

    const kill = () => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, "SIGKILL");
        } catch {
          // Already gone.
        }
      }
    };
    signal.addEventListener("abort", kill, { once: true });

    child.on("error", (error) => {
      signal.removeEventListener("abort", kill);
      reject(new GitError(`Could not run git: ${error.message}`));
    });
    child.on("close", (code) => {
      signal.removeEventListener("abort", kill);
      if (pending.trim() !== "") {
        lastError = redactUrlCredentials(pending);
        onLine(lastError);
      }
      if (signal.aborted) return reject(signal.reason);
      if (code === 0) return resolve(stdout);
      reject(
        new GitError(
          lastError.replace(/^(fatal|error): /, "") || `git exited with ${code}`,
        ),
      );
    });
  });
}
