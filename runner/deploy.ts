/**
 * One deployment attempt: clone → build → candidate → health check → swap.
 *
 * Every step writes platform lines into the deployment's log, and every way
 * out cleans up after itself: a failure or an abort removes the candidate
 * container and the image of this attempt and leaves the live container
 * untouched; on failure the reason is the log's last line.
 */
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Job, JobPhase } from "../schema/protocol.js";
import { systemClock, type Clock } from "./clock.js";
import {
  aeroplaneLabels,
  BuildFailedError,
  type DockerClient,
  type OutputStream,
} from "./docker.js";
import { checkout, GitError } from "./git.js";
import { probeHttp, waitUntilHealthy, type ProbeResult } from "./health.js";
import { createLogger, errorMessage, stderrSink } from "./logger.js";
import { createRedactor } from "./redact.js";
import { containerNames, DeployFailure, swapIn, type AttemptContext } from "./swap.js";

/** How many of a failed container's last output lines go into the log. */
const outputTailLines = 20;

export type DeployOutcome = "running" | "failed" | "aborted";

export interface DeploymentIO {
  /** Receives every log line of the deployment, in order. */
  log(line: string, stream: OutputStream): void;
  /** Called as the attempt enters each phase; `commitSha` once it is known. */
  phase(phase: JobPhase, commitSha?: string): void;
  /** Aborting stops the attempt within seconds and removes what it made. */
  signal: AbortSignal;
  docker: DockerClient;
  clock?: Clock;
  /** Where the temporary clone goes; the OS temp directory by default. */
  workDir?: string;
  /** Lets the job clone a file:// repository from this host's disk. */
  allowFileRepos?: boolean;
}

export interface DeploymentResult {
  outcome: DeployOutcome;
  commitSha: string | null;
  /** Why it failed or was aborted; the same text as the last log line. */
  reason?: string;
}

/** Runs one deployment attempt to its end; never rejects. */
export async function runDeployment(
  job: Job,
  io: DeploymentIO,
): Promise<DeploymentResult> {
  const redact = createRedactor(job.env);
  // Docker and git errors can echo environment values; redact the runner's
  // own log of this attempt as well as the deployment log.
  const logger = createLogger("runner:job", {
    fields: { deployment: job.deploymentId },
    sink: (entry) => stderrSink(redact(entry)),
  });
  const ctx: AttemptContext = {
    job,
    docker: io.docker,
    clock: io.clock ?? systemClock,
    signal: io.signal,
    names: containerNames(job.serviceId, job.deploymentId),
    log: (line, stream = "stdout") => io.log(redact(line), stream),
    logger,
  };

  let commitSha: string | null = null;
  const phase = (next: JobPhase) => {
    logger.info(`Phase ${next}`, { commit: commitSha ?? undefined });
    io.phase(next, commitSha ?? undefined);
  };

  let workDir: string | null = null;
  try {
    workDir = await mkdtemp(path.join(io.workDir ?? tmpdir(), "aeroplane-"));
    phase("cloning");
    commitSha = await clone(ctx, path.join(workDir, "repo"), io.allowFileRepos);
    phase("building");
    await build(ctx, path.join(workDir, "repo"));
    phase("starting");
    await startCandidate(ctx);
    phase("health-check");
    await checkCandidate(ctx);
    // It proved the image works; it cannot serve (no port), so free it now.
    await ctx.docker.remove(ctx.names.candidate);
    phase("swapping");
    await swapIn(ctx);
    logger.info("Deployment running", { commit: commitSha });
    return { outcome: "running", commitSha };
  } catch (error) {
    const ending = await endAttempt(ctx, error);
    return { ...ending, commitSha, reason: redact(ending.reason) };
  } finally {
    if (workDir) await rm(workDir, { recursive: true, force: true });
  }
}

