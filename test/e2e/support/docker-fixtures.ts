/**
 * Docker fixtures for end-to-end tests: a base image with Node in it (the
 * test host reaches no container registry), and cleanup of everything the
 * tests' services left behind.
 */
import Docker from "dockerode";
import { ensureHostNodeImage } from "../../../scripts/host-node-image.js";
import { createDockerClient } from "../../../runner/docker.js";

/** `FROM aeroplane-test/node:local` gives a Dockerfile `node` and nothing else. */
export const baseImage = "aeroplane-test/node:local";

const docker = new Docker();

/**
 * Makes sure `aeroplane-test/node:local` exists: the host's own node binary
 * and the libraries `ldd` lists, at their host paths, FROM scratch. The build
 * recipe is the one `npm start` uses for the example app; this only adds the
 * test name to that image, so both stay one image.
 */
export async function ensureBaseImage(): Promise<string> {
  const present = await docker
    .getImage(baseImage)
    .inspect()
    .then(() => true)
    .catch(() => false);
  if (present) return baseImage;

  const built = await ensureHostNodeImage(docker);
  const [repo, tag] = baseImage.split(":");
  await docker.getImage(built).tag({ repo, tag });
  return baseImage;
}

/** Removes every container and image labelled with one of `serviceIds`. */
export async function removeServices(serviceIds: string[]): Promise<void> {
  const client = createDockerClient();
  for (const serviceId of serviceIds) {
    const labels = { "aeroplane.service-id": serviceId };
    for (const container of await client.listContainers(labels)) {
      await client.remove(container.id);
    }
    for (const image of await client.listImages(labels)) {
      await docker
        .getImage(image.id)
        .remove({ force: true })
        .catch(() => undefined);
    }
  }
}
