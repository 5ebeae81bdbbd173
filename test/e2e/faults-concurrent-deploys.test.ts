/**
 * Fault: deploy requests for one service arrive together (a double-clicked
 * button, a webhook and a CI job racing). One deployment builds; the others
 * are superseded or wait their turn; two builds of one service never run at
 * once — neither as the API shows it at any moment, nor in the recorded
 * [startedAt, finishedAt] of the builds.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import {
  answer,
  serviceDeployments,
  TERMINAL,
  type Deployment,
} from "./support/deployments";
import { maxOverlap, recordedIntervals, StatusWatch } from "./support/faults";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { TestSystem } from "./support/system";
import { waitFor } from "./support/wait";

let system: TestSystem;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start();
  const runner = await system.registerRunner("concurrent");
  system.startRunner(runner.token);
  repo = await servedRepository("concurrent");
  ({ serviceId, hostPort } = await system.createService(
    { name: "raced", repoUrl: repo.url, runnerId: runner.id },
    { projectName: "concurrent" },
  ));
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

/**
 * Commits a new version whose build takes 2 s (a new server.js, so the RUN
 * step is not cached), fires `count` deploy requests at once, and waits
 * until they have all ended. Returns the deployments, oldest first.
 */
async function raceDeploys(count: number, reply: string): Promise<Deployment[]> {
  await repo.commit(
    nodeApp(reply, {
      run: runNode("setTimeout(() => console.log('built slowly'), 2000)"),
    }),
    reply,
  );
  const timed = await Promise.all(
    Array.from({ length: count }, async () => {
      const sentAt = Date.now();
      const res = await system.api("POST", `/api/services/${serviceId}/deployments`);
      return { res, sentAt, answeredAt: Date.now() };
    }),
  );
  // All were sent within 100 ms, and all were in flight together: every one
  // was sent before any was answered.
  const sent = timed.map((t) => t.sentAt);
  expect(Math.max(...sent) - Math.min(...sent)).toBeLessThanOrEqual(100);
  expect(Math.max(...sent)).toBeLessThanOrEqual(
    Math.min(...timed.map((t) => t.answeredAt)),
  );
  const responses = timed.map((t) => t.res);
  for (const res of responses) {
    expect(res.status).toBe(201);
    expect(res.body.deployment.status).toBe("queued");
  }
  const ids = new Set(responses.map((res) => res.body.deployment.id as string));

  const ended = await waitFor(
    `all ${count} deployments to end`,
    async () => {
      const mine = (await serviceDeployments(system, serviceId)).filter((d) =>
        ids.has(d.id),
      );
      const finished = mine.every((d) => TERMINAL.has(d.status));
      // `running` is final only once nothing else of the service is pending.
      return finished && mine.length === count && mine;
    },
    90_000,
    200,
  );
  return ended.sort((a, b) => a.createdAt.localeCompare(b.createdAt));
}

/**
 * The checks every race must pass, from the watch and from the records of
 * `all` the service's deployments; `watched` are those created while the
 * watch ran.
 */
function expectOneBuildAtATime(watch: StatusWatch, all: Deployment[], watched = all) {
  expect.soft(watch.errors).toEqual([]);
  expect.soft(watch.doubleBuilds).toEqual([]);
  expect.soft(watch.flips()).toEqual([]);
  const certain = watch.certainBuildingIntervals();
  expect.soft(maxOverlap(certain)).toBeLessThanOrEqual(1);
  // Builds take 2 s and the polls come every 50 ms: each one was seen.
  expect.soft(certain).toHaveLength(watched.filter((d) => d.startedAt !== null).length);
  const intervals = recordedIntervals(all);
  expect
    .soft(
      maxOverlap(intervals),
      `recorded [startedAt, finishedAt]: ${JSON.stringify(
        all.map((d) => [d.id, d.status, d.startedAt, d.finishedAt]),
      )}`,
    )
    .toBeLessThanOrEqual(1);
}

describe("deploy requests for one service that arrive together", () => {
  it("two within 100 ms: one goes live, the other is superseded, never two builds at once (3 rounds)", async () => {
    const watch = new StatusWatch(system, [serviceId], 50);
    for (const round of [1, 2, 3]) {
      const reply = `round ${round}`;
      const [older, newer] = await raceDeploys(2, reply);
      const statuses = [older, newer].map((d) => d.status).sort();
      expect(statuses, `round ${round}`).toEqual(["running", "superseded"]);
      // The newest request wins: the older one was superseded before it
      // started, or built first and was then replaced.
      const live = [older, newer].find((d) => d.status === "running")!;
      const other = [older, newer].find((d) => d.status === "superseded")!;
      expect(live.createdAt >= other.createdAt).toBe(true);
      const otherPath = watch.path(other.id);
      expect([
        ["queued", "superseded"],
        ["superseded"],
        ["queued", "building", "running", "superseded"],
        ["queued", "building", "superseded"],
        ["building", "running", "superseded"],
        ["building", "superseded"],
      ]).toContainEqual(otherPath);
      expect(await answer(hostPort)).toBe(reply);
    }
    await watch.stop();
    expectOneBuildAtATime(watch, await serviceDeployments(system, serviceId));
  });

  it("five at once: exactly one ends running, the rest superseded, one build at a time", async () => {
    const watch = new StatusWatch(system, [serviceId], 50);
    const all = await raceDeploys(5, "five at once");
    await watch.stop();
    expect(all.filter((d) => d.status === "running")).toHaveLength(1);
    expect(all.filter((d) => d.status === "superseded")).toHaveLength(4);
    // Superseded while queued means it never built.
    expect(all.filter((d) => d.startedAt !== null).length).toBeLessThanOrEqual(2);
    expect(await answer(hostPort)).toBe("five at once");
    expectOneBuildAtATime(watch, await serviceDeployments(system, serviceId), all);
  });
});
