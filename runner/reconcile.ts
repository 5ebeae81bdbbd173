/**
 * Reconciling what Docker holds with what the runner and the control plane
 * believe, from the labels on every container and image the runner makes.
 *
 * Only what carries this runner's mark is touched: one Docker engine may
 * serve several runners (or a runner and its tests), and another runner's
 * live attempt looks exactly like a leftover.
 *
 * - At startup the process holds no job, so every candidate container of
 *   ours is left over from a runner that died mid-deployment, and a parked
 *   `-previous` container means a swap was cut short (see swap.ts).
 * - `hello` lists the deployments Docker holds anything of; `welcome` names
 *   those that never went live and hold no lease. Their containers and
 *   images go, except a `-stable` container that serves.
 */
import { createHash } from "node:crypto";
import { labelKeys, type ContainerSummary, type DockerClient } from "./docker.js";
import { createLogger, errorMessage } from "./logger.js";
import { withServiceLock } from "./service-lock.js";
import { containerNames, repairInterruptedSwap } from "./swap.js";

const log = createLogger("runner:reconcile");

/** The most deployment ids a `hello` may list (the protocol's cap). */
export const maxInventory = 10_000;

/**
 * The mark this runner puts on what it creates: a fingerprint of its token,
 * the one identity it has before it connects (the runner id comes later).
 * One-way, so a label never reveals the token.
 */
export function runnerMarkOf(token: string): string {
  return createHash("sha256")
    .update(`aeroplane-runner:${token}`)
    .digest("hex")
    .slice(0, 16);
}

const ours = (mark: string) => ({
  [labelKeys.managed]: "true",
  [labelKeys.runner]: mark,
});

/**
 * Cleans up after a runner process that ended mid-work, before any job
 * starts: removes candidate containers, repairs interrupted swaps, and
 * makes sure live containers restart with the host.
 */
export async function reconcileAtStartup(
  docker: DockerClient,
  mark: string,
): Promise<void> {
  const containers = await docker.listContainers(ours(mark));
  const services = new Set<string>();

  for (const container of containers) {
    const serviceId = container.labels[labelKeys.serviceId];
    if (serviceId) services.add(serviceId);
    if (container.labels[labelKeys.role] !== "candidate") continue;
    await docker.remove(container.id);
    log.info("Removed a candidate container left by an earlier run", {
      name: container.names[0],
      deployment: container.labels[labelKeys.deploymentId],
    });
  }

  for (const serviceId of services) {
    const stable = await repairInterruptedSwap(docker, serviceId, log);
    // A swap cut short between start and check left it without a restart
    // policy; it serves, so it must survive a reboot like any live one.
    if (stable?.running && stable.restartPolicy !== "unless-stopped") {
      await docker.keepRunning(stable.id);
    }
  }
}

/** Every deployment id on a container or image of ours, at most `maxInventory`. */
export async function listInventory(
  docker: DockerClient,
  mark: string,
): Promise<string[]> {
  const [containers, images] = await Promise.all([
    docker.listContainers(ours(mark)),
    docker.listImages(ours(mark)),
  ]);
  const ids = new Set<string>();
  for (const item of [...containers, ...images]) {
    const id = item.labels[labelKeys.deploymentId];
    if (id) ids.add(id);
  }
  if (ids.size > maxInventory) {
    log.warn(`Docker holds ${ids.size} deployments; reporting the first ${maxInventory}`);
  }
  return [...ids].slice(0, maxInventory);
}

/** What the agent still works on: its deployments and the images they use. */
export interface HeldWork {
  deploymentIds: Set<string>;
  imageTags: Set<string>;
}

/**
 * Removes the containers and images of deployments that never went live.
 * Skips a deployment a job of this runner holds, a `-stable` container that
 * runs, and an image any container uses. Never rejects; logs each removal.
 */
export async function removeOrphans(
  docker: DockerClient,
  mark: string,
  deploymentIds: string[],
  held: () => HeldWork,
): Promise<void> {
  for (const deploymentId of deploymentIds) {
    try {
      await removeOrphan(docker, mark, deploymentId, held);
    } catch (error) {
      log.warn("Could not remove an orphaned deployment", {
        deployment: deploymentId,
        error: errorMessage(error),
      });
    }
  }
}

async function removeOrphan(
  docker: DockerClient,
  mark: string,
  deploymentId: string,
  held: () => HeldWork,
): Promise<void> {
  const labels = { ...ours(mark), [labelKeys.deploymentId]: deploymentId };
  const containers = await docker.listContainers(labels);
  const images = await docker.listImages(labels);
  const serviceId =
    [...containers, ...images].map((item) => item.labels[labelKeys.serviceId])[0] ?? "";

  await withServiceLock(serviceId, async () => {
    // Checked under the lock: a job may have started since the welcome.
    if (held().deploymentIds.has(deploymentId)) return;

    for (const container of containers) {
      if (isServing(container)) {
        log.warn("Kept the live container of a deployment that never went live", {
          name: container.names[0],
          deployment: deploymentId,
        });
        continue;
      }
      await docker.remove(container.id);
      log.info("Removed an orphaned container", {
        name: container.names[0],
        deployment: deploymentId,
      });
    }

    const inUse = new Set((await docker.listContainers({})).map((c) => c.imageId));
    const heldTags = held().imageTags;
    for (const image of images) {
      if (inUse.has(image.id) || image.tags.some((tag) => heldTags.has(tag))) continue;
      for (const tag of image.tags.length > 0 ? image.tags : [image.id]) {
        await docker.removeImage(tag);
        log.info("Removed an orphaned image", { image: tag, deployment: deploymentId });
      }
    }
  });
}

/** A running `-stable` container: removing it would take a service down. */
function isServing(container: ContainerSummary): boolean {
  const serviceId = container.labels[labelKeys.serviceId] ?? "";
  const { stable } = containerNames(serviceId, "");
  return container.state === "running" && container.names.includes(stable);
}