async function clone(
  ctx: AttemptContext,
  dir: string,
  allowFileRepos: boolean | undefined,
): Promise<string> {
  const { job } = ctx;
  const target = job.commitSha ? `commit ${job.commitSha} of ${job.branch}` : job.branch;
  ctx.log(`Cloning ${job.repoUrl} at ${target}`);
  try {
    const sha = await checkout({
      repoUrl: job.repoUrl,
      branch: job.branch,
      commitSha: job.commitSha,
      dir,
      allowFileRepos: allowFileRepos ?? false,
      onLine: (line) => ctx.log(line, "stderr"),
      signal: ctx.signal,
    });
    ctx.log(`Checked out ${sha}`);
    return sha;
  } catch (error) {
    if (error instanceof GitError)
      throw new DeployFailure(`Clone failed: ${error.message}`);
    throw error;
  }
}

/** Resolves `relative` under `base`, refusing paths that climb out of it. */
function within(base: string, relative: string, what: string): string {
  const resolved = path.resolve(base, relative.replace(/^\/+/, ""));
  if (resolved !== base && !resolved.startsWith(base + path.sep)) {
    throw new DeployFailure(`${what} "${relative}" points outside the repository`);
  }
  return resolved;
}

async function build(ctx: AttemptContext, repoDir: string): Promise<void> {
  const { job } = ctx;
  const contextDir = within(repoDir, job.rootDir, "Root directory");
  const dockerfile = within(contextDir, job.dockerfilePath, "Dockerfile path");
  const shown = path.relative(repoDir, dockerfile);

  if (!(await stat(contextDir).catch(() => null))?.isDirectory()) {
    throw new DeployFailure(
      `Root directory "${job.rootDir}" does not exist in the repository`,
    );
  }
  if (!(await stat(dockerfile).catch(() => null))?.isFile()) {
    throw new DeployFailure(`No Dockerfile at "${shown}" in the repository`);
  }

  // The build gets its own signal so a timeout cancels it like an abort.
  const limit = new AbortController();
  const onAbort = () => limit.abort(ctx.signal.reason);
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  const timer = setTimeout(
    () => limit.abort(new Error("build timeout")),
    job.buildTimeoutMs,
  );

  ctx.log(`Building image ${job.imageTag} from ${shown}`);
  try {
    await ctx.docker.buildImage({
      contextDir,
      dockerfile: path.relative(contextDir, dockerfile).split(path.sep).join("/"),
      tag: job.imageTag,
      labels: aeroplaneLabels(job.serviceId, job.deploymentId, "candidate"),
      onLine: (line, stream) => ctx.log(line, stream),
      signal: limit.signal,
    });
  } catch (error) {
    ctx.signal.throwIfAborted();
    if (limit.signal.aborted) {
      throw new DeployFailure(`Build timed out after ${seconds(job.buildTimeoutMs)} s`);
    }
    if (error instanceof BuildFailedError)
      throw new DeployFailure(`Build failed: ${error.message}`);
    throw new DeployFailure(`Build failed: ${errorMessage(error)}`);
  } finally {
    clearTimeout(timer);
    ctx.signal.removeEventListener("abort", onAbort);
  }
  ctx.log(`Built image ${job.imageTag}`);
}

async function startCandidate(ctx: AttemptContext): Promise<void> {
  const { job, docker, names } = ctx;
  ctx.signal.throwIfAborted();
  // A container of that name can only be debris of an earlier try.
  await docker.remove(names.candidate);
  ctx.log(`Starting candidate container ${names.candidate}`);
  try {
    await docker.createAndStart({
      name: names.candidate,
      image: job.imageTag,
      env: job.env,
      labels: aeroplaneLabels(job.serviceId, job.deploymentId, "candidate"),
    });
  } catch (error) {
    throw new DeployFailure(
      `Could not start the candidate container: ${errorMessage(error)}`,
    );
  }
}

