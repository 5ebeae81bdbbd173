/**
 * Reconciling Docker with the runner and the control plane, against the
 * real Docker engine: what a runner cleans up when it starts, what it lists
 * in `hello`, what it removes when `welcome` names orphans, and how it undoes
 * a swap the control plane refuses.
 */
import { randomBytes } from "node:crypto";
import {
  mkdir,
  mkdtemp,
  readdir,
  rm,
  symlink,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it, type TestContext } from "vitest";
import { Agent, type RunJob } from "../../runner/agent.js";
import { removeStaleCloneDirs } from "../../runner/clone-dirs.js";
import { ControlConnection } from "../../runner/connection.js";
import { aeroplaneLabels, type ContainerRole } from "../../runner/docker.js";
import { startRunner } from "../../runner/main.js";
import { runnerMarkOf } from "../../runner/reconcile.js";
import { baseImage, removeServices } from "./support/docker-fixtures.js";
import {
  app,
  client,
  deploy,
  docker,
  imageExists,
  leftovers,
  newService,
  randomId,
  useRunnerFixtures,
} from "./support/runner-fixtures.js";
import { ScriptedControlPlane } from "./support/scripted-control-plane.js";

useRunnerFixtures();

const serviceIds: string[] = [];
afterAll(() => removeServices(serviceIds));

function newServiceId(): string {
  const id = randomId("svc");
  serviceIds.push(id);
  return id;
}

/** A container of the base image that idles; `mark` is the runner's label. */
async function idler(options: {
  name: string;
  serviceId: string;
  deploymentId: string;
  role: ContainerRole;
  mark: string;
  running: boolean;
  image?: string;
}) {
  const container = await docker.createContainer({
    name: options.name,
    Image: options.image ?? baseImage,
    Cmd: ["node", "-e", "setInterval(() => {}, 1000)"],
    Labels: aeroplaneLabels(options.serviceId, options.deploymentId, options.role, {
      runner: options.mark,
    }),
  });
  if (options.running) await container.start();
  return container;
}

