/**
 * The main job, end to end: a git repository served over git://, deployed
 * through the real Worker and a real runner process onto the real Docker
 * engine, driven by requests a curl user could make.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage, HOST_NODE_IMAGE } from "../../scripts/host-node-image";
import { freePort } from "../../scripts/local-control-plane";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { readEvents, type SseEvent } from "./support/sse";
import { TestSystem } from "./support/system";

const docker = new Docker();
let system: TestSystem;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;

/** An app that answers every request with `reply`, built with a RUN step. */
function app(reply: string, { run = "", cmd = "" } = {}) {
  return {
    "Dockerfile": [
      `FROM ${HOST_NODE_IMAGE}`,
      "WORKDIR /app",
      "COPY server.js .",
      run || `RUN ["node", "-e", "console.log('build marker for ${reply}')"]`,
      cmd || 'CMD ["node", "server.js"]',
    ].join("\n"),
    "server.js": `require("http").createServer((q, s) => s.end(${JSON.stringify(reply)}))
      .listen(3000, () => console.log("listening on 3000"));`,
  };
}

async function deploy(): Promise<string> {
  const { deployment } = await system.ok(
    "POST",
    `/api/services/${serviceId}/deployments`,
    undefined,
    201,
  );
  expect(deployment).toMatchObject({ status: "queued", imageTag: null, containerName: null });
  return deployment.id;
}

async function logLines(deploymentId: string): Promise<string[]> {
  const { logs } = await system.ok("GET", `/api/deployments/${deploymentId}/logs`);
  return logs.map((l: { line: string }) => l.line);
}

const answer = async () => (await fetch(`http://127.0.0.1:${hostPort}/`)).text();

async function serviceContainers() {
  return docker.listContainers({
    all: true,
    filters: { label: [`aeroplane.service-id=${serviceId}`] },
  });
}

beforeAll(async () => {
  await ensureHostNodeImage(docker);
  system = await TestSystem.start({ HEALTH_CHECK_TIMEOUT_MS: "4000" });
  const runner = await system.registerRunner();
  system.startRunner(runner.token);
  repo = await servedRepository();
  await repo.commit(app("v1"), "first version");

  const { project } = await system.ok("POST", "/api/projects", { name: "e2e" }, 201);
  hostPort = await freePort();
  const created = await system.ok(
    "POST",
    `/api/projects/${project.id}/services`,
    { name: "web", repoUrl: repo.url, internalPort: 3000, hostPort, runnerId: runner.id },
    201,
  );
  serviceId = created.service.id;
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
  for (const c of await serviceContainers()) {
    await docker.getContainer(c.Id).remove({ force: true });
  }
  for (const image of await docker.listImages({
    filters: { label: [`aeroplane.service-id=${serviceId}`] },
  })) {
    await docker.getImage(image.Id).remove({ force: true });
  }
});

