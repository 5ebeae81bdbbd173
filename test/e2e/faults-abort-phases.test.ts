/**
 * Fault: a deployment is aborted in each phase of its life — queued behind
 * another build, cloning from a server that never answers, in a slow build
 * step, in a health check that never passes, and while the live container
 * is being swapped out. Each time the abort is accepted, the deployment is
 * `aborted` within 10 s and stays so after the runner reports back, nothing
 * of the attempt is left in Docker, and the live deployment keeps serving.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import {
  answer,
  deploy,
  deployment,
  logLineTexts,
  serviceContainers,
  waitForLine,
  waitForNoLeftovers,
} from "./support/deployments";
import { silentServer, StatusWatch } from "./support/faults";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { TestSystem } from "./support/system";
import { sleep, waitFor } from "./support/wait";

const docker = new Docker();
let system: TestSystem;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;
let liveId: string;
let watch: StatusWatch;
const aborted: string[] = [];

const SLOW_BUILD = runNode(
  "console.log('slow step started'); setTimeout(() => {}, 120000)",
);

beforeAll(async () => {
  await ensureHostNodeImage(docker);
  // Health checks must outlast the wait for one to be under way.
  system = await TestSystem.start({ HEALTH_CHECK_TIMEOUT_MS: "120000" });
  const runner = await system.registerRunner("aborts");
  system.startRunner(runner.token);
  repo = await servedRepository("aborts");
  // The live app ignores SIGTERM, as node as PID 1 does: stopping it takes
  // the runner's whole stop timeout, which holds a swap open long enough
  // to abort it.
  await repo.commit(nodeApp("v1", { slowStop: true }), "v1");
  ({ serviceId, hostPort } = await system.createService(
    { name: "steady", repoUrl: repo.url, runnerId: runner.id },
    { projectName: "aborts" },
  ));
  liveId = await deploy(system, serviceId);
  await system.waitForDeployment(liveId, (d) => d.status === "running");
  expect(await answer(hostPort)).toBe("v1");
  watch = new StatusWatch(system, [serviceId], 100);
});

afterAll(async () => {
  await watch?.stop();
  await system?.stop();
  await repo?.stop();
});

const lines = (id: string) => logLineTexts(system, id);

/** Aborts `id` and expects `aborted` within 10 s of the request. */
async function abortWithin10s(id: string): Promise<void> {
  const requestedAt = Date.now();
  const res = await system.api("POST", `/api/deployments/${id}/abort`);
  expect(res).toEqual({ status: 200, body: { accepted: true } });
  const ended = await system.waitForDeployment(
    id,
    (d) => d.status !== "queued" && d.status !== "building",
    10_000,
  );
  expect(ended.status).toBe("aborted");
  expect(Date.now() - requestedAt).toBeLessThan(10_000);
  aborted.push(id);
}

/**
 * After the runner has reported the attempt's end (when it ever held it):
 * still aborted, nothing labelled with it in Docker, and the live
 * deployment serving from the one stable container.
 */
async function expectAbortHeld(id: string, { ranOnRunner }: { ranOnRunner: boolean }) {
  if (ranOnRunner) await waitForLine(system, id, /^Deployment aborted; removed /, 30_000);
  expect((await deployment(system, id)).status).toBe("aborted");
  expect(await waitForNoLeftovers(id, 10_000)).toEqual({ containers: [], images: [] });

  expect(await answer(hostPort)).toBe("v1");
  expect((await deployment(system, liveId)).status).toBe("running");
  const containers = await serviceContainers(serviceId);
  expect(
    containers.map((c) => [c.Names[0], c.State, c.Labels["aeroplane.deployment-id"]]),
  ).toEqual([[`/aeroplane-${serviceId}-stable`, "running", liveId]]);

  const again = await system.api("POST", `/api/deployments/${id}/abort`);
  expect(again.status).toBe(409);
}

describe("aborting a deployment", () => {
  it("while queued behind another build, and that build in its slow step", async () => {
    await repo.commit(nodeApp("v2", { run: SLOW_BUILD }), "slow build");
    const building = await deploy(system, serviceId);
    await waitForLine(system, building, /^slow step started$/);
    const queued = await deploy(system, serviceId);
    await sleep(500);
    expect((await deployment(system, queued)).status).toBe("queued");

    await abortWithin10s(queued);
    await abortWithin10s(building);
    await expectAbortHeld(building, { ranOnRunner: true });
    // Its service was free again after the build ended; it still never ran.
    await expectAbortHeld(queued, { ranOnRunner: false });
    expect(watch.path(queued)).toEqual(["queued", "aborted"]);
  });

  it("while cloning from a git server that never answers", async () => {
    const silent = await silentServer();
    const hangingUrl = `git://127.0.0.1:${silent.port}/hangs`;
    await system.ok("PATCH", `/api/services/${serviceId}`, { repoUrl: hangingUrl });
    try {
      const id = await deploy(system, serviceId);
      await waitForLine(system, id, new RegExp(`^Cloning ${hangingUrl} `));
      await sleep(500);
      expect((await deployment(system, id)).status).toBe("building");
      await abortWithin10s(id);
      await expectAbortHeld(id, { ranOnRunner: true });
      expect(await lines(id)).not.toContainEqual(expect.stringMatching(/^Checked out /));
    } finally {
      await system.ok("PATCH", `/api/services/${serviceId}`, { repoUrl: repo.url });
      await silent.close();
    }
  });

  it("in the health check of an app that never answers", async () => {
    await repo.commit(
      nodeApp("v3", { cmd: 'CMD ["node", "-e", "setInterval(() => {}, 1000)"]' }),
      "an app that never answers",
    );
    const id = await deploy(system, serviceId);
    await waitForLine(system, id, /^Health check: GET /);
    await waitFor("the candidate container", async () => {
      const candidates = await docker.listContainers({
        filters: { label: [`aeroplane.deployment-id=${id}`] },
      });
      return candidates.length === 1;
    });
    await abortWithin10s(id);
    await expectAbortHeld(id, { ranOnRunner: true });
    expect(await lines(id)).not.toContainEqual(
      expect.stringMatching(/^Health check passed/),
    );
  });

  it("during the swap, which rolls back to the live container", async () => {
    await repo.commit(nodeApp("v4"), "a good version, aborted while it is swapped in");
    const id = await deploy(system, serviceId);
    // The live app takes the whole stop timeout to go: abort while it stops.
    await waitForLine(
      system,
      id,
      new RegExp(`^Stopping aeroplane-${serviceId}-stable `),
      60_000,
    );
    await abortWithin10s(id);
    await expectAbortHeld(id, { ranOnRunner: true });
    // It was mid-swap: the runner put the live container back.
    expect(await lines(id)).toContainEqual(expect.stringMatching(/^Rolled back: /));
  });

  it("holds: a watchdog round later every aborted deployment is still aborted", async () => {
    await sleep(6_000);
    for (const id of aborted) {
      expect((await deployment(system, id)).status).toBe("aborted");
      expect(watch.path(id).at(-1)).toBe("aborted");
    }
    expect(watch.errors).toEqual([]);
    expect(watch.flips()).toEqual([]);
    expect(watch.doubleBuilds).toEqual([]);
    expect(await answer(hostPort)).toBe("v1");
  });
});
