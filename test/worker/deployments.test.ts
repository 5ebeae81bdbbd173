import { env, SELF } from "cloudflare:test";
import { EventSourceParserStream } from "eventsource-parser/stream";
import { deploymentLog } from "../../worker/deployments";
import { beforeAll, describe, expect, it } from "vitest";
import { ScriptedRunner } from "./runner-socket";
import { seedKey, seedRunner, seedService } from "./seed";
import { api } from "./support";

let reader: string;
let writer: string;

beforeAll(async () => {
  // The oldest runner takes services without a runner of their own; this one
  // never connects, so those deployments stay queued for the tests below.
  await seedRunner();
  reader = await seedKey("read");
  writer = await seedKey("write");
});

const deploymentShape = {
  id: expect.stringMatching(/^dep_/),
  serviceId: expect.any(String),
  commitSha: null,
  status: "queued",
  trigger: "manual",
  imageTag: null,
  containerName: null,
  startedAt: null,
  finishedAt: null,
  createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
};

describe("POST /api/services/:serviceId/deployments", () => {
  it("queues a deployment exactly as the contract shows", async () => {
    const { serviceId } = await seedService(null);
    const res = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({ deployment: { ...deploymentShape, serviceId } });
    expect(Object.keys(res.body.deployment)).toEqual(Object.keys(deploymentShape));
  });

  it("takes a JSON content type with no body as no body", async () => {
    const { serviceId } = await seedService(null);
    const res = await SELF.fetch(
      `http://aeroplane.test/api/services/${serviceId}/deployments`,
      {
        method: "POST",
        headers: {
          Authorization: `Bearer ${writer}`,
          "Content-Type": "application/json",
        },
      },
    );
    expect(res.status).toBe(201);
    expect(((await res.json()) as any).deployment.status).toBe("queued");
  });

  it("supersedes older deployments of the service that are still queued", async () => {
    const { serviceId } = await seedService(null);
    const first = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const second = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const list = await api("GET", `/api/services/${serviceId}/deployments`, {
      key: reader,
    });
    const statuses = Object.fromEntries(
      list.body.deployments.map((d: any) => [d.id, d.status]),
    );
    expect(statuses).toEqual({
      [first.body.deployment.id]: "superseded",
      [second.body.deployment.id]: "queued",
    });
  });

  it("accepts a commit to deploy and rejects one that is not hex with the zod issue", async () => {
    const { serviceId } = await seedService(null);
    const good = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
      body: { commitSha: "abc1234" },
    });
    expect(good.body.deployment.commitSha).toBe("abc1234");
    const bad = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
      body: { commitSha: "not a sha", extra: 1 },
    });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe("validation_failed");
    expect(bad.body.error.issues.map((i: any) => i.path)).toEqual(
      expect.arrayContaining(["commitSha"]),
    );
  });

  it("answers 401 without a key, 403 for a read key, 404 outside the key's projects", async () => {
    const { serviceId } = await seedService(null);
    const other = await seedService(null);
    const scoped = await seedKey("write", [other.projectId]);
    const path = `/api/services/${serviceId}/deployments`;
    expect((await api("POST", path)).status).toBe(401);
    expect((await api("POST", path, { key: "ap_wrong" })).status).toBe(401);
    expect((await api("POST", path, { key: reader })).status).toBe(403);
    expect((await api("POST", path, { key: scoped })).status).toBe(404);
    expect(
      (await api("POST", "/api/services/svc_absent/deployments", { key: writer })).status,
    ).toBe(404);
    expect((await api("GET", path, { key: scoped })).status).toBe(404);
    expect((await api("GET", path)).status).toBe(401);
  });
});

