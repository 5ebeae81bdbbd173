/**
 * The runner protocol's guarantees as the Worker keeps them: leases that
 * lapse or are lost fail the deployment once, capacity and one build per
 * service hold, and what a runner holds of dead deployments is named.
 */
import { env, runDurableObjectAlarm } from "cloudflare:test";
import { beforeAll, describe, expect, it } from "vitest";
import { runnerChannel } from "../../worker/deployments";
import { ScriptedRunner } from "./runner-socket";
import { seedKey, seedRunner, seedService } from "./seed";
import { api } from "./support";

let writer: string;

beforeAll(async () => {
  // The oldest runner; it never connects, so it takes nothing below.
  await seedRunner();
  writer = await seedKey("write");
});

async function queue(serviceId: string): Promise<string> {
  const res = await api("POST", `/api/services/${serviceId}/deployments`, {
    key: writer,
  });
  expect(res.status).toBe(201);
  return res.body.deployment.id;
}

async function deployment(id: string) {
  return (await api("GET", `/api/deployments/${id}`, { key: writer })).body.deployment;
}

async function logLines(id: string): Promise<string[]> {
  const res = await api("GET", `/api/deployments/${id}/logs`, { key: writer });
  return res.body.logs.map((l: { line: string }) => l.line);
}

describe("leases", () => {
  it("fails a building deployment as 'runner lost' when heartbeats stop", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    const id = await queue(serviceId);
    const job = await socket.acceptNext();
    expect(job.deploymentId).toBe(id);

    await new Promise((resolve) => setTimeout(resolve, 1_700));
    await runDurableObjectAlarm(runnerChannel(env, runner.id));
    const row = await deployment(id);
    expect(row).toMatchObject({ status: "failed", finishedAt: expect.any(String) });
    expect((await logLines(id)).at(-1)).toMatch(
      /^Deployment failed: runner lost: no heartbeat/,
    );

    // The runner wakes up (it was paused): its next heartbeat stops the job,
    // and its late lines are acknowledged but kept out of the failed log.
    socket.send({ type: "heartbeat", leaseIds: [job.leaseId] });
    expect(await socket.next("job.abort")).toEqual({
      type: "job.abort",
      deploymentId: id,
      leaseId: job.leaseId,
    });
    const before = await logLines(id);
    socket.send({
      type: "logs",
      deploymentId: id,
      leaseId: job.leaseId,
      lines: [
        { seq: 1, line: "late line", stream: "stdout", at: new Date().toISOString() },
      ],
    });
    expect((await socket.next("logs.ack")).seq).toBe(1);
    expect(await logLines(id)).toEqual(before);

    // The runner's late success is refused; it was never re-offered.
    socket.result(job, "running");
    expect((await socket.next("job.result.ack")).accepted).toBe(false);
    expect((await deployment(id)).status).toBe("failed");
    expect(socket.pending("job.offer")).toEqual([]);
    socket.close();
  });

  it("keeps a lease alive while heartbeats arrive", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    const id = await queue(serviceId);
    const job = await socket.acceptNext();
    for (let i = 0; i < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      socket.send({ type: "heartbeat", leaseIds: [job.leaseId] });
    }
    await runDurableObjectAlarm(runnerChannel(env, runner.id));
    expect((await deployment(id)).status).toBe("building");
    socket.close();
  });

  it("fails at once the jobs a restarted runner no longer holds, and names orphans", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const first = await ScriptedRunner.connect(runner.token);
    first.hello();
    const id = await queue(serviceId);
    await first.acceptNext();
    first.close();

    const restarted = await ScriptedRunner.connect(runner.token);
    restarted.hello(2, [], [id, "dep_unknown"]);
    const welcome = await restarted.next("welcome");
    expect(welcome.orphanDeploymentIds.sort()).toEqual([id, "dep_unknown"].sort());
    expect(await deployment(id)).toMatchObject({ status: "failed" });
    expect((await logLines(id)).at(-1)).toMatch(/runner lost: runner .* restarted/);
    restarted.close();
  });

  it("tells a reconnecting runner to drop leases the Worker no longer knows", async () => {
    const runner = await seedRunner();
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello(2, [{ deploymentId: "dep_gone", leaseId: "lse_gone" }]);
    expect((await socket.next("welcome")).unknownLeaseIds).toEqual(["lse_gone"]);
    socket.close();
  });
});

