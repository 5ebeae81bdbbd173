/**
 * The runner's deployment pipeline against the real Docker engine, cloning
 * real repositories over git://. Each test has its own repository, service id
 * and host port, so the tests run concurrently and files run in parallel.
 */
import { randomBytes } from "node:crypto";
import net from "node:net";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Job, JobPhase } from "../../schema/protocol.js";
import { runDeployment, type DeploymentResult } from "../../runner/deploy.js";
import { createDockerClient } from "../../runner/docker.js";
import { freePort } from "../../scripts/local-control-plane.js";
import { baseImage, ensureBaseImage, removeServices } from "./support/docker-fixtures.js";
import { servedRepository, type ServedRepository } from "./support/git-server.js";

const docker = new Docker();
const client = createDockerClient();
const serviceIds: string[] = [];
const repos: ServedRepository[] = [];

beforeAll(async () => {
  await ensureBaseImage();
});

afterAll(async () => {
  await Promise.all(repos.map((repo) => repo.stop()));
  await removeServices(serviceIds);
});

/** An app that answers every request with `reply`; its build has a RUN step. */
function app(reply: string, { run = "", cmd = "" } = {}): Record<string, string> {
  return {
    Dockerfile: [
      `FROM ${baseImage}`,
      "WORKDIR /app",
      "COPY server.js .",
      run || `RUN ["node", "-e", "console.log('build marker for ${reply}')"]`,
      cmd || 'CMD ["node", "server.js"]',
    ].join("\n"),
    "server.js": `require("http")
      .createServer((request, response) => response.end(${JSON.stringify(reply)}))
      .listen(3000, () => console.log("listening on 3000"));`,
  };
}

const randomId = (prefix: string) => `${prefix}_${randomBytes(8).toString("hex")}`;