/** Builds a tiny image labelled as `deploymentId`'s, marked by `mark`. */
async function labelledImage(serviceId: string, deploymentId: string, mark: string) {
  const dir = await mkdtemp(path.join(tmpdir(), "aeroplane-image-"));
  const tag = `aeroplane-${serviceId}-${deploymentId}`;
  try {
    await writeFile(path.join(dir, "Dockerfile"), `FROM ${baseImage}\n`);
    await client.buildImage({
      contextDir: dir,
      dockerfile: "Dockerfile",
      tag,
      labels: aeroplaneLabels(serviceId, deploymentId, "candidate", { runner: mark }),
      onLine: () => undefined,
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return tag;
}

const state = async (name: string) =>
  docker
    .getContainer(name)
    .inspect()
    .catch(() => null);

/**
 * An agent on a scripted control plane, stopped when the test ends; `runJob`
 * defaults to the real pipeline.
 */
async function startAgent(
  { onTestFinished }: TestContext,
  options: { runnerMark?: string; runJob?: RunJob } = {},
) {
  const plane = await ScriptedControlPlane.start();
  const agent = new Agent({
    capacity: 2,
    version: "9.9.9",
    docker: client,
    flushIntervalMs: 20,
    ...options,
  });
  const connection = new ControlConnection({
    url: plane.url,
    token: "apr_test",
    handlers: agent,
    baseDelayMs: 10,
    maxDelayMs: 50,
  });
  connection.start();
  onTestFinished(async () => {
    await agent.shutdown(2_000);
    await connection.stop();
    await plane.stop();
  });
  return { plane, agent };
}

describe.concurrent("reconciling Docker", () => {
  it("at startup removes leftover candidates and repairs interrupted swaps, only its own", async (context) => {
    const { expect, onTestFinished } = context;
    const token = `apr_${randomBytes(12).toString("hex")}`;
    const mark = runnerMarkOf(token);
    const otherMark = runnerMarkOf(`${token}_other`);
    const [a, b, c] = [newServiceId(), newServiceId(), newServiceId()];
    const dep = () => randomId("dep");
    const [leftover, foreign, live, parked, lonely] = [dep(), dep(), dep(), dep(), dep()];

    const common = { role: "candidate" as const, running: true };
    await idler({
      ...common,
      name: `aeroplane-${a}-${leftover}`,
      serviceId: a,
      deploymentId: leftover,
      mark,
    });
    await idler({
      ...common,
      name: `aeroplane-${a}-${foreign}`,
      serviceId: a,
      deploymentId: foreign,
      mark: otherMark,
    });
    // b: a swap finished, then the runner died before removing -previous.
    await idler({
      name: `aeroplane-${b}-stable`,
      serviceId: b,
      deploymentId: live,
      role: "stable",
      mark,
      running: true,
    });
    await idler({
      name: `aeroplane-${b}-previous`,
      serviceId: b,
      deploymentId: parked,
      role: "stable",
      mark,
      running: false,
    });
    // c: the runner died after parking the live container, before replacing it.
    await idler({
      name: `aeroplane-${c}-previous`,
      serviceId: c,
      deploymentId: lonely,
      role: "stable",
      mark,
      running: false,
    });

    const plane = await ScriptedControlPlane.start();
    const runner = await startRunner({
      url: plane.url,
      token,
      capacity: 1,
      allowFileRepos: false,
    });
    onTestFinished(async () => {
      await runner.stop(1_000);
      await plane.stop();
    });
    const hello = await plane.next("hello");

    expect(await state(`aeroplane-${a}-${leftover}`)).toBeNull();
    expect((await state(`aeroplane-${a}-${foreign}`))?.State.Running).toBe(true);
    expect(await state(`aeroplane-${b}-previous`)).toBeNull();
    const stableB = await state(`aeroplane-${b}-stable`);
    expect(stableB?.State.Running).toBe(true);
    // It serves, so it must come back after a reboot.
    expect(stableB?.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    expect(await state(`aeroplane-${c}-previous`)).toBeNull();
    const stableC = await state(`aeroplane-${c}-stable`);
    expect(stableC?.State.Running).toBe(true);
    expect(stableC?.Config.Labels["aeroplane.deployment-id"]).toBe(lonely);

    // What is left of its own is what it reports.
    expect([...hello.inventory].sort()).toEqual([live, lonely].sort());
  });

  it("removes what welcome names as orphans, keeping a serving -stable and held jobs", async (context) => {
    const { expect } = context;
    const mark = runnerMarkOf(`apr_${randomBytes(12).toString("hex")}`);
    const serviceId = newServiceId();
    const servingId = newServiceId();
    const [orphan, serving, held] = [randomId("dep"), randomId("dep"), randomId("dep")];
    const orphanImage = await labelledImage(serviceId, orphan, mark);
    const servingImage = await labelledImage(servingId, serving, mark);
    await idler({
      name: `aeroplane-${serviceId}-${orphan}`,
      serviceId,
      deploymentId: orphan,
      role: "candidate",
      mark,
      running: false,
      image: orphanImage,
    });
    await idler({
      name: `aeroplane-${servingId}-stable`,
      serviceId: servingId,
      deploymentId: serving,
      role: "stable",
      mark,
      running: true,
      image: servingImage,
    });
    await idler({
      name: `aeroplane-${serviceId}-${held}`,
      serviceId,
      deploymentId: held,
      role: "candidate",
      mark,
      running: true,
    });

    // A job of `held` that works until it is aborted.
    const runJob: RunJob = (job, io) =>
      new Promise((resolve) =>
        io.signal.addEventListener("abort", () =>
          resolve({ outcome: "aborted", commitSha: null, reason: "aborted" }),
        ),
      );
    const { plane } = await startAgent(context, { runnerMark: mark, runJob });
    const hello = await plane.welcome(0);
    expect([...hello.inventory].sort()).toEqual([orphan, serving, held].sort());
    await plane.startJob({ ...heldJob(serviceId, held) });
    await plane.next("heartbeat", 0, (frame) => frame.leaseIds.length > 0);

    plane.drop();
    await plane.welcome(plane.frames.length, [], [orphan, serving, held]);

    await expect.poll(() => leftovers(orphan), { timeout: 10_000 }).toEqual([]);
    expect(await imageExists(orphanImage)).toBe(false);
    expect((await state(`aeroplane-${servingId}-stable`))?.State.Running).toBe(true);
    expect(await imageExists(servingImage)).toBe(true);
    expect((await state(`aeroplane-${serviceId}-${held}`))?.State.Running).toBe(true);
  });

  it("rolls a refused live deployment back to the one it replaced", async (context) => {
    const { expect } = context;
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const first = service.job();
    expect((await deploy(first)).result.outcome).toBe("running");
    await service.repo.commit(app("v2"), "second version");

    const { plane } = await startAgent(context);
    await plane.welcome(0);
    const second = service.job();
    await plane.startJob(second);
    const result = await plane.next(
      "job.result",
      0,
      (f) => f.leaseId === second.leaseId,
      60_000,
    );
    expect(result.outcome).toBe("running");
    expect(await service.answer()).toBe("v2");

    // The deployment was aborted while its swap finished.
    plane.send({
      type: "job.result.ack",
      deploymentId: second.deploymentId,
      leaseId: second.leaseId,
      accepted: false,
    });

    await expect
      .poll(() => service.answer().catch(() => null), { timeout: 15_000 })
      .toBe("v1");
    const containers = await service.containers();
    expect(
      containers.map((c) => [c.Names[0], c.Labels["aeroplane.deployment-id"]]),
    ).toEqual([[`/aeroplane-${service.serviceId}-stable`, first.deploymentId]]);
    await expect.poll(() => imageExists(second.imageTag)).toBe(false);
    expect(await imageExists(first.imageTag)).toBe(true);
  });

  it("removes a refused first deployment, leaving nothing running", async (context) => {
    const { expect } = context;
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const { plane } = await startAgent(context);
    await plane.welcome(0);
    const job = service.job();
    await plane.startJob(job);
    expect((await plane.next("job.result", 0, () => true, 60_000)).outcome).toBe(
      "running",
    );

    plane.send({
      type: "job.result.ack",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
      accepted: false,
    });

    await expect.poll(() => leftovers(job.deploymentId), { timeout: 15_000 }).toEqual([]);
    await expect(service.answer()).rejects.toThrow();
  });

  it("undoes a live deployment whose lease lapsed while the ack was lost", async (context) => {
    const { expect } = context;
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const first = service.job();
    expect((await deploy(first)).result.outcome).toBe("running");
    await service.repo.commit(app("v2"), "second version");

    const mark = runnerMarkOf(`apr_${randomBytes(12).toString("hex")}`);
    const { plane } = await startAgent(context, { runnerMark: mark });
    await plane.welcome(0);
    const second = service.job();
    await plane.startJob(second);
    await plane.next("job.result", 0, (f) => f.leaseId === second.leaseId, 60_000);

    // The connection drops before any ack; the control plane has meanwhile
    // failed the deployment (lease lost) and forgotten the lease.
    plane.drop();
    const reconnect = plane.frames.length;
    const hello = await plane.welcome(reconnect, [second.leaseId], [second.deploymentId]);
    expect(hello.leases).toContainEqual({
      deploymentId: second.deploymentId,
      leaseId: second.leaseId,
    });
    expect(hello.inventory).toContain(second.deploymentId);

    await expect
      .poll(() => service.answer().catch(() => null), { timeout: 15_000 })
      .toBe("v1");
    await expect.poll(() => leftovers(second.deploymentId)).toEqual([]);
  });
});

describe.concurrent("a deleted service", () => {
  it("loses its job, containers and images on this runner, which then confirms, and again when asked again", async (context) => {
    const { expect } = context;
    const serviceId = newServiceId();
    const mark = runnerMarkOf(`apr_${randomBytes(12).toString("hex")}`);
    const otherMark = runnerMarkOf("apr_another_runner");
    const dep = () => randomId("dep");
    const [live, parked, leftover, foreign] = [dep(), dep(), dep(), dep()];
    const liveImage = await labelledImage(serviceId, live, mark);
    const parkedImage = await labelledImage(serviceId, parked, otherMark);
    // Its live container without any label, and a parked one another runner
    // made: only their names tie them to the service.
    const stable = await docker.createContainer({
      name: `aeroplane-${serviceId}-stable`,
      Image: liveImage,
      Cmd: ["node", "-e", "console.log('serving'); setInterval(() => {}, 1000)"],
    });
    await stable.start();
    await idler({
      name: `aeroplane-${serviceId}-previous`,
      serviceId,
      deploymentId: parked,
      role: "stable",
      mark: otherMark,
      running: false,
      image: parkedImage,
    });
    await idler({
      name: `aeroplane-${serviceId}-${leftover}`,
      serviceId,
      deploymentId: leftover,
      role: "candidate",
      mark,
      running: true,
    });
    // Another runner's candidate, not named like the service's own.
    await idler({
      name: `aeroplane-${serviceId}-${foreign}`,
      serviceId,
      deploymentId: foreign,
      role: "candidate",
      mark: otherMark,
      running: true,
    });

    // A job of the service that works until it is aborted.
    const runJob: RunJob = (job, io) =>
      new Promise((resolve) =>
        io.signal.addEventListener("abort", () => {
          io.log("Deployment aborted; removed nothing (none was made yet)", "stdout");
          resolve({ outcome: "aborted", commitSha: null, reason: "aborted" });
        }),
      );
    const { plane } = await startAgent(context, { runnerMark: mark, runJob });
    await plane.welcome(0);
    const job = heldJob(serviceId, dep());
    await plane.startJob(job);
    await plane.next("heartbeat", 0, (frame) => frame.leaseIds.length > 0);
    plane.send({ type: "runtime.follow", serviceId, tail: 5 });
    const snapshot = await plane.next("runtime.snapshot");
    expect(snapshot.lines.map((line) => line.line)).toEqual(["serving"]);

    const from = plane.frames.length;
    plane.send({ type: "service.remove", serviceId });
    const removed = await plane.next("service.removed", from, () => true, 30_000);

    const result = await plane.next("job.result", from);
    expect(result).toMatchObject({ leaseId: job.leaseId, outcome: "aborted" });
    expect(result.index).toBeLessThan(removed.index);
    const names = async () =>
      (
        await docker.listContainers({
          all: true,
          filters: { name: [`aeroplane-${serviceId}-`] },
        })
      ).map((container) => container.Names[0]);
    expect(await names()).toEqual([`/aeroplane-${serviceId}-${foreign}`]);
    expect(await imageExists(liveImage)).toBe(false);
    expect(await imageExists(parkedImage)).toBe(false);
    // Its runtime log was unfollowed, not ended by the removal.
    expect(plane.frames.some((frame) => frame.type === "runtime.end")).toBe(false);

    // Asked again (the confirmation was lost): nothing to remove, still answered.
    const again = plane.frames.length;
    plane.send({ type: "service.remove", serviceId });
    await plane.next("service.removed", again);
    expect(await names()).toEqual([`/aeroplane-${serviceId}-${foreign}`]);
  });
});

function heldJob(serviceId: string, deploymentId: string) {
  return {
    deploymentId,
    leaseId: randomId("lse"),
    serviceId,
    repoUrl: "git://127.0.0.1/none",
    branch: "main",
    commitSha: null,
    rootDir: ".",
    dockerfilePath: "Dockerfile",
    internalPort: 3000,
    hostPort: 1,
    healthCheckPath: "/",
    env: {},
    imageTag: `aeroplane-${serviceId}-${deploymentId}`,
    containerName: `aeroplane-${serviceId}-stable`,
    buildTimeoutMs: 60_000,
    healthCheckTimeoutMs: 10_000,
  };
}

describe("stale clone directories", () => {
  it("are removed only when this runner's mark names them and they predate its start", async ({
    onTestFinished,
  }) => {
    const base = await mkdtemp(path.join(tmpdir(), "aeroplane-test-clones-"));
    onTestFinished(() => rm(base, { recursive: true, force: true }));
    const mark = runnerMarkOf("apr_mine");
    const other = runnerMarkOf("apr_other");
    const startedAt = Date.now();
    const hourAgo = new Date(startedAt - 3_600_000);
    const make = async (name: string, old: boolean) => {
      await mkdir(path.join(base, name, "repo"), { recursive: true });
      await writeFile(path.join(base, name, "repo", "Dockerfile"), "FROM scratch\n");
      if (old) await utimes(path.join(base, name), hourAgo, hourAgo);
    };
    await make(`aeroplane-${mark}-Ab12Cd`, true);
    // A clone this process started: in use.
    await make(`aeroplane-${mark}-Ef34Gh`, false);
    // Another runner's, however old: perhaps still in use.
    await make(`aeroplane-${other}-Ij56Kl`, true);
    await make(`aeroplane-${mark}-notmkdtemp`, true);
    await writeFile(path.join(base, `aeroplane-${mark}-file01`), "");
    await utimes(path.join(base, `aeroplane-${mark}-file01`), hourAgo, hourAgo);
    await symlink(tmpdir(), path.join(base, `aeroplane-${mark}-link01`));

    const removed = await removeStaleCloneDirs(base, mark, startedAt);

    expect(removed).toEqual([path.join(base, `aeroplane-${mark}-Ab12Cd`)]);
    expect((await readdir(base)).sort()).toEqual(
      [
        `aeroplane-${mark}-Ef34Gh`,
        `aeroplane-${mark}-file01`,
        `aeroplane-${mark}-link01`,
        `aeroplane-${mark}-notmkdtemp`,
        `aeroplane-${other}-Ij56Kl`,
      ].sort(),
    );
  });
});