describe("deploying a git repository", () => {
  let first: string;

  it("goes queued → building → running, streams the build, and serves on hostPort", async () => {
    first = await deploy();
    const events: SseEvent[] = [];
    for await (const event of readEvents(`${system.url}/api/deployments/${first}/stream`, system.adminKey)) {
      events.push(event);
    }

    // The stream is a snapshot, then live events, and ends with `running`.
    expect(events[0].event).toBe("snapshot");
    const statuses = events
      .filter((e) => e.event === "status")
      .map((e) => JSON.parse(e.data).status);
    // The POST answered `queued`; the stream may open after the runner took it.
    expect(["queued,building,running", "building,running"]).toContain(statuses.join(","));
    const live = events.filter((e) => e.event === "log").map((e) => JSON.parse(e.data));
    expect(live.map((l) => l.line)).toContain("build marker for v1");
    for (const e of events.filter((e) => e.event === "log")) {
      expect(Number(e.id)).toBe(JSON.parse(e.data).id);
    }
    expect(events.some((e) => e.event === "ping")).toBe(true);

    const { deployment } = await system.ok("GET", `/api/deployments/${first}`);
    expect(deployment).toMatchObject({
      status: "running",
      trigger: "manual",
      commitSha: repo.head,
      imageTag: `aeroplane-${serviceId}-${first}`,
      containerName: `aeroplane-${serviceId}-stable`,
      startedAt: expect.stringMatching(/Z$/),
      finishedAt: expect.stringMatching(/Z$/),
    });
    expect(await answer()).toBe("v1");

    // /logs has the same lines as the stream, including the RUN step's.
    const lines = await logLines(first);
    expect(lines).toContain("build marker for v1");
    const snapshot = JSON.parse(events[0].data).map((l: { line: string }) => l.line);
    expect(lines).toEqual([...snapshot, ...live.map((l) => l.line)]);
  });

  it("replaces the first deployment with a second commit, leaving one container", async () => {
    await repo.commit(app("v2"), "second version");
    const second = await deploy();
    await system.waitForDeployment(second, (d) => d.status === "running");
    expect(await answer()).toBe("v2");
    const { deployment } = await system.ok("GET", `/api/deployments/${first}`);
    expect(deployment.status).toBe("superseded");
    const containers = await serviceContainers();
    expect(containers.map((c) => c.Names[0])).toEqual([`/aeroplane-${serviceId}-stable`]);
  });

  it("fails a Dockerfile that does not build, and the previous deployment keeps serving", async () => {
    await repo.commit(app("v3", { run: 'RUN ["node", "-e", "console.error(\'boom in build\'); process.exit(3)"]' }), "broken build");
    const broken = await deploy();
    const deployment = await system.waitForDeployment(broken, (d) => d.status !== "queued" && d.status !== "building");
    expect(deployment.status).toBe("failed");
    const lines = await logLines(broken);
    expect(lines).toContain("boom in build");
    expect(lines.join("\n")).toMatch(/returned a non-zero code: 3/);
    expect(await answer()).toBe("v2");
    expect((await serviceContainers()).length).toBe(1);
  });

  it("fails an app that never answers on its port, and the previous one keeps serving", async () => {
    await repo.commit(app("v4", { cmd: 'CMD ["node", "-e", "setInterval(() => {}, 1000)"]' }), "silent app");
    const silent = await deploy();
    const deployment = await system.waitForDeployment(silent, (d) => d.status !== "queued" && d.status !== "building");
    expect(deployment.status).toBe("failed");
    const lines = await logLines(silent);
    expect(lines.at(-1)).toMatch(/did not answer HTTP on port 3000/);
    expect(await answer()).toBe("v2");
    expect((await serviceContainers()).length).toBe(1);
  });

  it("aborts a building deployment and removes everything the attempt made", async () => {
    await repo.commit(
      app("v5", { run: 'RUN ["node", "-e", "console.log(\'slow step started\'); setTimeout(() => {}, 120000)"]' }),
      "slow build",
    );
    const slow = await deploy();
    const deadline = Date.now() + 60_000;
    while (!(await logLines(slow)).includes("slow step started")) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const abort = await system.api("POST", `/api/deployments/${slow}/abort`);
    expect(abort).toEqual({ status: 200, body: { accepted: true } });
    const deployment = await system.waitForDeployment(slow, (d) => d.status !== "building");
    expect(deployment.status).toBe("aborted");

    // The runner removes the attempt's containers and image within seconds.
    const cleanDeadline = Date.now() + 15_000;
    for (;;) {
      const containers = await docker.listContainers({
        all: true,
        filters: { label: [`aeroplane.deployment-id=${slow}`] },
      });
      const images = await docker.listImages({
        filters: { reference: [`aeroplane-${serviceId}-${slow}`] },
      });
      if (containers.length === 0 && images.length === 0) break;
      expect(Date.now()).toBeLessThan(cleanDeadline);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(await answer()).toBe("v2");
    const again = await system.api("POST", `/api/deployments/${slow}/abort`);
    expect(again.status).toBe(409);
  });

  it("refuses to abort a finished deployment with 409", async () => {
    const res = await system.api("POST", `/api/deployments/${first}/abort`);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: "conflict" });
  });
});
