/**
 * One deployment attempt: clone → build → candidate → health check → swap.
 *
 * First of all the service's host port must be free (or its own): anything
 * else holding it would only be found at the swap, after the whole build.
 *
 * When the job's image already exists (a redeploy names the image of a
 * deployment that went live), clone and build are skipped.
 *
 * Every step writes platform lines into the deployment's log, and every way
 * out cleans up after itself: a failure or an abort removes the candidate
 * container and the image this attempt built (never a reused one) and leaves
 * the live container untouched; on failure the reason is the log's last line.
 */
import { rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { Job, JobPhase } from "../schema/protocol.js";
import type { StepImage } from "./build-progress.js";
import { checkCandidate, seconds, startCandidate } from "./candidate.js";
import { makeCloneDir } from "./clone-dirs.js";
import { systemClock, type Clock } from "./clock.js";
import {
  aeroplaneLabels,
  BuildFailedError,
  labelKeys,
  type DockerClient,
  type OutputStream,
} from "./docker.js";
import { checkout, CommitNotFoundError, GitError } from "./git.js";
import { hostPortHolder } from "./host-port.js";
import { keepRecentImages, removeBuildLeftovers } from "./images.js";
import { createLogger, errorMessage, stderrSink } from "./logger.js";
import { createRedactor } from "./redact.js";
import { withServiceLock } from "./service-lock.js";
import {
  containerNames,
  DeployFailure,
  swapIn,
  type AttemptContext,
  type ReplacedDeployment,
} from "./swap.js";

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
  /** This runner's mark, labelled on everything the attempt creates. */
  runnerMark?: string;
}

export interface DeploymentResult {
  outcome: DeployOutcome;
  commitSha: string | null;
  /** Why it failed or was aborted; the same text as the last log line. */
  reason?: string;
  /**
   * When `running`: the deployment the swap replaced, parked as `-previous`
   * until `settleSwap` learns whether the control plane recorded this one.
   */
  replaced?: ReplacedDeployment | null;
}

/** What an attempt made so far, which is what its cleanup has to remove. */
interface Made {
  /** The job's image existed already; it is not this attempt's to remove. */
  reusedImage: boolean;
  /** When the build started, and the step images it reported. */
  buildStartedAt: number;
  steps: StepImage[];
  /**
   * The build finished: its step images sit under the tagged image, and
   * removing that tag removes them (Docker prunes untagged parents).
   */
  built: boolean;
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
    runnerMark: io.runnerMark,
    log: (line, stream = "stdout") => io.log(redact(line), stream),
    logger,
  };

  let commitSha: string | null = null;
  /** Enters `next`; `known` is the commit, once the clone has found it. */
  const phase = (next: JobPhase, known?: string) => {
    if (known) commitSha = known;
    logger.info(`Phase ${next}`, { commit: commitSha ?? undefined });
    io.phase(next, commitSha ?? undefined);
  };
  const made: Made = { reusedImage: false, buildStartedAt: 0, steps: [], built: false };

  try {
    await checkHostPort(ctx);
    const reusable = await reusableImage(ctx);
    if (reusable) {
      made.reusedImage = true;
      commitSha = reusable.commitSha ?? job.commitSha;
      ctx.log(`Image ${job.imageTag} exists; skipping the build`);
    } else {
      commitSha = await cloneAndBuild(ctx, io, made, phase);
    }
    phase("starting");
    await startCandidate(ctx);
    phase("health-check");
    await checkCandidate(ctx);
    // It proved the image works; it cannot serve (no port), so free it now.
    await ctx.docker.remove(ctx.names.candidate);
    phase("swapping");
    const replaced = await swapIn(ctx);
    logger.info("Deployment running", { commit: commitSha });
    await pruneOldImages(ctx);
    return { outcome: "running", commitSha, replaced };
  } catch (error) {
    const ending = await endAttempt(ctx, made, error);
    return { ...ending, commitSha, reason: redact(ending.reason) };
  }
}