describe("scheduling", () => {
  it("offers no more jobs than the runner's capacity, and one per service", async () => {
    const runner = await seedRunner();
    const services = await Promise.all([1, 2, 3].map(() => seedService(runner.id)));
    for (const { serviceId } of services) await queue(serviceId);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello(2);
    const a = await socket.acceptNext();
    const b = await socket.acceptNext();
    expect(a.serviceId).not.toBe(b.serviceId);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(socket.pending("job.offer")).toEqual([]);

    // A finished job frees a slot for the third service.
    socket.result(a, "failed", { reason: "test" });
    const c = await socket.next("job.offer");
    expect([a.serviceId, b.serviceId]).not.toContain(c.job.serviceId);
    socket.close();
  });

  it("holds a service's next deployment until its build ends", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello(2);
    const first = await queue(serviceId);
    const job = await socket.acceptNext();
    const second = await queue(serviceId);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(socket.pending("job.offer")).toEqual([]);
    expect((await deployment(second)).status).toBe("queued");

    socket.result(job, "running");
    expect((await socket.next("job.offer")).job.deploymentId).toBe(second);
    socket.close();
  });

  it("says in the log when the deployment waits for an offline runner", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const id = await queue(serviceId);
    expect(await logLines(id)).toContain(
      `Waiting for runner test runner (${runner.id}) to connect`,
    );
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    expect((await socket.next("job.offer")).job.deploymentId).toBe(id);
    socket.close();
  });
});

describe("POST /api/deployments/:deploymentId/redeploy", () => {
  it("queues the commit and image of a deployment that went live", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    const id = await queue(serviceId);
    const job = await socket.acceptNext();
    const sha = "a".repeat(40);
    socket.result(job, "running", { commitSha: sha });
    await socket.next("job.result.ack");

    const res = await api("POST", `/api/deployments/${id}/redeploy`, { key: writer });
    expect(res.status).toBe(201);
    expect(res.body.deployment).toMatchObject({
      status: "queued",
      trigger: "redeploy",
      commitSha: sha,
      imageTag: job.imageTag,
    });
    const offer = await socket.next("job.offer");
    expect(offer.job).toMatchObject({ commitSha: sha, imageTag: job.imageTag });
    socket.close();
  });

  it("answers 409 while the deployment is unfinished, 403 for read keys, 404 when absent", async () => {
    const { serviceId } = await seedService(null);
    const id = await queue(serviceId);
    expect(
      (await api("POST", `/api/deployments/${id}/redeploy`, { key: writer })).status,
    ).toBe(409);
    const reader = await seedKey("read");
    expect(
      (await api("POST", `/api/deployments/${id}/redeploy`, { key: reader })).status,
    ).toBe(403);
    expect((await api("POST", `/api/deployments/${id}/redeploy`)).status).toBe(401);
    expect(
      (await api("POST", "/api/deployments/dep_absent/redeploy", { key: writer })).status,
    ).toBe(404);
  });
});

describe("deleting a service", () => {
  it("tells its runner to remove what it holds, until the runner confirms", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const first = await ScriptedRunner.connect(runner.token);
    first.hello();
    await first.next("welcome");
    expect(
      (await api("DELETE", `/api/services/${serviceId}`, { key: writer })).status,
    ).toBe(204);
    expect((await first.next("service.remove")).serviceId).toBe(serviceId);
    first.close();

    // Not confirmed: asked again after the reconnect.
    const second = await ScriptedRunner.connect(runner.token);
    second.hello();
    await second.next("welcome");
    expect((await second.next("service.remove")).serviceId).toBe(serviceId);
    second.send({ type: "service.removed", serviceId });
    await new Promise((resolve) => setTimeout(resolve, 100));
    second.close();

    const third = await ScriptedRunner.connect(runner.token);
    third.hello();
    await third.next("welcome");
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(third.pending("service.remove")).toEqual([]);
    third.close();
  });
});