/** Waits for the candidate to answer HTTP on its port over the bridge network. */
async function checkCandidate(ctx: AttemptContext): Promise<void> {
  const { job, docker, names } = ctx;
  const port = job.internalPort;
  const limit = seconds(job.healthCheckTimeoutMs);
  ctx.log(`Health check: GET ${job.healthCheckPath} on port ${port}, up to ${limit} s`);

  let address: string | null = null;
  const isAlive = async () => {
    const state = await docker.inspect(names.candidate);
    address = state?.ipAddress ?? null;
    return state?.running === true && address !== null;
  };
  const result = await waitUntilHealthy({
    probe: (timeoutMs) =>
      probeHttp(address!, port, job.healthCheckPath, timeoutMs, ctx.signal),
    isAlive,
    timeoutMs: job.healthCheckTimeoutMs,
    clock: ctx.clock,
    signal: ctx.signal,
  });

  if (result.outcome === "healthy") {
    ctx.log(
      `Health check passed: GET ${job.healthCheckPath} answered HTTP ${result.status}`,
    );
    return;
  }
  // A timeout can also mean the app died just before the deadline.
  const exited = result.outcome === "exited" || !(await isAlive());
  await logContainerOutput(ctx);
  if (exited) {
    const state = await docker.inspect(names.candidate);
    const code = state?.exitCode ?? "unknown";
    throw new DeployFailure(`The app exited with code ${code} during the health check`);
  }
  throw new DeployFailure(unhealthyReason(result.last, port, job.healthCheckPath, limit));
}

function unhealthyReason(
  last: ProbeResult | null,
  port: number,
  checkPath: string,
  limit: string,
): string {
  if (last && "status" in last) {
    return (
      `Health check failed: GET ${checkPath} on port ${port} answered HTTP ` +
      `${last.status} (expected 200–399) for ${limit} s`
    );
  }
  const cause = last ? ` (last attempt: ${last.error})` : "";
  return `The app did not answer HTTP on port ${port} within ${limit} s${cause}`;
}

/** Puts the candidate's last output lines into the log, to show why it failed. */
async function logContainerOutput(ctx: AttemptContext): Promise<void> {
  const lines = await ctx.docker
    .logsTail(ctx.names.candidate, outputTailLines)
    .catch(() => []);
  if (lines.length === 0) {
    ctx.log(`${ctx.names.candidate} wrote no output`);
    return;
  }
  ctx.log(`Last ${lines.length} lines of output from ${ctx.names.candidate}:`);
  for (const line of lines) ctx.log(line);
}

/**
 * Removes the candidate and the image of this attempt, then writes the last
 * line: the abort notice or the failure reason.
 */
async function endAttempt(
  ctx: AttemptContext,
  error: unknown,
): Promise<{ outcome: "failed" | "aborted"; reason: string }> {
  const { docker, names, job } = ctx;
  // TODO(disk): a classic build that fails or is aborted leaves the steps it
  // finished as untagged cache images; they carry no labels of ours, and
  // other builds may share them, so they are left to `docker image prune`.
  const removed: string[] = [];
  try {
    if (await docker.remove(names.candidate))
      removed.push(`container ${names.candidate}`);
    if (await docker.removeImage(job.imageTag)) removed.push(`image ${job.imageTag}`);
  } catch (cleanupError) {
    ctx.logger.error("Cleaning up the attempt failed", { error: cleanupError });
    ctx.log(`Cleaning up failed: ${errorMessage(cleanupError)}`, "stderr");
  }

  if (ctx.signal.aborted) {
    const what =
      removed.length > 0 ? removed.join(" and ") : "nothing (none was made yet)";
    const reason = `Deployment aborted; removed ${what}`;
    ctx.logger.info(reason);
    ctx.log(reason);
    return { outcome: "aborted", reason };
  }

  const reason =
    error instanceof DeployFailure
      ? error.message
      : `Deployment failed: ${errorMessage(error)}`;
  if (!(error instanceof DeployFailure)) ctx.logger.error("Deployment failed", { error });
  else ctx.logger.info("Deployment failed", { reason });
  ctx.log(reason, "stderr");
  return { outcome: "failed", reason };
}

/** Milliseconds as seconds for people: 30000 → "30", 1500 → "1.5". */
function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