/**
 * Fails at once when something other than the service's own container holds
 * its host port, rather than at the swap after a whole build. Under the
 * service's lock, so the probe never meets a swap or rollback binding it.
 */
async function checkHostPort(ctx: AttemptContext): Promise<void> {
  const { job, docker } = ctx;
  const holder = await withServiceLock(job.serviceId, () =>
    hostPortHolder(docker, job.serviceId, job.hostPort),
  );
  if (holder === null) return;
  throw new DeployFailure(
    `Host port ${job.hostPort} is already in use on this host by ${holder}; ` +
      `choose another hostPort (PATCH /api/services/${job.serviceId})`,
  );
}

/** The job's image when it exists already and is this service's; else null. */
async function reusableImage(
  ctx: AttemptContext,
): Promise<{ commitSha: string | null } | null> {
  const image = await ctx.docker.inspectImage(ctx.job.imageTag);
  if (!image || image.labels[labelKeys.serviceId] !== ctx.job.serviceId) return null;
  return { commitSha: image.labels[labelKeys.commitSha] ?? null };
}

/** Clones into a temporary directory and builds the image; returns the commit. */
async function cloneAndBuild(
  ctx: AttemptContext,
  io: DeploymentIO,
  made: Made,
  phase: (next: JobPhase, commitSha?: string) => void,
): Promise<string> {
  const workDir = await makeCloneDir(io.workDir ?? tmpdir(), io.runnerMark);
  try {
    phase("cloning");
    const repoDir = path.join(workDir, "repo");
    const commitSha = await clone(ctx, repoDir, io.allowFileRepos);
    phase("building", commitSha);
    await build(ctx, repoDir, commitSha, made);
    return commitSha;
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** Keeps the images of the service's last deployments; a failure only costs disk. */
async function pruneOldImages(ctx: AttemptContext): Promise<void> {
  const { job, docker, logger } = ctx;
  try {
    const removed = await withServiceLock(job.serviceId, () =>
      keepRecentImages(docker, job.serviceId, logger),
    );
    if (removed.length > 0) {
      ctx.log(
        `Removed ${removed.length} old image(s) of this service: ${removed.join(", ")}`,
      );
    }
  } catch (error) {
    logger.warn("Could not remove old images", { error: errorMessage(error) });
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
    // It names the commit, the repository and the branch: enough on its own.
    if (error instanceof CommitNotFoundError) throw new DeployFailure(error.message);
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

async function build(
  ctx: AttemptContext,
  repoDir: string,
  commitSha: string,
  made: Made,
): Promise<void> {
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
  made.buildStartedAt = Date.now();
  try {
    await ctx.docker.buildImage({
      contextDir,
      dockerfile: path.relative(contextDir, dockerfile).split(path.sep).join("/"),
      tag: job.imageTag,
      labels: aeroplaneLabels(job.serviceId, job.deploymentId, "candidate", {
        runner: ctx.runnerMark,
        commitSha,
      }),
      onLine: (line, stream) => ctx.log(line, stream),
      onStep: (step) => made.steps.push(step),
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
  made.built = true;
  ctx.log(`Built image ${job.imageTag}`);
}

/**
 * Removes the candidate, the image this attempt built and the step images
 * of a build it left unfinished, then writes the last line: the abort
 * notice or the failure reason.
 */
async function endAttempt(
  ctx: AttemptContext,
  made: Made,
  error: unknown,
): Promise<{ outcome: "failed" | "aborted"; reason: string }> {
  const { docker, names, job } = ctx;
  const removed: string[] = [];
  try {
    if (await docker.remove(names.candidate))
      removed.push(`container ${names.candidate}`);
    // A reused image belongs to the deployment that built it, which went live.
    if (!made.reusedImage && (await docker.removeImage(job.imageTag))) {
      removed.push(`image ${job.imageTag}`);
    }
    if (!made.built) {
      const steps = await removeBuildLeftovers(
        docker,
        made.steps,
        made.buildStartedAt,
        ctx.logger,
      );
      if (steps > 0) removed.push(`${steps} build step image(s)`);
    }
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
