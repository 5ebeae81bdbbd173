/**
 * Load: 200 deployments queued at once across 20 services, for one runner
 * with capacity 2. Every deployment must reach a final state (the newest of
 * each service live, the older ones superseded), and at no moment may more
 * than 2 of them be building: not in the recorded [startedAt, finishedAt]
 * intervals, not in what frequent polls of the API saw, and not in the
 * runner's own account of the jobs it started and finished.
 */
import { createInterface } from "node:readline";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import { answer, serviceDeployments, TERMINAL } from "./support/deployments";
import { maxOverlap, recordedIntervals, StatusWatch } from "./support/faults";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp } from "./support/node-app";
import { TestSystem } from "./support/system";
import { waitFor } from "./support/wait";

const SERVICES = 20;
const PER_SERVICE = 10;
const CAPACITY = 2;

let system: TestSystem;
let repo: ServedRepository;
const services: Array<{ id: string; hostPort: number }> = [];
/** The runner's own log: when it started and finished each job, in order. */
const runnerJobEvents: Array<{ kind: "start" | "end"; deploymentId: string }> = [];

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start();
  const runner = await system.registerRunner("capacity", CAPACITY);
  const child = system.startRunner(
    runner.token,
    ["--capacity", String(CAPACITY)],
    { AEROPLANE_LOG_LEVEL: "info" },
    { stderr: "pipe" },
  );
  createInterface({ input: child.stderr! }).on("line", (line) => {
    const started = /runner:agent Job started deployment=(\S+)/.exec(line);
    const ended = /runner:agent Job (?:running|failed|aborted) deployment=(\S+)/.exec(
      line,
    );
    if (started) runnerJobEvents.push({ kind: "start", deploymentId: started[1] });
    if (ended) runnerJobEvents.push({ kind: "end", deploymentId: ended[1] });
    if (process.env.AEROPLANE_TEST_VERBOSE) process.stderr.write(`${line}\n`);
  });

  // One tiny app for all: after the first build, every layer but the
  // runner's labels comes from the cache.
  repo = await servedRepository("capacity");
  await repo.commit(nodeApp("ok"), "a tiny app");
  const projectId = await system.createProject("capacity");
  for (let i = 0; i < SERVICES; i++) {
    const { serviceId, hostPort } = await system.createService(
      { name: `app-${i}`, repoUrl: repo.url, runnerId: runner.id },
      { projectId },
    );
    services.push({ id: serviceId, hostPort });
  }
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

/** The most jobs the runner had started and not yet finished at once. */
function runnerMaxConcurrent(): number {
  let open = 0;
  let most = 0;
  for (const event of runnerJobEvents) {
    open += event.kind === "start" ? 1 : -1;
    most = Math.max(most, open);
  }
  return most;
}

describe("200 deployments across 20 services on one runner of capacity 2", () => {
  it("all end, the newest of each service live, and never more than 2 build at once", async () => {
    const serviceIds = services.map((s) => s.id);
    const watch = new StatusWatch(system, serviceIds, 200);

    // Ten waves of one request per service, each wave sent all at once.
    const queuedAt = Date.now();
    const newest = new Map<string, string>();
    for (let wave = 0; wave < PER_SERVICE; wave++) {
      const created = await Promise.all(
        serviceIds.map((id) =>
          system.ok("POST", `/api/services/${id}/deployments`, undefined, 201),
        ),
      );
      for (const { deployment } of created)
        newest.set(deployment.serviceId, deployment.id);
    }
    const queuingMs = Date.now() - queuedAt;

    const all = await waitFor(
      "all 200 deployments to end",
      async () => {
        const lists = await Promise.all(
          serviceIds.map((id) => serviceDeployments(system, id)),
        );
        const flat = lists.flat();
        return (
          flat.length === SERVICES * PER_SERVICE &&
          flat.every((d) => TERMINAL.has(d.status)) &&
          flat
        );
      },
      170_000,
      1_000,
    );
    await watch.stop();

    // Exact outcome per service: its newest request live, the rest superseded.
    for (const serviceId of serviceIds) {
      const mine = all.filter((d) => d.serviceId === serviceId);
      expect(mine.filter((d) => d.status === "running").map((d) => d.id)).toEqual([
        newest.get(serviceId),
      ]);
      expect(mine.filter((d) => d.status === "superseded")).toHaveLength(PER_SERVICE - 1);
    }
    for (const { hostPort } of services) expect(await answer(hostPort)).toBe("ok");

    const built = all.filter((d) => d.startedAt !== null);
    expect(built.length).toBeGreaterThanOrEqual(SERVICES);

    // Never more than 2 building: by the records, by the polls, by the runner.
    expect
      .soft(
        maxOverlap(recordedIntervals(all)),
        `recorded [startedAt, finishedAt] of the builds: ${JSON.stringify(
          built.map((d) => [d.id, d.status, d.startedAt, d.finishedAt]),
        )}`,
      )
      .toBeLessThanOrEqual(CAPACITY);
    expect.soft(watch.errors).toEqual([]);
    expect.soft(watch.doubleBuilds).toEqual([]);
    expect.soft(watch.flips()).toEqual([]);
    const certain = watch.certainBuildingIntervals();
    expect.soft(maxOverlap(certain)).toBeLessThanOrEqual(CAPACITY);
    // The polls were frequent enough to see most builds under way.
    expect.soft(certain.length).toBeGreaterThanOrEqual(built.length / 2);
    // The runner started every job that built, and held at most 2 at a time.
    expect
      .soft(runnerJobEvents.filter((e) => e.kind === "start"))
      .toHaveLength(built.length);
    expect.soft(runnerMaxConcurrent()).toBeLessThanOrEqual(CAPACITY);

    console.info(
      `capacity: queued 200 in ${queuingMs} ms; ${built.length} built; ` +
        `${watch.rounds} poll rounds saw ${certain.length} builds under way; ` +
        `runner max concurrent ${runnerMaxConcurrent()}`,
    );
  }, 200_000);
});
