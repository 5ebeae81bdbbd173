/**
 * Fixtures for the runner's end-to-end tests: a service of its own (git
 * repository, ids, host port) and a deployment run that records its log.
 * Each test file calls `useRunnerFixtures()` once for setup and cleanup.
 */
import { randomBytes } from "node:crypto";
import Docker from "dockerode";
import { afterAll, beforeAll } from "vitest";
import type { Job, JobPhase } from "../../../schema/protocol.js";
import { runDeployment, type DeploymentResult } from "../../../runner/deploy.js";
import { createDockerClient } from "../../../runner/docker.js";
import { freePort } from "../../../scripts/local-control-plane.js";
import { baseImage, ensureBaseImage, removeServices } from "./docker-fixtures.js";
import { servedRepository, type ServedRepository } from "./git-server.js";

export const docker = new Docker();
export const client = createDockerClient();
const serviceIds: string[] = [];
const repos: ServedRepository[] = [];

/** Builds the base image before, and removes every service's traces after, the file. */
export function useRunnerFixtures(): void {
  beforeAll(async () => {
    await ensureBaseImage();
  });
  afterAll(async () => {
    await Promise.all(repos.splice(0).map((repo) => repo.stop()));
    await removeServices(serviceIds.splice(0));
  });
}

/** An app that answers every request with `reply`; its build has a RUN step. */
export function app(reply: string, { run = "", cmd = "" } = {}): Record<string, string> {
  return {
    Dockerfile: [
      `FROM ${baseImage}`,
      "WORKDIR /app",
      "COPY server.js .",
      run || `RUN ["node", "-e", "console.log('build marker for ${reply}')"]`,
      cmd || 'CMD ["node", "server.js"]',
    ].join("\n"),
    // Exits on SIGTERM, so a swap need not wait out the stop timeout.
    "server.js": `require("http")
      .createServer((request, response) => response.end(${JSON.stringify(reply)}))
      .listen(3000, () => console.log("listening on 3000"));
      process.on("SIGTERM", () => process.exit(0));`,
  };
}

export const randomId = (prefix: string) => `${prefix}_${randomBytes(8).toString("hex")}`;

export type TestService = Awaited<ReturnType<typeof newService>>;

/** A service of its own: repository, id, host port, and a job factory. */
export async function newService() {
  const repo = await servedRepository();
  repos.push(repo);
  const serviceId = randomId("svc");
  serviceIds.push(serviceId);
  const hostPort = await freePort();

  const job = (overrides: Partial<Job> = {}): Job => {
    const deploymentId = randomId("dep");
    return {
      deploymentId,
      leaseId: randomId("lse"),
      serviceId,
      repoUrl: repo.url,
      branch: "main",
      commitSha: null,
      rootDir: ".",
      dockerfilePath: "Dockerfile",
      internalPort: 3000,
      hostPort,
      healthCheckPath: "/",
      env: {},
      imageTag: `aeroplane-${serviceId}-${deploymentId}`,
      containerName: `aeroplane-${serviceId}-stable`,
      buildTimeoutMs: 120_000,
      healthCheckTimeoutMs: 15_000,
      ...overrides,
    };
  };

  const answer = async () => {
    const response = await fetch(`http://127.0.0.1:${hostPort}/`);
    return response.text();
  };

  const containers = () =>
    docker.listContainers({
      all: true,
      filters: { label: [`aeroplane.service-id=${serviceId}`] },
    });

  return { repo, serviceId, hostPort, job, answer, containers };
}

export interface Run {
  result: DeploymentResult;
  lines: { line: string; stream: "stdout" | "stderr" }[];
  phases: { phase: JobPhase; commitSha?: string }[];
}

/** Runs one deployment, collecting its log and phases. */
export async function deploy(
  job: Job,
  options: { signal?: AbortSignal; onLine?: (line: string) => void } = {},
): Promise<Run> {
  const lines: Run["lines"] = [];
  const phases: Run["phases"] = [];
  const result = await runDeployment(job, {
    docker: client,
    signal: options.signal ?? new AbortController().signal,
    log: (line, stream) => {
      lines.push({ line, stream });
      options.onLine?.(line);
    },
    phase: (phase, commitSha) => phases.push({ phase, commitSha }),
  });
  return { result, lines, phases };
}

export const text = (run: Run) => run.lines.map((entry) => entry.line);

export async function imageExists(tag: string): Promise<boolean> {
  return docker
    .getImage(tag)
    .inspect()
    .then(() => true)
    .catch(() => false);
}

/** Containers and images labelled with the deployment id. */
export async function leftovers(deploymentId: string) {
  const filters = { label: [`aeroplane.deployment-id=${deploymentId}`] };
  const containers = await docker.listContainers({ all: true, filters });
  const images = await docker.listImages({ filters });
  return [...containers.map((c) => c.Names[0]), ...images.map((i) => i.Id)];
}