describe("a runner taking a job", () => {
  it("moves a deployment queued → building → running and stores its lines in order", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;

    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    expect((await socket.next("welcome")).runnerId).toBe(runner.id);
    const { job } = await socket.next("job.offer");
    expect(job).toMatchObject({ deploymentId: id, serviceId, internalPort: 3000 });
    expect(job.imageTag).toBe(`aeroplane-${serviceId}-${id}`);

    socket.send({ type: "job.accept", deploymentId: id, leaseId: job.leaseId });
    await socket.next("job.start");
    const building = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(building.body.deployment).toMatchObject({
      status: "building",
      imageTag: null,
      startedAt: expect.any(String),
      finishedAt: null,
    });
    // The image tag shows once the runner has built the image.
    socket.send({
      type: "job.phase",
      deploymentId: id,
      leaseId: job.leaseId,
      phase: "starting",
    });
    socket.send({ type: "heartbeat", leaseIds: [job.leaseId] });
    await new Promise((resolve) => setTimeout(resolve, 100));
    const built = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(built.body.deployment.imageTag).toBe(job.imageTag);

    const at = new Date().toISOString();
    const line = (seq: number) => ({
      seq,
      line: `line ${seq}`,
      stream: "stdout" as const,
      at,
    });
    socket.send({
      type: "logs",
      deploymentId: id,
      leaseId: job.leaseId,
      lines: [line(1), line(2)],
    });
    expect((await socket.next("logs.ack")).seq).toBe(2);
    // A resend of 2 with 3 and 4 after it stores 3 and 4 once.
    socket.send({
      type: "logs",
      deploymentId: id,
      leaseId: job.leaseId,
      lines: [line(2), line(3), line(4)],
    });
    expect((await socket.next("logs.ack")).seq).toBe(4);
    // A line past a gap is not stored until the gap is filled.
    socket.send({
      type: "logs",
      deploymentId: id,
      leaseId: job.leaseId,
      lines: [line(6)],
    });
    expect((await socket.next("logs.ack")).seq).toBe(4);

    socket.result(job, "running", {
      lastSeq: 4,
      commitSha: "0123456789abcdef0123456789abcdef01234567",
    });
    expect((await socket.next("job.result.ack")).accepted).toBe(true);

    const done = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(done.body.deployment).toMatchObject({
      status: "running",
      commitSha: "0123456789abcdef0123456789abcdef01234567",
      imageTag: job.imageTag,
      containerName: `aeroplane-${serviceId}-stable`,
      finishedAt: expect.any(String),
    });
    const logs = await api("GET", `/api/deployments/${id}/logs`, { key: reader });
    const runnerLines = logs.body.logs.filter((l: any) => l.line.startsWith("line "));
    expect(runnerLines.map((l: any) => l.line)).toEqual([
      "line 1",
      "line 2",
      "line 3",
      "line 4",
    ]);
    const ids = logs.body.logs.map((l: any) => l.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(logs.body.logs[0]).toEqual({
      id: 1,
      deploymentId: id,
      line: "Deployment queued (trigger: manual)",
      stream: "stdout",
      createdAt: expect.any(String),
    });

    const again = await api("POST", `/api/deployments/${id}/abort`, { key: writer });
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe("conflict");
    socket.close();
  });

  it("aborts a building deployment: accepted, aborted, and the runner is told", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;
    const job = await socket.acceptNext();

    const abort = await api("POST", `/api/deployments/${id}/abort`, { key: writer });
    expect(abort).toMatchObject({ status: 200, body: { accepted: true } });
    expect(await socket.next("job.abort")).toMatchObject({
      deploymentId: id,
      leaseId: job.leaseId,
    });
    const row = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(row.body.deployment.status).toBe("aborted");

    // A late success cannot turn an aborted deployment live.
    socket.result(job, "running");
    expect((await socket.next("job.result.ack")).accepted).toBe(false);
    const after = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(after.body.deployment.status).toBe("aborted");
    socket.close();
  });

  it("aborts a queued deployment, and refuses a read key", async () => {
    const { serviceId } = await seedService(null);
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;
    expect(
      (await api("POST", `/api/deployments/${id}/abort`, { key: reader })).status,
    ).toBe(403);
    expect((await api("POST", `/api/deployments/${id}/abort`)).status).toBe(401);
    expect(
      (await api("POST", `/api/deployments/dep_absent/abort`, { key: writer })).status,
    ).toBe(404);
    const abort = await api("POST", `/api/deployments/${id}/abort`, { key: writer });
    expect(abort.body).toEqual({ accepted: true });
    const row = await api("GET", `/api/deployments/${id}`, { key: reader });
    expect(row.body.deployment).toMatchObject({
      status: "aborted",
      finishedAt: expect.any(String),
    });
  });

  it("closes the socket of a runner that an admin removes", async () => {
    const runner = await seedRunner();
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    await socket.next("welcome");
    const admin = await seedKey("admin");
    expect(
      (await api("DELETE", `/api/runners/${runner.id}`, { key: admin })).status,
    ).toBe(204);
    expect(await socket.closed).toBe(4003);
    const again = await api("GET", "/api/runners/connect", { key: runner.token });
    expect(again.status).toBe(401);
  });

  it("replaces the first socket when the runner connects again", async () => {
    const runner = await seedRunner();
    const first = await ScriptedRunner.connect(runner.token);
    first.hello();
    await first.next("welcome");
    const second = await ScriptedRunner.connect(runner.token);
    expect(await first.closed).toBe(4000);
    second.hello();
    expect((await second.next("welcome")).runnerId).toBe(runner.id);
    second.close();
  });

  it("refuses a runner socket with a bad token", async () => {
    const res = await api("GET", "/api/runners/connect", { key: "apr_nope" });
    expect(res.status).toBe(401);
    expect(res.body.error.code).toBe("unauthorized");
  });
});

