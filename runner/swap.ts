/**
 * Swapping a health-checked image in as the service's live container.
 *
 * Docker cannot add a port binding to an existing container, and only one
 * container can hold the host port, so the swap is: stop the current stable
 * container and park it as `-previous`, start a new `-stable` that publishes
 * the port, check it, then either keep the parked one or put it back. Every
 * path out of here leaves exactly one `-stable` container when there was one
 * before — an abort in the middle rolls back rather than stopping halfway.
 *
 * The parked container outlives a successful swap: only once the control
 * plane has recorded the deployment live (see settle.ts) is it removed, so a
 * deployment aborted while its swap finished can still be undone exactly.
 */
import type { Job } from "../schema/protocol.js";
import type { Clock } from "./clock.js";
import {
  aeroplaneLabels,
  labelKeys,
  type ContainerState,
  type DockerClient,
  type OutputStream,
} from "./docker.js";
import { probeHttp, waitUntilHealthy, type WaitResult } from "./health.js";
import { errorMessage, type Logger } from "./logger.js";
import { withServiceLock } from "./service-lock.js";

/**
 * How long the replaced app gets to exit after SIGTERM. The host port is
 * down meanwhile, and an app running as PID 1 without a SIGTERM handler
 * (plain `node server.js`) always waits the whole time, so this is shorter
 * than Docker's 10 s default.
 */
const stopTimeoutSeconds = 5;

/** How many of a failed container's last output lines go into the log. */
const outputTailLines = 20;

/** A failure whose message is meant for the user as the log's last line. */
export class DeployFailure extends Error {
  override name = "DeployFailure";
}

/** What one deployment attempt works with. */
export interface AttemptContext {
  job: Job;
  docker: DockerClient;
  clock: Clock;
  signal: AbortSignal;
  names: ContainerNames;
  /** This runner's mark, set as a label on what the attempt creates. */
  runnerMark?: string;
  /** Writes a line to the deployment's log (secrets already hidden). */
  log(line: string, stream?: OutputStream): void;
  /** The runner's own log, carrying the deployment id. */
  logger: Logger;
}

export interface ContainerNames {
  /** The attempt's unpublished container, checked before the swap. */
  candidate: string;
  /** The live container that publishes the service's host port. */
  stable: string;
  /** Where the live container waits while its replacement is checked. */
  previous: string;
}

/** The container names of a service and one of its deployments. */
export function containerNames(serviceId: string, deploymentId: string): ContainerNames {
  return {
    candidate: `aeroplane-${serviceId}-${deploymentId}`,
    stable: `aeroplane-${serviceId}-stable`,
    previous: `aeroplane-${serviceId}-previous`,
  };
}

/** The live deployment a swap replaced; it waits, stopped, as `-previous`. */
export interface ReplacedDeployment {
  deploymentId: string | null;
  /** The image it ran, by the reference it was created from. */
  image: string;
}

/**
 * Replaces the service's stable container with one running `job.imageTag`;
 * returns what it replaced (parked as `-previous`), or null if nothing ran.
 * Throws (a DeployFailure, or the abort reason) after rolling back.
 */
export function swapIn(ctx: AttemptContext): Promise<ReplacedDeployment | null> {
  return withServiceLock(ctx.job.serviceId, () => swapLocked(ctx));
}

async function swapLocked(ctx: AttemptContext): Promise<ReplacedDeployment | null> {
  const { job, docker, names } = ctx;
  const current = await repairInterruptedSwap(docker, job.serviceId, ctx.logger);
  const replaced = current && {
    deploymentId: current.labels[labelKeys.deploymentId] ?? null,
    image: current.image,
  };
  // How far the swap got, which is what a rollback has to undo.
  let progress: SwapProgress = current ? "live" : "none";

  try {
    ctx.signal.throwIfAborted();
    if (replaced) {
      ctx.log(
        `Stopping ${names.stable} (deployment ${replaced.deploymentId ?? "unknown"})`,
      );
      await docker.stop(names.stable, stopTimeoutSeconds);
      await docker.rename(names.stable, names.previous);
      progress = "parked";
    }
    // An abort that came while the old container stopped must bring it
    // back, not start the aborted deployment in its place.
    ctx.signal.throwIfAborted();

    ctx.log(`Starting ${names.stable} on port ${job.hostPort}`);
    // No restart policy yet: an app that crashes during the check must show
    // up as exited, with its exit code, not hide in a restart loop.
    await docker
      .createAndStart({
        name: names.stable,
        image: job.imageTag,
        env: job.env,
        labels: aeroplaneLabels(job.serviceId, job.deploymentId, "stable", {
          runner: ctx.runnerMark,
        }),
        publish: { hostPort: job.hostPort, containerPort: job.internalPort },
      })
      .catch((error: unknown) => {
        throw new DeployFailure(
          `Could not start ${names.stable}: ${errorMessage(error)}`,
        );
      });

    const check = await waitUntilServing(docker, job, ctx.clock, ctx.signal);
    if (check.outcome === "exited") {
      await logContainerOutput(ctx, names.stable);
      const code = (await docker.inspect(names.stable))?.exitCode ?? "unknown";
      throw new DeployFailure(`${names.stable} exited with code ${code} after the swap`);
    }
    if (check.outcome === "timeout") {
      throw new DeployFailure(
        `${names.stable} failed its check after the swap: no healthy answer from ` +
          `127.0.0.1:${job.hostPort}${job.healthCheckPath}`,
      );
    }
    // From here on it must outlive the runner and survive reboots.
    await docker.keepRunning(names.stable);
    // The last moment an abort can still undo the swap.
    ctx.signal.throwIfAborted();
  } catch (error) {
    await rollBack(ctx, progress);
    throw error;
  }

  ctx.log(`Swapped in ${names.stable} (${job.imageTag}) on port ${job.hostPort}`);
  return replaced;
}

