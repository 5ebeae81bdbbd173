/**
 * The second phase of a swap: what happens once the control plane has
 * answered a deployment's `running` result.
 *
 * - Recorded live: the replaced container, parked as `-previous`, goes.
 * - Refused (the deployment was aborted, or its lease lapsed, while the
 *   swap finished): the swap is undone. The parked container becomes
 *   `-stable` again; failing that, the replaced deployment's image (kept
 *   by image retention) is started in its place; failing that too, the
 *   refused container is removed so nothing runs that the control plane
 *   does not know of. Its image goes as well: it never went live.
 *
 * The runner's own log says what was done; the deployment's log is closed
 * by then (its result is final).
 */
import type { Job } from "../schema/protocol.js";
import { systemClock, type Clock } from "./clock.js";
import { aeroplaneLabels, labelKeys, type DockerClient } from "./docker.js";
import { createLogger, errorMessage, type Logger } from "./logger.js";
import { withServiceLock } from "./service-lock.js";
import { containerNames, waitUntilServing, type ReplacedDeployment } from "./swap.js";

const log = createLogger("runner:settle");

export interface SettleOptions {
  docker: DockerClient;
  /** The job whose swap finished. */
  job: Job;
  /** What the swap replaced, as `runDeployment` reported it. */
  replaced: ReplacedDeployment | null;
  /** This runner's mark, for a container recreated from an image. */
  runnerMark?: string;
  clock?: Clock;
}

/**
 * Finishes (`accepted`) or undoes a swap. Never rejects: a failure is
 * logged, and the next swap or runner start repairs what is left.
 */
export async function settleSwap(
  options: SettleOptions,
  accepted: boolean,
): Promise<void> {
  const { job } = options;
  const logger = log.with({ deployment: job.deploymentId });
  try {
    await withServiceLock(job.serviceId, () =>
      accepted ? confirm(options, logger) : undo(options, logger),
    );
  } catch (error) {
    logger.error(accepted ? "Finishing the swap failed" : "Undoing the swap failed", {
      error,
    });
  }
}

/** Whether the service's stable container still runs this job's deployment. */
async function stillLive(docker: DockerClient, job: Job): Promise<boolean> {
  const { stable } = containerNames(job.serviceId, job.deploymentId);
  const state = await docker.inspect(stable);
  return state?.labels[labelKeys.deploymentId] === job.deploymentId;
}

async function confirm({ docker, job }: SettleOptions, logger: Logger): Promise<void> {
  // A later swap already dealt with whatever was parked.
  if (!(await stillLive(docker, job))) return;
  const { previous } = containerNames(job.serviceId, job.deploymentId);
  const parked = await docker.inspect(previous);
  if (!parked) return;
  await docker.remove(previous);
  logger.info("Removed the replaced container: the deployment is recorded live", {
    name: previous,
    replaced: parked.labels[labelKeys.deploymentId],
  });
}

async function undo(options: SettleOptions, logger: Logger): Promise<void> {
  const { docker, job } = options;
  if (await stillLive(docker, job)) {
    const restored = await restorePrevious(options, logger);
    if (restored) {
      const check = await waitUntilServing(
        docker,
        job,
        options.clock ?? systemClock,
        new AbortController().signal,
      );
      if (check.outcome === "healthy")
        logger.info("The restored deployment serves again");
      else
        logger.error("The restored deployment does not answer", { port: job.hostPort });
    }
  } else {
    logger.warn("The refused deployment no longer serves; nothing to roll back");
  }

  // The refused deployment never went live, so its image is an orphan —
  // unless it is a redeploy's borrowed image, which belongs to another one.
  const image = await docker.inspectImage(job.imageTag);
  if (image?.labels[labelKeys.deploymentId] !== job.deploymentId) return;
  try {
    if (await docker.removeImage(job.imageTag)) {
      logger.info("Removed the image of the refused deployment", { image: job.imageTag });
    }
  } catch (error) {
    logger.warn("Could not remove the image of the refused deployment", {
      image: job.imageTag,
      error: errorMessage(error),
    });
  }
}

/**
 * Replaces the refused `-stable` with the deployment it replaced; returns
 * the deployment restored, or null when there was none to restore.
 */
async function restorePrevious(
  { docker, job, replaced, runnerMark }: SettleOptions,
  logger: Logger,
): Promise<string | null> {
  const names = containerNames(job.serviceId, job.deploymentId);
  const parked = await docker.inspect(names.previous);
  await docker.remove(names.stable);

  if (parked) {
    const restored = parked.labels[labelKeys.deploymentId] ?? "unknown";
    await docker.rename(names.previous, names.stable);
    await docker.start(names.stable);
    logger.warn(
      "The control plane refused the live deployment; restored the previous one",
      {
        restored,
      },
    );
    return restored;
  }

  const image = replaced && (await docker.inspectImage(replaced.image));
  if (image) {
    // Its container is gone (removed by hand, or by a runner restart); the
    // job's settings are the best guess of how it ran.
    const restored =
      image.labels[labelKeys.deploymentId] ?? replaced.deploymentId ?? "unknown";
    await docker.createAndStart({
      name: names.stable,
      image: replaced.image,
      env: job.env,
      labels: aeroplaneLabels(job.serviceId, restored, "stable", { runner: runnerMark }),
      publish: { hostPort: job.hostPort, containerPort: job.internalPort },
    });
    await docker.keepRunning(names.stable);
    logger.warn(
      "The control plane refused the live deployment; restarted the previous one from its image",
      { restored, image: replaced.image },
    );
    return restored;
  }

  logger.warn(
    "The control plane refused the live deployment and none ran before it; removed its container",
    { name: names.stable },
  );
  return null;
}