describe("GET /api/deployments/:deploymentId/stream", () => {
  async function openStream(
    path: string,
    key: string,
    headers: Record<string, string> = {},
  ) {
    const res = await fetchAs(path, key, headers);
    expect(res.status).toBe(200);
    expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
    const events = res
      .body!.pipeThrough(new TextDecoderStream())
      .pipeThrough(new EventSourceParserStream())
      .getReader();
    return events;
  }

  it("sends a snapshot, then live log events with ids, pings, and resumes after Last-Event-ID", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    const job = await socket.acceptNext();

    const events = await openStream(`/api/deployments/${id}/stream`, reader);
    const snapshot = (await events.read()).value!;
    expect(snapshot.event).toBe("snapshot");
    const lines = JSON.parse(snapshot.data);
    expect(lines.map((l: any) => l.line)).toContain(
      "Deployment queued (trigger: manual)",
    );
    expect(Number(snapshot.id)).toBe(lines.at(-1).id);
    expect((await events.read()).value).toMatchObject({ event: "status" });

    const at = new Date().toISOString();
    socket.send({
      type: "logs",
      deploymentId: id,
      leaseId: job.leaseId,
      lines: [{ seq: 1, line: "RUN step output", stream: "stdout", at }],
    });
    let live;
    do live = (await events.read()).value!;
    while (live.event === "ping");
    expect(live.event).toBe("log");
    const logged = JSON.parse(live.data);
    expect(logged).toMatchObject({
      deploymentId: id,
      line: "RUN step output",
      stream: "stdout",
    });
    expect(Number(live.id)).toBe(logged.id);

    let ping;
    do ping = (await events.read()).value!;
    while (ping.event !== "ping");
    expect(JSON.parse(ping.data).t).toEqual(expect.any(Number));
    await events.cancel();

    // Resuming from the live line's id sends nothing before it.
    const resumed = await openStream(`/api/deployments/${id}/stream`, reader, {
      "Last-Event-ID": String(logged.id - 1),
    });
    const again = (await resumed.read()).value!;
    expect(JSON.parse(again.data).map((l: any) => l.line)).toEqual(["RUN step output"]);
    await resumed.cancel();
    socket.close();
  });

  it("ends the stream of a finished deployment after its snapshot and status", async () => {
    const { serviceId } = await seedService(null);
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;
    await api("POST", `/api/deployments/${id}/abort`, { key: writer });
    const events = await openStream(
      `/api/deployments/${id}/stream?lastEventId=0`,
      reader,
    );
    const seen = [];
    for (let r = await events.read(); !r.done; r = await events.read())
      seen.push(r.value);
    expect(seen.map((e) => e.event)).toEqual(["snapshot", "status"]);
    expect(JSON.parse(seen[1].data)).toEqual({ deploymentId: id, status: "aborted" });
  });

  it("follows a snapshot larger than a client's allowance with its status", async () => {
    const { serviceId } = await seedService(null);
    const created = await api("POST", `/api/services/${serviceId}/deployments`, {
      key: writer,
    });
    const id = created.body.deployment.id;
    const line = "x".repeat(500);
    const log = deploymentLog(env, id);
    for (let batch = 0; batch < 10; batch++) {
      await log.appendPlatform(Array.from({ length: 1_000 }, () => ({ line })));
    }
    const events = await openStream(`/api/deployments/${id}/stream`, reader);
    const snapshot = (await events.read()).value!;
    expect(JSON.parse(snapshot.data).length).toBe(10_002);
    expect((await events.read()).value).toMatchObject({ event: "status" });
    await events.cancel();
  });

  it("answers 401, and 404 for an absent deployment", async () => {
    expect((await api("GET", "/api/deployments/dep_absent/stream")).status).toBe(401);
    expect(
      (await api("GET", "/api/deployments/dep_absent/stream", { key: reader })).status,
    ).toBe(404);
    expect(
      (await api("GET", "/api/deployments/dep_absent/logs", { key: reader })).status,
    ).toBe(404);
    expect(
      (await api("GET", "/api/deployments/dep_absent", { key: reader })).status,
    ).toBe(404);
  });
});

function fetchAs(path: string, key: string, headers: Record<string, string>) {
  return SELF.fetch(`http://aeroplane.test${path}`, {
    headers: { Authorization: `Bearer ${key}`, ...headers },
  });
}