/**
 * none: there was no live container; live: it still has the stable name
 * (perhaps stopped); parked: it waits as `-previous`.
 */
type SwapProgress = "none" | "live" | "parked";

/**
 * Puts a service whose swap was interrupted (a runner killed mid-swap, or
 * a swap not yet settled) back to one `-stable` container, and returns it:
 *
 * - `-stable` runs: it is the live one; a parked `-previous` goes.
 * - `-stable` is missing, or exists but does not run (it was never checked):
 *   the parked container was the last good one; it becomes `-stable` again.
 */
export async function repairInterruptedSwap(
  docker: DockerClient,
  serviceId: string,
  logger: Logger,
): Promise<ContainerState | null> {
  const names = containerNames(serviceId, "");
  const stable = await docker.inspect(names.stable);
  const parked = await docker.inspect(names.previous);
  if (!parked) return stable;

  const deploymentOf = (state: ContainerState) => state.labels[labelKeys.deploymentId];
  if (stable?.running) {
    await docker.remove(names.previous);
    logger.info("Removed the previous container left by a finished swap", {
      name: names.previous,
      deployment: deploymentOf(parked),
    });
    return stable;
  }
  if (stable) {
    await docker.remove(names.stable);
    logger.warn("Removed a stable container that never passed its check", {
      name: names.stable,
      deployment: deploymentOf(stable),
    });
  }
  await docker.rename(names.previous, names.stable);
  await docker.start(names.stable);
  logger.warn("Restored the previous container as the stable one", {
    name: names.stable,
    deployment: deploymentOf(parked),
  });
  return docker.inspect(names.stable);
}

/** Waits until the service's stable container answers through its published port. */
export function waitUntilServing(
  docker: DockerClient,
  job: Job,
  clock: Clock,
  signal: AbortSignal,
): Promise<WaitResult> {
  const { stable } = containerNames(job.serviceId, job.deploymentId);
  return waitUntilHealthy({
    probe: (timeoutMs) =>
      probeHttp("127.0.0.1", job.hostPort, job.healthCheckPath, timeoutMs, signal),
    isAlive: async () => (await docker.inspect(stable))?.running ?? false,
    timeoutMs: job.healthCheckTimeoutMs,
    intervalMs: 250,
    clock,
    signal,
  });
}

/** Undoes a swap: removes the new container and brings the old one back. */
async function rollBack(ctx: AttemptContext, progress: SwapProgress): Promise<void> {
  const { docker, names, job } = ctx;
  ctx.logger.warn("Rolling back the swap", { name: names.stable, progress });
  try {
    // Until the old container is parked, the stable name is still its own.
    if (progress !== "live") await docker.remove(names.stable);
    if (progress === "none") return;
    if (progress === "parked") await docker.rename(names.previous, names.stable);
    await docker.start(names.stable);

    // Wait until it serves again, even after an abort: that is the promise
    // an abort during the swap makes.
    const check = await waitUntilServing(
      docker,
      job,
      ctx.clock,
      new AbortController().signal,
    );
    if (check.outcome === "healthy") {
      ctx.log(`Rolled back: the previous ${names.stable} serves again`);
    } else {
      ctx.log(
        `Rolled back to the previous ${names.stable}, but it does not answer on port ` +
          `${job.hostPort}`,
        "stderr",
      );
    }
  } catch (error) {
    // Nothing more can be done here; say so where the operator will look.
    ctx.log(`Rolling back the swap failed: ${errorMessage(error)}`, "stderr");
    ctx.logger.error("Rolling back the swap failed", { error });
  }
}

/** Puts a failed container's last output lines into the log, to show why. */
export async function logContainerOutput(
  ctx: AttemptContext,
  name: string,
): Promise<void> {
  const lines = await ctx.docker.logsTail(name, outputTailLines).catch(() => []);
  if (lines.length === 0) {
    ctx.log(`${name} wrote no output`);
    return;
  }
  ctx.log(`Last ${lines.length} lines of output from ${name}:`);
  for (const line of lines) ctx.log(line);
}
