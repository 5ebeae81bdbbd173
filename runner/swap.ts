/**
 * Swapping a health-checked image in as the service's live container.
 *
 * Docker cannot add a port binding to an existing container, and only one
 * container can hold the host port, so the swap is: stop the current stable
 * container and park it as `-previous`, start a new `-stable` that publishes
 * the port, check it, then either remove the parked one or put it back. Every
 * path out of here leaves exactly one `-stable` container when there was one
 * before — an abort in the middle rolls back rather than stopping halfway.
 */
import type { Job } from "../schema/protocol.js";
import type { Clock } from "./clock.js";
import { aeroplaneLabels, type DockerClient, type OutputStream } from "./docker.js";
import { probeHttp, waitUntilHealthy, type WaitResult } from "./health.js";
import { errorMessage, type Logger } from "./logger.js";

/**
 * How long the replaced app gets to exit after SIGTERM. The host port is
 * down meanwhile, and an app running as PID 1 without a SIGTERM handler
 * (plain `node server.js`) always waits the whole time, so this is shorter
 * than Docker's 10 s default.
 */
const stopTimeoutSeconds = 5;

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

/**
 * Replaces the service's stable container with one running `job.imageTag`.
 * Throws (a DeployFailure, or the abort reason) after rolling back.
 */
export async function swapIn(ctx: AttemptContext): Promise<void> {
  const { job, docker, names } = ctx;
  const current = await findCurrentStable(ctx);
  // How far the swap got, which is what a rollback has to undo.
  let progress: SwapProgress = current ? "live" : "none";

  try {
    if (current) {
      const deployment = current.deploymentId ?? "unknown";
      ctx.log(`Stopping ${names.stable} (deployment ${deployment})`);
      await docker.stop(names.stable, stopTimeoutSeconds);
      await docker.rename(names.stable, names.previous);
      progress = "parked";
    }

    ctx.log(`Starting ${names.stable} on port ${job.hostPort}`);
    await docker
      .createAndStart({
        name: names.stable,
        image: job.imageTag,
        env: job.env,
        labels: aeroplaneLabels(job.serviceId, job.deploymentId, "stable"),
        publish: { hostPort: job.hostPort, containerPort: job.internalPort },
        keepRunning: true,
      })
      .catch((error: unknown) => {
        throw new DeployFailure(
          `Could not start ${names.stable}: ${errorMessage(error)}`,
        );
      });

    const check = await answersOnHostPort(ctx, ctx.signal);
    if (check.outcome !== "healthy") {
      const detail =
        check.outcome === "exited"
          ? "it exited"
          : `no healthy answer from 127.0.0.1:${job.hostPort}${job.healthCheckPath}`;
      throw new DeployFailure(
        `${names.stable} failed its check after the swap: ${detail}`,
      );
    }
    // The last moment an abort can still undo the swap.
    ctx.signal.throwIfAborted();
  } catch (error) {
    await rollBack(ctx, progress);
    throw error;
  }

  ctx.log(`Swapped in ${names.stable} (${job.imageTag}) on port ${job.hostPort}`);
  if (current) await removeReplaced(ctx, current.image);
}

/**
 * none: there was no live container; live: it still has the stable name
 * (perhaps stopped); parked: it waits as `-previous`.
 */
type SwapProgress = "none" | "live" | "parked";

interface CurrentStable {
  image: string;
  deploymentId: string | null;
}

/** The live container, repairing what an interrupted earlier swap left. */
async function findCurrentStable(ctx: AttemptContext): Promise<CurrentStable | null> {
  const { docker, names } = ctx;
  let stable = await docker.inspect(names.stable);
  const parked = await docker.inspect(names.previous);

  if (parked && stable) {
    // A swap finished but died before removing what it replaced.
    ctx.logger.warn("Removing a leftover previous container", { name: names.previous });
    await docker.remove(names.previous);
  } else if (parked) {
    // A swap died between parking the live container and replacing it:
    // the parked one is still the service's last good version.
    ctx.logger.warn("Restoring a parked previous container", { name: names.previous });
    await docker.rename(names.previous, names.stable);
    stable = parked;
  }
  if (!stable) return null;
  return {
    image: stable.image,
    deploymentId: stable.labels["aeroplane.deployment-id"] ?? null,
  };
}

/** Waits until the stable container answers through its published port. */
function answersOnHostPort(
  ctx: AttemptContext,
  signal: AbortSignal,
): Promise<WaitResult> {
  const { job, docker, names } = ctx;
  return waitUntilHealthy({
    probe: (timeoutMs) =>
      probeHttp("127.0.0.1", job.hostPort, job.healthCheckPath, timeoutMs, signal),
    isAlive: async () => (await docker.inspect(names.stable))?.running ?? false,
    timeoutMs: job.healthCheckTimeoutMs,
    intervalMs: 250,
    clock: ctx.clock,
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
    const check = await answersOnHostPort(ctx, new AbortController().signal);
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

/**
 * Removes the replaced container and its image. The swap has already
 * succeeded, so a failure here is logged, not raised: it costs disk space,
 * and the next swap removes a leftover `-previous` anyway.
 */
async function removeReplaced(ctx: AttemptContext, image: string): Promise<void> {
  const { docker, names, job } = ctx;
  try {
    await docker.remove(names.previous);
    // Another container may still use the image; then Docker refuses.
    if (image !== job.imageTag) await docker.removeImage(image);
  } catch (error) {
    ctx.logger.warn("Could not remove what the swap replaced", { image, error });
  }
}
