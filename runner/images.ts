/**
 * Keeping the runner's disk in check: old images of a service, and the
 * step images a failed or aborted build leaves behind.
 *
 * Both only remove what they can prove is theirs: images labelled with the
 * service, or step images whose parent chain and age tie them to one build.
 * An image a container uses is never removed (Docker refuses, and we check
 * first), so a running or parked container keeps its image.
 */
import { setTimeout as delay } from "node:timers/promises";
import type { StepImage } from "./build-progress.js";
import {
  DockerError,
  labelKeys,
  type DockerClient,
  type ImageDetails,
} from "./docker.js";
import { errorMessage, type Logger } from "./logger.js";
import { containerNames } from "./swap.js";

/** How many successful deployments of a service keep their images. */
export const keptImagesPerService = 5;

/**
 * Removes a service's images beyond the newest `keep`. The image of the
 * live `-stable` container always counts among the kept, however old (a
 * redeploy brings an old one back). Returns the tags removed.
 *
 * TODO(retention): "newest" is when an image was built, not when it last
 * went live: Docker keeps no such time, so an old image redeployed and then
 * replaced ranks by its build again. Ranking by deployment needs either the
 * control plane's history in the job or a label Docker cannot add later.
 */
export async function keepRecentImages(
  docker: DockerClient,
  serviceId: string,
  logger: Logger,
  keep = keptImagesPerService,
): Promise<string[]> {
  const listed = await docker.listImages({ [labelKeys.serviceId]: serviceId });
  if (listed.length <= keep) return [];

  const inUse = new Set((await docker.listContainers({})).map((c) => c.imageId));
  const stable = await docker.inspect(containerNames(serviceId, "").stable);
  const images = (await Promise.all(listed.map((image) => docker.inspectImage(image.id))))
    .filter((image): image is ImageDetails => image !== null)
    .sort((a, b) => b.createdAt - a.createdAt);
  const ordered = [
    ...images.filter((image) => image.id === stable?.imageId),
    ...images.filter((image) => image.id !== stable?.imageId),
  ];

  const removed: string[] = [];
  for (const image of ordered.slice(keep)) {
    const deployment = image.labels[labelKeys.deploymentId];
    if (inUse.has(image.id)) {
      logger.debug("Keeping an old image a container uses", {
        image: image.id,
        deployment,
      });
      continue;
    }
    // Removing its last tag deletes the image, and the build's step images
    // under it that nothing else needs.
    for (const tag of image.tags.length > 0 ? image.tags : [image.id]) {
      try {
        if (await docker.removeImage(tag)) removed.push(tag);
        logger.info("Removed an old image of the service", { image: tag, deployment });
      } catch (error) {
        logger.warn("Could not remove an old image", {
          image: tag,
          deployment,
          error: errorMessage(error),
        });
      }
    }
  }
  return removed;
}

/** Docker may still be removing the aborted step's container; wait this long. */
const leftoverRetryMs = 3_000;

/**
 * Removes the step images a build made before it failed or was aborted:
 * the untagged layers Docker keeps as cache, which no label marks. A step
 * image goes only if it is untagged, was created after `startedAt`, and its
 * parent is the image the step before it reported — the chain Docker itself
 * built — so a step's output that imitates the builder cannot name an image
 * of anyone else. Images another build has since built on, or whose
 * container still runs, are refused by Docker and stay. Returns how many
 * were removed.
 */
export async function removeBuildLeftovers(
  docker: DockerClient,
  steps: StepImage[],
  startedAt: number,
  logger: Logger,
): Promise<number> {
  const giveUpAt = Date.now() + leftoverRetryMs;
  let removed = 0;
  // Newest first: Docker deletes only images that no other image builds on.
  for (let i = steps.length - 1; i > 0; i--) {
    if (!steps[i].created) continue;
    const image = await docker.inspectImage(steps[i].id);
    const parent = `sha256:${steps[i - 1].id}`;
    const provenChain =
      image !== null &&
      image.id.startsWith(`sha256:${steps[i].id}`) &&
      image.tags.length === 0 &&
      // Whole seconds of slack: the daemon and the runner share a clock,
      // but Docker may round.
      image.createdAt >= startedAt - 1_000 &&
      image.parentId?.startsWith(parent) === true;
    if (!provenChain) continue;

    for (;;) {
      try {
        await docker.removeImage(image.id, { prune: false });
        removed += 1;
        break;
      } catch (error) {
        // A container of the cut-off step may still be going away; an image
        // another build has since built on will not, so it is not waited for.
        const busy =
          error instanceof DockerError &&
          error.status === 409 &&
          /being used by/.test(error.message);
        if (!busy || Date.now() >= giveUpAt) {
          logger.debug("Kept a build step image", {
            image: image.id,
            error: errorMessage(error),
          });
          break;
        }
        await delay(200);
      }
    }
  }
  if (removed > 0)
    logger.info("Removed the step images of the unfinished build", { removed });
  return removed;
}
