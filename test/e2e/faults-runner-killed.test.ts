/**
 * Fault: the runner process dies with SIGKILL in the middle of a deployment
 * (no cleanup, no goodbye) and is started again with the same token. The
 * deployment must end `failed` with "runner lost", never run a second time,
 * and the new runner's startup reconciliation must remove whatever the dead
 * one left in Docker.
 */
import type { ChildProcess } from "node:child_process";
import { once } from "node:events";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import {
  deploy,
  deployment,
  dockerLeftovers,
  logLineTexts,
  waitForLine,
  waitForNoLeftovers,
} from "./support/deployments";
import { StatusWatch } from "./support/faults";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { TestSystem } from "./support/system";
import { sleep, waitFor } from "./support/wait";

/** The RUN step sleeps this long: a build the daemon kept going would end in the test. */
const SLOW_STEP_MS = 15_000;

let system: TestSystem;
let repo: ServedRepository;
let runner: { id: string; token: string };
let process1: ChildProcess;
let serviceId: string;

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  // The health check must outlast the test's wait for it.
  system = await TestSystem.start({ HEALTH_CHECK_TIMEOUT_MS: "120000" });
  runner = await system.registerRunner("killed");
  process1 = system.startRunner(runner.token);
  repo = await servedRepository("killed");
  ({ serviceId } = await system.createService(
    { name: "victim", repoUrl: repo.url, runnerId: runner.id },
    { projectName: "killed" },
  ));
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

async function killRunner(child: ChildProcess): Promise<void> {
  const exited = once(child, "exit");
  child.kill("SIGKILL");
  const [code, signal] = await exited;
  expect({ code, signal }).toEqual({ code: null, signal: "SIGKILL" });
}

/**
 * Kills the runner, starts a new one with the same token, and checks that
 * the deployment ended exactly once, failed, and left nothing behind, also
 * `settleMs` after the kill.
 */
async function killAndRestart(id: string, watch: StatusWatch, settleMs: number) {
  await killRunner(process1);
  const killedAt = Date.now();
  process1 = system.startRunner(runner.token);

  const failed = await system.waitForDeployment(
    id,
    (d) => d.status !== "building",
    20_000,
  );
  expect(failed.status).toBe("failed");
  const lines = await logLineTexts(system, id);
  expect(lines.filter((l) => /runner lost/.test(l)).length).toBeGreaterThanOrEqual(1);

  // No orphan: the new runner removed the dead one's leftovers on start.
  expect(await waitForNoLeftovers(id, 20_000)).toEqual({ containers: [], images: [] });

  // A few watchdog rounds later (and after any build the daemon might have
  // carried on with would have ended) it is still failed and still clean.
  await sleep(Math.max(6_000, killedAt + settleMs - Date.now()));
  await watch.stop();
  expect(watch.errors).toEqual([]);
  expect((await deployment(system, id)).status).toBe("failed");
  expect(watch.path(id).filter((s) => s === "building")).toEqual(["building"]);
  expect(watch.path(id).at(-1)).toBe("failed");
  expect(watch.flips()).toEqual([]);
  const after = await logLineTexts(system, id);
  expect(after.filter((l) => l.startsWith(`Cloning ${repo.url} `))).toHaveLength(1);
  expect(after.filter((l) => /accepted the deployment/.test(l))).toHaveLength(1);
  expect(await dockerLeftovers(id)).toEqual({ containers: [], images: [] });
}

describe("a runner killed with SIGKILL mid-deployment and started again", () => {
  it("fails a deployment killed during its build with 'runner lost', once, leaving nothing", async () => {
    await repo.commit(
      nodeApp("never built", {
        run: runNode(
          `console.log('slow step started'); setTimeout(() => {}, ${SLOW_STEP_MS})`,
        ),
      }),
      "slow build",
    );
    const id = await deploy(system, serviceId);
    const watch = new StatusWatch(system, [serviceId]);
    await waitForLine(system, id, /^slow step started$/);
    await killAndRestart(id, watch, SLOW_STEP_MS + 2_000);
  });

  it("fails a deployment killed during its health check, and the orphan candidate is removed", async () => {
    await repo.commit(
      nodeApp("never healthy", {
        cmd: 'CMD ["node", "-e", "setInterval(() => {}, 1000)"]',
      }),
      "an app that never answers",
    );
    const id = await deploy(system, serviceId);
    const watch = new StatusWatch(system, [serviceId]);
    await waitForLine(system, id, /^Health check: GET /);
    // The dead runner leaves a running candidate and its image behind.
    const left = await waitFor("the candidate container and its image", async () => {
      const found = await dockerLeftovers(id);
      return found.containers.length === 1 && found.images.length === 1 && found;
    });
    expect(left.containers).toEqual([`/aeroplane-${serviceId}-${id}`]);
    await killAndRestart(id, watch, 6_000);
  });
});
