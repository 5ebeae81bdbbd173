/**
 * The main job, end to end: a git repository served over git://, deployed
 * through the real Worker and a real runner process onto the real Docker
 * engine, driven by requests a curl user could make.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import {
  answer,
  deployment,
  logLineTexts,
  queueDeployment,
  serviceContainers,
  waitForLine,
  waitForNoLeftovers,
} from "./support/deployments";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { readEvents, type SseEvent } from "./support/sse";
import { TestSystem } from "./support/system";

let system: TestSystem;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;

/** An app that answers every request with `reply`, built with a RUN step. */
const app = (reply: string, { run = "", cmd = "" } = {}) =>
  nodeApp(reply, {
    run: run || runNode(`console.log('build marker for ${reply}')`),
    cmd,
  });

/** Queues a deployment, which starts with neither an image nor a container. */
async function deploy(): Promise<string> {
  const queued = await queueDeployment(system, serviceId);
  expect(queued).toMatchObject({ status: "queued", imageTag: null, containerName: null });
  return queued.id;
}

const logLines = (deploymentId: string) => logLineTexts(system, deploymentId);

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start({ HEALTH_CHECK_TIMEOUT_MS: "4000" });
  const runner = await system.registerRunner();
  system.startRunner(runner.token);
  repo = await servedRepository();
  await repo.commit(app("v1"), "first version");
  ({ serviceId, hostPort } = await system.createService({
    name: "web",
    repoUrl: repo.url,
    runnerId: runner.id,
  }));
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

describe("deploying a git repository", () => {
  let first: string;

  it("goes queued → building → running, streams the build, and serves on hostPort", async () => {
    first = await deploy();
    const events: SseEvent[] = [];
    for await (const event of readEvents(
      `${system.url}/api/deployments/${first}/stream`,
      system.adminKey,
    )) {
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

    expect(await deployment(system, first)).toMatchObject({
      status: "running",
      trigger: "manual",
      commitSha: repo.head,
      imageTag: `aeroplane-${serviceId}-${first}`,
      containerName: `aeroplane-${serviceId}-stable`,
      startedAt: expect.stringMatching(/Z$/),
      finishedAt: expect.stringMatching(/Z$/),
    });
    expect(await answer(hostPort)).toBe("v1");

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
    expect(await answer(hostPort)).toBe("v2");
    expect((await deployment(system, first)).status).toBe("superseded");
    const containers = await serviceContainers(serviceId);
    expect(containers.map((c) => c.Names[0])).toEqual([`/aeroplane-${serviceId}-stable`]);
  });

  it("fails a Dockerfile that does not build, and the previous deployment keeps serving", async () => {
    await repo.commit(
      app("v3", { run: runNode("console.error('boom in build'); process.exit(3)") }),
      "broken build",
    );
    const broken = await deploy();
    const ended = await system.waitForDeployment(
      broken,
      (d) => d.status !== "queued" && d.status !== "building",
    );
    expect(ended.status).toBe("failed");
    const lines = await logLines(broken);
    expect(lines).toContain("boom in build");
    expect(lines.join("\n")).toMatch(/returned a non-zero code: 3/);
    expect(await answer(hostPort)).toBe("v2");
    expect((await serviceContainers(serviceId)).length).toBe(1);
  });

  it("fails an app that never answers on its port, and the previous one keeps serving", async () => {
    await repo.commit(
      app("v4", { cmd: 'CMD ["node", "-e", "setInterval(() => {}, 1000)"]' }),
      "silent app",
    );
    const silent = await deploy();
    const ended = await system.waitForDeployment(
      silent,
      (d) => d.status !== "queued" && d.status !== "building",
    );
    expect(ended.status).toBe("failed");
    const lines = await logLines(silent);
    expect(lines.at(-1)).toMatch(/did not answer HTTP on port 3000/);
    expect(await answer(hostPort)).toBe("v2");
    expect((await serviceContainers(serviceId)).length).toBe(1);
  });

  it("aborts a building deployment and removes everything the attempt made", async () => {
    await repo.commit(
      app("v5", {
        run: runNode("console.log('slow step started'); setTimeout(() => {}, 120000)"),
      }),
      "slow build",
    );
    const slow = await deploy();
    await waitForLine(system, slow, /^slow step started$/, 60_000);
    const abort = await system.api("POST", `/api/deployments/${slow}/abort`);
    expect(abort).toEqual({ status: 200, body: { accepted: true } });
    const ended = await system.waitForDeployment(slow, (d) => d.status !== "building");
    expect(ended.status).toBe("aborted");

    // The runner removes the attempt's containers and image within seconds.
    expect(await waitForNoLeftovers(slow, 15_000)).toEqual({
      containers: [],
      images: [],
    });
    expect(await answer(hostPort)).toBe("v2");
    const again = await system.api("POST", `/api/deployments/${slow}/abort`);
    expect(again.status).toBe(409);
  });

  it("refuses to abort a finished deployment with 409", async () => {
    const res = await system.api("POST", `/api/deployments/${first}/abort`);
    expect(res.status).toBe(409);
    expect(res.body.error).toMatchObject({ code: "conflict" });
  });
});
