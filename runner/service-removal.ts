/**
 * Removing everything of a deleted service from this runner's Docker: its
 * live and parked containers, candidates, and the images of its
 * deployments.
 *
 * Containers are found by label (this runner's, when it has a mark: another
 * runner on the same engine answers for its own) and by the service's two
 * fixed names, which a container may hold without labels (one made by hand,
 * or by an older runner). Images are found by the service's label alone.
 */
import { labelKeys, type DockerClient } from "./docker.js";
import { createLogger, errorMessage } from "./logger.js";
import { withServiceLock } from "./service-lock.js";
import { containerNames } from "./swap.js";

const log = createLogger("runner:service-removal");

/**
 * Stops and removes the service's containers, then its images, under the
 * service's lock; logs each removal and returns what went. Rejects, after
 * trying everything, when anything could not be removed: the caller must
 * not report the service gone.
 */
export function removeServiceResources(
  docker: DockerClient,
  serviceId: string,
  runnerMark: string | undefined,
): Promise<string[]> {
  return withServiceLock(serviceId, async () => {
    const logger = log.with({ service: serviceId });
    const removed: string[] = [];
    const failures: string[] = [];
    const attempt = async (what: string, action: () => Promise<boolean>) => {
      try {
        if (!(await action())) return;
        removed.push(what);
        logger.info(`Removed ${what} of the deleted service`);
      } catch (error) {
        failures.push(`${what}: ${errorMessage(error)}`);
      }
    };

    const labels: Record<string, string> = { [labelKeys.serviceId]: serviceId };
    if (runnerMark) labels[labelKeys.runner] = runnerMark;
    const containers = new Map<string, string>();
    for (const container of await docker.listContainers(labels)) {
      containers.set(container.id, container.names[0] ?? container.id);
    }
    const { stable, previous } = containerNames(serviceId, "");
    for (const name of [stable, previous]) {
      const state = await docker.inspect(name);
      if (state) containers.set(state.id, state.name);
    }
    for (const [id, name] of containers) {
      await attempt(`container ${name}`, () => docker.remove(id));
    }

    // After the containers: Docker refuses to remove an image one uses.
    const images = await docker.listImages({ [labelKeys.serviceId]: serviceId });
    for (const image of images) {
      // Removing an image's last tag removes the image.
      const tags = image.tags.filter((tag) => tag !== "<none>:<none>");
      for (const tag of tags.length > 0 ? tags : [image.id]) {
        await attempt(`image ${tag}`, () => docker.removeImage(tag));
      }
    }

    if (failures.length > 0) {
      throw new Error(`Could not remove ${failures.join("; ")}`);
    }
    return removed;
  });
}
