/**
 * Deployments as end-to-end tests see them: queued through the API, read
 * back with their logs, served on the service's host port, and what Docker
 * still holds of them.
 */
import Docker from "dockerode";
import type { Deployment, LogLine } from "../../../schema/api";
import type { TestSystem } from "./system";
import { sleep, waitFor } from "./wait";

export type { Deployment, LogLine };

const docker = new Docker();

/** The statuses a deployment ends in (running ends it until it is superseded). */
export const TERMINAL = new Set(["running", "failed", "aborted", "superseded"]);

/** Queues a deployment of `serviceId` and returns it as the POST answered. */
export async function queueDeployment(
  system: TestSystem,
  serviceId: string,
): Promise<Deployment> {
  const body = await system.ok(
    "POST",
    `/api/services/${serviceId}/deployments`,
    undefined,
    201,
  );
  return body.deployment;
}

/** Queues a deployment of `serviceId` and returns its id. */
export async function deploy(system: TestSystem, serviceId: string): Promise<string> {
  return (await queueDeployment(system, serviceId)).id;
}

export async function deployment(
  system: TestSystem,
  deploymentId: string,
): Promise<Deployment> {
  return (await system.ok("GET", `/api/deployments/${deploymentId}`)).deployment;
}

/** Every deployment of a service, newest first. */
export async function serviceDeployments(
  system: TestSystem,
  serviceId: string,
): Promise<Deployment[]> {
  return (await system.ok("GET", `/api/services/${serviceId}/deployments?limit=200`))
    .deployments;
}

export async function logLines(
  system: TestSystem,
  deploymentId: string,
): Promise<LogLine[]> {
  return (await system.ok("GET", `/api/deployments/${deploymentId}/logs`)).logs;
}

/** The text of each line of the deployment's log. */
export async function logLineTexts(
  system: TestSystem,
  deploymentId: string,
): Promise<string[]> {
  return (await logLines(system, deploymentId)).map((l) => l.line);
}

/** Waits until the deployment's log has a line matching `pattern`. */
export async function waitForLine(
  system: TestSystem,
  deploymentId: string,
  pattern: RegExp,
  timeoutMs = 60_000,
): Promise<LogLine> {
  return waitFor(
    `a line matching ${pattern} in the log of ${deploymentId}`,
    async () => (await logLines(system, deploymentId)).find((l) => pattern.test(l.line)),
    timeoutMs,
    150,
  );
}

/** The body the service at `hostPort` answers with, or null when it does not. */
export async function answer(hostPort: number): Promise<string | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${hostPort}/`, {
      signal: AbortSignal.timeout(2_000),
    });
    return await res.text();
  } catch {
    return null;
  }
}

/** Every container (running or not) labelled with the service id. */
export async function serviceContainers(serviceId: string) {
  return docker.listContainers({
    all: true,
    filters: { label: [`aeroplane.service-id=${serviceId}`] },
  });
}

/** Containers (by name) and images (by tag or id) labelled with the deployment id. */
export async function dockerLeftovers(
  deploymentId: string,
): Promise<{ containers: string[]; images: string[] }> {
  const filters = { label: [`aeroplane.deployment-id=${deploymentId}`] };
  const containers = await docker.listContainers({ all: true, filters });
  const images = await docker.listImages({ filters });
  return {
    containers: containers.map((c) => c.Names[0]),
    images: images.map((i) => i.RepoTags?.[0] ?? i.Id),
  };
}

/** Waits until Docker holds nothing labelled with the deployment id. */
export async function waitForNoLeftovers(deploymentId: string, timeoutMs = 20_000) {
  let last = await dockerLeftovers(deploymentId);
  const deadline = Date.now() + timeoutMs;
  while (last.containers.length + last.images.length > 0 && Date.now() < deadline) {
    await sleep(250);
    last = await dockerLeftovers(deploymentId);
  }
  return last;
}