/** A service of its own: repository, id, host port, and a job factory. */
async function newService() {
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

interface Run {
  result: DeploymentResult;
  lines: { line: string; stream: "stdout" | "stderr" }[];
  phases: { phase: JobPhase; commitSha?: string }[];
}

/** Runs one deployment, collecting its log and phases. */
async function deploy(
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

const text = (run: Run) => run.lines.map((entry) => entry.line);

async function imageExists(tag: string): Promise<boolean> {
  return docker
    .getImage(tag)
    .inspect()
    .then(() => true)
    .catch(() => false);
}

describe.concurrent("runDeployment", () => {
  it("deploys the branch head: the app answers on hostPort, one labelled container remains", async () => {
    const service = await newService();
    const sha = await service.repo.commit(app("v1"), "first version");
    const job = service.job();

    const run = await deploy(job);

    expect(run.result).toEqual({ outcome: "running", commitSha: sha });
    expect(await service.answer()).toBe("v1");
    expect(text(run)).toContain("build marker for v1");
    expect(text(run)[0]).toBe(`Cloning ${service.repo.url} at main`);
    expect(text(run)).toContain(`Checked out ${sha}`);
    expect(text(run)).toContain(
      `Starting candidate container aeroplane-${service.serviceId}-${job.deploymentId}`,
    );
    expect(text(run)).toContain("Health check passed: GET / answered HTTP 200");
    expect(run.phases).toEqual([
      { phase: "cloning", commitSha: undefined },
      { phase: "building", commitSha: sha },
      { phase: "starting", commitSha: sha },
      { phase: "health-check", commitSha: sha },
      { phase: "swapping", commitSha: sha },
    ]);

    const containers = await service.containers();
    expect(containers.map((container) => container.Names[0])).toEqual([
      `/aeroplane-${service.serviceId}-stable`,
    ]);
    expect(containers[0].Labels).toMatchObject({
      "aeroplane.managed": "true",
      "aeroplane.service-id": service.serviceId,
      "aeroplane.deployment-id": job.deploymentId,
      "aeroplane.role": "stable",
    });
    const inspected = await docker.getContainer(containers[0].Id).inspect();
    expect(inspected.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    const image = await docker.getImage(job.imageTag).inspect();
    expect(image.Config.Labels).toMatchObject({
      "aeroplane.managed": "true",
      "aeroplane.deployment-id": job.deploymentId,
    });
  });

  it("deploys an exact commit, then a newer one replaces it and its image", async () => {
    const service = await newService();
    const first = await service.repo.commit(app("v1"), "first version");
    await service.repo.commit(app("v2"), "second version");

    const pinned = service.job({ commitSha: first });
    const run = await deploy(pinned);
    expect(run.result).toEqual({ outcome: "running", commitSha: first });
    expect(await service.answer()).toBe("v1");

    const head = await deploy(service.job());
    expect(head.result).toEqual({ outcome: "running", commitSha: service.repo.head });
    expect(await service.answer()).toBe("v2");
    const containers = await service.containers();
    expect(containers.map((container) => container.Names[0])).toEqual([
      `/aeroplane-${service.serviceId}-stable`,
    ]);
    expect(await imageExists(pinned.imageTag)).toBe(false);
  });

  it("fails a build with Docker's error as the last line, and the previous one keeps serving", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    expect((await deploy(service.job())).result.outcome).toBe("running");

    const failing = `RUN ["node", "-e", "console.error('boom in build'); process.exit(3)"]`;
    await service.repo.commit(app("v2", { run: failing }), "broken build");
    const job = service.job();
    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(text(run)).toContain("boom in build");
    const last = run.lines.at(-1)!;
    expect(last.stream).toBe("stderr");
    expect(last.line).toMatch(/^Build failed: .*returned a non-zero code: 3/);
    expect(run.result.reason).toBe(last.line);
    expect(await service.answer()).toBe("v1");
    expect((await service.containers()).length).toBe(1);
    expect(await imageExists(job.imageTag)).toBe(false);
  });

  it("fails an app that never answers HTTP, naming the port and the time allowed", async () => {
    const service = await newService();
    const silent = `CMD ["node", "-e", "console.log('up but silent'); setInterval(() => {}, 1000)"]`;
    await service.repo.commit(app("v1", { cmd: silent }), "silent app");
    const job = service.job({ healthCheckTimeoutMs: 3_000 });

    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(run.lines.at(-1)).toEqual({
      line: expect.stringMatching(/^The app did not answer HTTP on port 3000 within 3 s/),
      stream: "stderr",
    });
    expect(text(run)).toContain("up but silent");
    expect(await service.containers()).toEqual([]);
    expect(await imageExists(job.imageTag)).toBe(false);
  });

  it("fails fast when the app exits, with its exit code and last output", async () => {
    const service = await newService();
    const crash = `CMD ["node", "-e", "console.error('missing DATABASE_URL'); process.exit(4)"]`;
    await service.repo.commit(app("v1", { cmd: crash }), "crashing app");
    const job = service.job({ healthCheckTimeoutMs: 60_000 });

    const started = Date.now();
    const run = await deploy(job);
    const healthCheckStart = run.lines.findIndex((entry) =>
      entry.line.startsWith("Health check:"),
    );

    expect(run.result.outcome).toBe("failed");
    expect(run.lines.at(-1)?.line).toBe(
      "The app exited with code 4 during the health check",
    );
    expect(text(run).slice(healthCheckStart)).toContain("missing DATABASE_URL");
    // Far less than the minute the health check would have waited.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await service.containers()).toEqual([]);
  });

  it("aborts during the build within seconds, removing everything of the attempt", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    expect((await deploy(service.job())).result.outcome).toBe("running");

    const slow = `RUN ["node", "-e", "console.log('slow step started'); setTimeout(() => {}, 120000)"]`;
    await service.repo.commit(app("v2", { run: slow }), "slow build");
    const job = service.job();
    const controller = new AbortController();
    let abortedAt = 0;
    const run = await deploy(job, {
      signal: controller.signal,
      onLine: (line) => {
        if (line === "slow step started") {
          abortedAt = Date.now();
          controller.abort();
        }
      },
    });

    expect(abortedAt).toBeGreaterThan(0);
    expect(Date.now() - abortedAt).toBeLessThan(10_000);
    expect(run.result.outcome).toBe("aborted");
    expect(run.lines.at(-1)?.line).toMatch(/^Deployment aborted; removed /);
    const attempt = await docker.listContainers({
      all: true,
      filters: { label: [`aeroplane.deployment-id=${job.deploymentId}`] },
    });
    expect(attempt).toEqual([]);
    expect(await imageExists(job.imageTag)).toBe(false);

    // The classic builder's RUN container stops with the closed connection.
    const deadline = Date.now() + 10_000;
    const buildStepRunning = async () =>
      (await docker.listContainers()).some((c) =>
        c.Command.includes("slow step started"),
      );
    while (await buildStepRunning()) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(await service.answer()).toBe("v1");
    expect((await service.containers()).length).toBe(1);
  });

  it("rolls the swap back when aborted during it: the previous deployment serves again", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const first = service.job();
    expect((await deploy(first)).result.outcome).toBe("running");

    await service.repo.commit(app("v2"), "second version");
    const job = service.job();
    const controller = new AbortController();
    const run = await deploy(job, {
      signal: controller.signal,
      onLine: (line) => {
        if (line.startsWith(`Starting aeroplane-${service.serviceId}-stable`))
          controller.abort();
      },
    });

    expect(run.result.outcome).toBe("aborted");
    expect(text(run)).toContain(
      `Rolled back: the previous aeroplane-${service.serviceId}-stable serves again`,
    );
    expect(await service.answer()).toBe("v1");
    const containers = await service.containers();
    expect(
      containers.map((container) => container.Labels["aeroplane.deployment-id"]),
    ).toEqual([first.deploymentId]);
    expect(containers[0].Names).toEqual([`/aeroplane-${service.serviceId}-stable`]);
    expect(await imageExists(job.imageTag)).toBe(false);
  });

  it("fails when the host port is taken, leaving nothing behind", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const squatter = net.createServer();
    await new Promise<void>((resolve) =>
      squatter.listen(service.hostPort, "0.0.0.0", resolve),
    );
    try {
      const job = service.job();
      const run = await deploy(job);
      expect(run.result.outcome).toBe("failed");
      expect(run.result.reason).toMatch(
        new RegExp(
          `^Could not start aeroplane-${service.serviceId}-stable: .*address already in use`,
        ),
      );
      expect(await service.containers()).toEqual([]);
      expect(await imageExists(job.imageTag)).toBe(false);
    } finally {
      squatter.close();
    }
  });

  it("redacts environment values from every log line and the reason", async () => {
    const service = await newService();
    const leak = `CMD ["node", "-e", "console.log('token=' + process.env.API_TOKEN); process.exit(1)"]`;
    await service.repo.commit(app("v1", { cmd: leak }), "leaky app");
    const secret = "s3cret-token-value";

    const run = await deploy(service.job({ env: { API_TOKEN: secret, SHORT: "abc" } }));

    expect(run.result.outcome).toBe("failed");
    expect(text(run)).toContain("token=***");
    expect(JSON.stringify(run)).not.toContain(secret);
  });

  it("fails clearly on a missing branch, root directory or Dockerfile", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");

    const branch = await deploy(service.job({ branch: "nope" }));
    expect(branch.result.reason).toBe(
      "Clone failed: Remote branch nope not found in upstream origin",
    );

    const rootDir = await deploy(service.job({ rootDir: "services/web" }));
    expect(rootDir.result.reason).toBe(
      'Root directory "services/web" does not exist in the repository',
    );

    const dockerfile = await deploy(service.job({ dockerfilePath: "docker/Dockerfile" }));
    expect(dockerfile.result.reason).toBe(
      'No Dockerfile at "docker/Dockerfile" in the repository',
    );
    expect(dockerfile.lines.at(-1)).toEqual({
      line: dockerfile.result.reason,
      stream: "stderr",
    });

    const escape = await deploy(service.job({ rootDir: "../.." }));
    expect(escape.result.reason).toBe(
      'Root directory "../.." points outside the repository',
    );
  });

  it("builds from rootDir, with the Dockerfile relative to it, honouring .dockerignore", async () => {
    const service = await newService();
    const listContext = `RUN ["node", "-e", "console.log('context: ' + require('fs').readdirSync('.'))"]`;
    const files = app("from a subdirectory");
    await service.repo.commit(
      {
        "services/web/docker/Dockerfile": files.Dockerfile.replace(
          "COPY server.js .",
          `COPY . .\n${listContext}`,
        ),
        "services/web/server.js": files["server.js"],
        "services/web/notes/secret.txt": "not for the image",
        "services/web/.dockerignore": "notes\n",
        "README.md": "outside the build context",
      },
      "app in a subdirectory",
    );
    const run = await deploy(
      service.job({ rootDir: "services/web", dockerfilePath: "docker/Dockerfile" }),
    );
    expect(run.result.outcome).toBe("running");
    expect(text(run)).toContain("context: .dockerignore,docker,server.js");
    expect(await service.answer()).toBe("from a subdirectory");
  });
});
