/**
 * The runner's wire protocol: the outbox on its own, then the agent and its
 * reconnecting connection against a scripted control plane on a real
 * WebSocket server, so drops, resends and acks happen exactly when a test
 * says. (test/e2e/deploy.test.ts covers the runner against the real Worker.)
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import Docker from "dockerode";
import { afterAll, afterEach, describe, expect, it, type TestContext } from "vitest";
import { PROTOCOL_VERSION, type Job, type RunnerFrame } from "../../schema/protocol.js";
import { Agent, type RunJob } from "../../runner/agent.js";
import {
  backoffDelay,
  ControlConnection,
  controlSocketUrl,
} from "../../runner/connection.js";
import { createDockerClient } from "../../runner/docker.js";
import { parseRunnerArgs } from "../../runner/main.js";
import { Outbox } from "../../runner/outbox.js";
import { runnerMarkOf } from "../../runner/reconcile.js";
import { freePort } from "../../scripts/local-control-plane.js";
import { baseImage, ensureBaseImage, removeServices } from "./support/docker-fixtures.js";
import { servedRepository } from "./support/git-server.js";
import { ScriptedControlPlane } from "./support/scripted-control-plane.js";

const at = new Date("2026-06-10T08:45:00.000Z");
const lease = { deploymentId: "dep_1", leaseId: "lse_1" };

type Logs = Extract<RunnerFrame, { type: "logs" }>;
const seqs = (frames: RunnerFrame[]) =>
  frames.flatMap((frame) =>
    frame.type === "logs" ? frame.lines.map((line) => line.seq) : [],
  );

describe("Outbox", () => {
  it("numbers lines from 1 and batches them in order, at most 500 to a frame", () => {
    const outbox = new Outbox();
    outbox.open(lease);
    for (let i = 0; i < 1_200; i++) outbox.append("lse_1", `line ${i + 1}`, "stdout", at);

    const frames = outbox.drain() as Logs[];

    expect(frames.map((frame) => frame.lines.length)).toEqual([500, 500, 200]);
    expect(seqs(frames)).toEqual(Array.from({ length: 1_200 }, (_, i) => i + 1));
    expect(frames[0].lines[0]).toEqual({
      seq: 1,
      line: "line 1",
      stream: "stdout",
      at: "2026-06-10T08:45:00.000Z",
    });
    expect(outbox.drain()).toEqual([]);
  });

  it("resends after a rewind exactly the lines not acknowledged, in seq order", () => {
    const outbox = new Outbox();
    outbox.open(lease);
    for (let i = 0; i < 10; i++) outbox.append("lse_1", `line ${i + 1}`, "stdout", at);
    outbox.drain();
    outbox.ackLines("lse_1", 4);
    outbox.append("lse_1", "line 11", "stderr", at);

    outbox.rewind();

    expect(seqs(outbox.drain())).toEqual([5, 6, 7, 8, 9, 10, 11]);
  });

  it("sends the result after the last line and keeps it until it is acknowledged", () => {
    const outbox = new Outbox();
    outbox.open(lease);
    outbox.append("lse_1", "building", "stdout", at);
    outbox.append("lse_1", "boom", "stderr", at);
    outbox.finish("lse_1", { outcome: "failed", commitSha: "abc", reason: "boom" });
    // Nothing is added after the result.
    expect(outbox.append("lse_1", "late", "stdout", at)).toBeNull();

    const result = {
      type: "job.result",
      ...lease,
      outcome: "failed",
      commitSha: "abc",
      reason: "boom",
      lastSeq: 2,
    };
    expect(outbox.drain().map((frame) => frame.type)).toEqual(["logs", "job.result"]);
    expect(outbox.drain()).toEqual([]);

    outbox.ackLines("lse_1", 2);
    outbox.rewind();
    expect(outbox.drain()).toEqual([result]);
    expect(outbox.isSettled("lse_1")).toBe(false);
    expect(outbox.leases()).toEqual([lease]);

    outbox.ackResult("lse_1");
    expect(outbox.isSettled("lse_1")).toBe(true);
    expect(outbox.leases()).toEqual([]);
    outbox.rewind();
    expect(outbox.drain()).toEqual([]);
  });

  it("stays linear with a 100,000-line backlog acknowledged one line at a time", () => {
    // The agent asks how many lines wait after every append; with the
    // connection down they pile up. Both used to cost O(backlog) per call.
    const outbox = new Outbox();
    outbox.open(lease);
    const started = performance.now();
    for (let i = 0; i < 100_000; i++) {
      outbox.append("lse_1", `line ${i + 1}`, "stdout", at);
      outbox.unsentLines();
    }
    const frames = outbox.drain();
    for (let seq = 1; seq <= 100_000; seq++) outbox.ackLines("lse_1", seq);
    const elapsed = performance.now() - started;

    expect(seqs(frames)).toEqual(Array.from({ length: 100_000 }, (_, i) => i + 1));
    expect(outbox.unsentLines()).toBe(0);
    outbox.rewind();
    expect(outbox.drain()).toEqual([]);
    // Quadratic bookkeeping took over 30 s here; linear takes well under 1 s.
    expect(elapsed).toBeLessThan(3_000);
  });

  it("skips lines acknowledged beyond what this connection sent", () => {
    const outbox = new Outbox();
    outbox.open(lease);
    for (let i = 0; i < 10; i++) outbox.append("lse_1", `line ${i + 1}`, "stdout", at);
    outbox.drain();
    outbox.rewind();
    // The control plane stored 1–7 before the reconnect; it acks them now.
    outbox.ackLines("lse_1", 7);
    expect(seqs(outbox.drain())).toEqual([8, 9, 10]);
    // A stale, lower ack changes nothing.
    outbox.ackLines("lse_1", 3);
    outbox.rewind();
    expect(seqs(outbox.drain())).toEqual([8, 9, 10]);
  });

  it("cuts very long lines and keeps frames small", () => {
    const outbox = new Outbox();
    outbox.open(lease);
    for (let i = 0; i < 100; i++)
      outbox.append("lse_1", "x".repeat(20_000), "stdout", at);
    const frames = outbox.drain() as Logs[];
    expect(frames[0].lines[0].line).toMatch(/^x{8192}… \[truncated\]$/);
    for (const frame of frames)
      expect(JSON.stringify(frame).length).toBeLessThan(300 * 1024);
    expect(seqs(frames)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });
});

function testJob(n: number): Job {
  return {
    deploymentId: `dep_${n}`,
    leaseId: `lse_${n}`,
    serviceId: `svc_${n}`,
    repoUrl: "git://127.0.0.1/app",
    branch: "main",
    commitSha: null,
    rootDir: ".",
    dockerfilePath: "Dockerfile",
    internalPort: 3000,
    hostPort: 40_000 + n,
    healthCheckPath: "/",
    env: {},
    imageTag: `aeroplane-svc_${n}-dep_${n}`,
    containerName: `aeroplane-svc_${n}-stable`,
    buildTimeoutMs: 60_000,
    healthCheckTimeoutMs: 10_000,
  };
}

/** A job body the test releases step by step; honours aborts. */
function controllableJob() {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const signals: AbortSignal[] = [];
  const run: RunJob = async (job, io) => {
    signals.push(io.signal);
    io.phase("cloning");
    for (let seq = 1; seq <= 3; seq++) io.log(`early ${seq}`, "stdout");
    const aborted = new Promise<void>((resolve) =>
      io.signal.addEventListener("abort", () => resolve()),
    );
    await Promise.race([released, aborted]);
    if (io.signal.aborted) {
      io.log("Deployment aborted; removed nothing", "stdout");
      return { outcome: "aborted", commitSha: null, reason: "aborted" };
    }
    io.phase("building", "f".repeat(40));
    for (let seq = 4; seq <= 1_200; seq++) io.log(`late ${seq}`, "stdout");
    return { outcome: "running", commitSha: "f".repeat(40) };
  };
  return { run, release, signals };
}

const running: { stop(): Promise<void> }[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((item) => item.stop()));
});

async function startRunner(runJob: RunJob, capacity = 2, socketPath?: string) {
  const plane = await ScriptedControlPlane.start();
  const agent = new Agent({
    capacity,
    version: "9.9.9",
    docker: createDockerClient({ socketPath }),
    runJob,
    flushIntervalMs: 20,
  });
  if (socketPath) await agent.checkDocker();
  const connection = new ControlConnection({
    url: plane.url,
    token: "apr_test",
    handlers: agent,
    baseDelayMs: 10,
    maxDelayMs: 50,
  });
  connection.start();
  running.push(plane, {
    stop: async () => {
      await agent.shutdown(1_000);
      await connection.stop();
    },
  });
  return { plane, agent };
}

describe("the runner protocol client", () => {
  it("says hello with its token, version, capacity and protocol", async () => {
    const { plane } = await startRunner(controllableJob().run, 3);
    const hello = await plane.next("hello");
    expect(hello).toMatchObject({
      protocol: PROTOCOL_VERSION,
      version: "9.9.9",
      capacity: 3,
      leases: [],
    });
    expect(plane.authorizations).toEqual(["Bearer apr_test"]);
  });

  it("loses no line across a reconnect: only unacknowledged lines are resent, in order", async () => {
    const job = controllableJob();
    const { plane } = await startRunner(job.run);
    await plane.welcome(0);
    await plane.startJob(testJob(1));

    // The first lines arrive and are acknowledged.
    const early = await plane.next("logs");
    expect(early.lines.map((line) => line.line)).toEqual([
      "early 1",
      "early 2",
      "early 3",
    ]);
    plane.send({ type: "logs.ack", deploymentId: "dep_1", leaseId: "lse_1", seq: 3 });
    const phase = await plane.next("job.phase");
    expect(phase).toMatchObject({ phase: "cloning", deploymentId: "dep_1" });

    // The rest goes out unacknowledged, then the connection breaks.
    const mark = plane.frames.length;
    job.release();
    const firstResult = await plane.next("job.result", mark);
    const firstTry = plane.frames.slice(mark, firstResult.index);
    expect(seqs(firstTry)).toEqual(Array.from({ length: 1_197 }, (_, i) => i + 4));
    for (const frame of firstTry) {
      if (frame.type === "logs") expect(frame.lines.length).toBeLessThanOrEqual(500);
    }
    const building = firstTry.find((frame) => frame.type === "job.phase");
    expect(building).toMatchObject({ phase: "building", commitSha: "f".repeat(40) });
    plane.drop();

    // The runner comes back, still owing the lines and the result.
    const reconnect = plane.frames.length;
    const hello = await plane.welcome(reconnect);
    expect(hello.leases).toEqual([{ deploymentId: "dep_1", leaseId: "lse_1" }]);
    const result = await plane.next("job.result", reconnect);
    const resent = plane.frames.slice(reconnect, result.index);
    expect(seqs(resent)).toEqual(Array.from({ length: 1_197 }, (_, i) => i + 4));
    expect(result).toMatchObject({
      outcome: "running",
      lastSeq: 1_200,
      commitSha: "f".repeat(40),
    });

    // Once everything is acknowledged, the runner owes nothing for the lease.
    plane.send({ type: "logs.ack", deploymentId: "dep_1", leaseId: "lse_1", seq: 1_200 });
    plane.send({
      type: "job.result.ack",
      deploymentId: "dep_1",
      leaseId: "lse_1",
      accepted: true,
    });
    const settled = plane.frames.length;
    await plane.next("heartbeat", settled, (frame) => frame.leaseIds.length === 0);
    plane.drop();
    const last = await plane.next("hello", settled);
    expect(last.leases).toEqual([]);
  });

  it("renews running leases with heartbeats while a job works", async () => {
    const { plane } = await startRunner(controllableJob().run);
    await plane.welcome(0);
    await plane.startJob(testJob(1));
    const heartbeat = await plane.next(
      "heartbeat",
      0,
      (frame) => frame.leaseIds.length > 0,
    );
    expect(heartbeat.leaseIds).toEqual(["lse_1"]);
  });

  it("aborts and forgets a job whose lease the control plane no longer knows", async () => {
    const job = controllableJob();
    const { plane } = await startRunner(job.run);
    await plane.welcome(0);
    await plane.startJob(testJob(1));
    await plane.next("logs");
    plane.drop();

    const reconnect = plane.frames.length;
    const hello = await plane.welcome(reconnect, ["lse_1"]);
    expect(hello.leases).toEqual([{ deploymentId: "dep_1", leaseId: "lse_1" }]);
    await expect.poll(() => job.signals[0]?.aborted).toBe(true);

    // It sends nothing more for that lease, and no longer lists it.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const after = plane.frames.slice(reconnect + 1);
    expect(after.length).toBeGreaterThan(0);
    for (const frame of after) expect(frame).toEqual({ type: "heartbeat", leaseIds: [] });
  });

  it("stops a running job on job.abort and reports it aborted", async () => {
    const job = controllableJob();
    const { plane } = await startRunner(job.run);
    await plane.welcome(0);
    await plane.startJob(testJob(1));
    await plane.next("logs");
    plane.send({ type: "job.abort", deploymentId: "dep_1", leaseId: "lse_1" });
    const result = await plane.next("job.result");
    expect(result).toMatchObject({ outcome: "aborted", lastSeq: 4 });
  });

  it("on shutdown aborts its jobs, reports them, and takes no new ones", async () => {
    const { plane, agent } = await startRunner(controllableJob().run);
    await plane.welcome(0);
    await plane.startJob(testJob(1));
    await plane.next("logs");

    const stopped = agent.shutdown(5_000);
    plane.send({ type: "job.offer", job: testJob(2) });
    expect(await plane.next("job.reject")).toMatchObject({
      leaseId: "lse_2",
      reason: "The runner is shutting down",
    });
    await stopped;
    expect(await plane.next("job.result")).toMatchObject({
      leaseId: "lse_1",
      outcome: "aborted",
    });
  });

  it("rejects offers beyond its capacity and accepts again when a slot frees", async () => {
    const job = controllableJob();
    const { plane } = await startRunner(job.run, 1);
    await plane.welcome(0);
    await plane.startJob(testJob(1));

    plane.send({ type: "job.offer", job: testJob(2) });
    expect(await plane.next("job.reject")).toMatchObject({
      leaseId: "lse_2",
      reason: "All 1 job slots are busy",
    });

    job.release();
    await plane.next("job.result");
    const mark = plane.frames.length;
    plane.send({ type: "job.offer", job: testJob(3) });
    expect(await plane.next("job.accept", mark)).toMatchObject({ leaseId: "lse_3" });

    // A cancelled offer frees its slot too.
    plane.send({ type: "job.cancel", deploymentId: "dep_3", leaseId: "lse_3" });
    const afterCancel = plane.frames.length;
    plane.send({ type: "job.offer", job: testJob(4) });
    expect(await plane.next("job.accept", afterCancel)).toMatchObject({
      leaseId: "lse_4",
    });
  });

  it("turns offers down while Docker is unreachable, saying how to fix it", async () => {
    const { plane } = await startRunner(
      controllableJob().run,
      2,
      "/nonexistent/docker.sock",
    );
    await plane.welcome(0);
    plane.send({ type: "job.offer", job: testJob(1) });
    const reject = await plane.next("job.reject");
    expect(reject.reason).toMatch(
      /^Docker is not reachable at \/nonexistent\/docker.sock \(ENOENT\)\. Start the Docker daemon/,
    );
  });
});

/**
 * A runner process on `url`, killed when the test ends if it still runs;
 * `stderr()` is its log so far.
 */
function spawnRunner(
  { onTestFinished }: TestContext,
  url: string,
  token: string,
  env: NodeJS.ProcessEnv = {},
) {
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "runner/main.ts", "--url", url, "--token", token],
    {
      env: { ...process.env, AEROPLANE_LOG_LEVEL: "warn", ...env },
      stdio: ["ignore", "inherit", "pipe"],
    },
  );
  let log = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    log += chunk;
    process.stderr.write(chunk);
  });
  const exited = once(child, "exit") as Promise<[number | null, string | null]>;
  onTestFinished(() => void child.kill("SIGKILL"));
  return { child, exited, stderr: () => log };
}

/** A git:// server that accepts connections and never answers: a clone hangs. */
async function silentGitServer({ onTestFinished }: TestContext) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.resume();
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  onTestFinished(() => {
    // git runs in its own process group and outlives a killed runner;
    // losing its connection is what makes it give up.
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `git://127.0.0.1:${port}/app`;
}

describe("a control connection the control plane ends for good", () => {
  /** A bare connection on `plane` that records what it reports. */
  function connect(plane: ScriptedControlPlane) {
    const seen = { connected: 0, disconnected: 0, ended: [] as string[] };
    const connection = new ControlConnection({
      url: plane.url,
      token: "apr_test",
      handlers: {
        connected: (send) => {
          seen.connected += 1;
          send({ type: "heartbeat", leaseIds: [] });
        },
        received: () => undefined,
        disconnected: () => void (seen.disconnected += 1),
      },
      baseDelayMs: 10,
      maxDelayMs: 20,
      onEnded: (reason) => seen.ended.push(reason),
    });
    running.push(plane, { stop: () => connection.stop() });
    connection.start();
    return seen;
  }

  /** Long enough for several reconnects at a 10–20 ms backoff. */
  const settle = () => new Promise((resolve) => setTimeout(resolve, 300));

  it("reconnects after an ordinary close, as before", async () => {
    const plane = await ScriptedControlPlane.start();
    const seen = connect(plane);
    await plane.next("heartbeat");
    plane.close(1011, "Internal error");
    await plane.next("heartbeat", 1);
    expect(seen).toMatchObject({ connected: 2, disconnected: 1, ended: [] });
  });

  it("stops on 4000, when a newer runner with the same token replaced it", async () => {
    const plane = await ScriptedControlPlane.start();
    const seen = connect(plane);
    await plane.next("heartbeat");
    plane.close(4000, "Replaced by a newer connection");
    await settle();
    expect(seen).toEqual({
      connected: 1,
      disconnected: 1,
      ended: ["Another runner connected with this token; this one stops"],
    });
    expect(plane.connections).toBe(1);
  });

  it("stops on 4003, when the runner was removed", async () => {
    const plane = await ScriptedControlPlane.start();
    const seen = connect(plane);
    await plane.next("heartbeat");
    plane.close(4003, "The runner was removed");
    await settle();
    expect(seen.ended).toEqual([
      "The control plane removed this runner; register the runner again to use this host",
    ]);
    expect(plane.connections).toBe(1);
  });

  it("stops when the handshake is answered 401, and retries a 503", async () => {
    const plane = await ScriptedControlPlane.start();
    plane.refuseWith = 503;
    const seen = connect(plane);
    await expect.poll(() => plane.connections).toBeGreaterThan(2);
    expect(seen.ended).toEqual([]);

    plane.refuseWith = 401;
    await expect
      .poll(() => seen.ended)
      .toEqual([
        "The control plane refused this runner's token; register the runner again",
      ]);
    const attempts = plane.connections;
    await settle();
    expect(plane.connections).toBe(attempts);
    expect(seen.connected).toBe(0);
  });
});

describe("the runner process", () => {
  const serviceId = `svc_sigterm${process.pid}`;
  afterAll(() => removeServices([serviceId]));

  it("stops, cleaning up its job, when a newer runner with its token connects; the newer stays", async (context) => {
    const { expect, onTestFinished } = context;
    const plane = await ScriptedControlPlane.start();
    onTestFinished(() => plane.stop());
    const token = `apr_${randomBytes(12).toString("hex")}`;
    const prefix = `aeroplane-${runnerMarkOf(token)}-`;
    const tmp = async () => {
      const dir = await mkdtemp(path.join(tmpdir(), "aeroplane-test-tmp-"));
      onTestFinished(() => rm(dir, { recursive: true, force: true }));
      return dir;
    };
    const [olderTmp, newerTmp] = [await tmp(), await tmp()];

    const older = spawnRunner(context, plane.url, token, { TMPDIR: olderTmp });
    await plane.welcome(0);
    const job = { ...testJob(8), repoUrl: await silentGitServer(context) };
    job.hostPort = await freePort();
    await plane.startJob(job);
    await plane.next("logs", 0, (frame) =>
      frame.lines.some((line) => line.line.startsWith("Cloning ")),
    );
    expect((await readdir(olderTmp)).some((n) => n.startsWith(prefix))).toBe(true);

    const from = plane.frames.length;
    const newer = spawnRunner(context, plane.url, token, { TMPDIR: newerTmp });
    await plane.welcome(from);
    const [code] = await older.exited;

    expect(code).toBe(78);
    expect(older.stderr()).toMatch(
      /ERROR runner:ws Another runner connected with this token; this one stops/,
    );
    // Its job was aborted like on SIGTERM: the clone is gone.
    expect((await readdir(olderTmp)).filter((n) => n.startsWith(prefix))).toEqual([]);
    // It did not come back to take the connection from the newer one.
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(plane.connections).toBe(2);
    expect(newer.child.exitCode).toBeNull();
    newer.child.kill("SIGTERM");
    expect((await newer.exited)[0]).toBe(0);
  });

  it("exits at once when the control plane refuses its token, saying what to do", async (context) => {
    const { expect, onTestFinished } = context;
    const plane = await ScriptedControlPlane.start();
    onTestFinished(() => plane.stop());
    plane.refuseWith = 401;
    const runner = spawnRunner(context, plane.url, "apr_refused");
    const [code] = await runner.exited;
    expect(code).toBe(78);
    expect(runner.stderr()).toMatch(
      /ERROR runner:ws The control plane refused this runner's token; register the runner again/,
    );
    expect(plane.connections).toBe(1);
  });

  it("removes, when it starts, the clone directory a predecessor killed by SIGKILL left", async (context) => {
    const { expect, onTestFinished } = context;
    const tmp = await mkdtemp(path.join(tmpdir(), "aeroplane-test-tmp-"));
    onTestFinished(() => rm(tmp, { recursive: true, force: true }));
    const plane = await ScriptedControlPlane.start();
    onTestFinished(() => plane.stop());
    const token = `apr_${randomBytes(12).toString("hex")}`;
    const prefix = `aeroplane-${runnerMarkOf(token)}-`;
    const clones = async () => (await readdir(tmp)).filter((n) => n.startsWith(prefix));

    const killed = spawnRunner(context, plane.url, token, { TMPDIR: tmp });
    await plane.welcome(0);
    const job = { ...testJob(7), repoUrl: await silentGitServer(context) };
    job.hostPort = await freePort();
    await plane.startJob(job);
    await plane.next("logs", 0, (frame) =>
      frame.lines.some((line) => line.line.startsWith("Cloning ")),
    );
    const left = await clones();
    expect(left).toHaveLength(1);
    killed.child.kill("SIGKILL");
    await killed.exited;
    expect(await clones()).toEqual(left);
    // A restart comes later than this; the runner allows file times 100 ms
    // of clock slack, so a start sooner after the clone could spare it.
    await new Promise((resolve) => setTimeout(resolve, 200));

    const from = plane.frames.length;
    const next = spawnRunner(context, plane.url, token, { TMPDIR: tmp });
    await plane.next("hello", from);
    expect(await clones()).toEqual([]);
    next.child.kill("SIGTERM");
    expect((await next.exited)[0]).toBe(0);
  });

  it("on SIGTERM aborts the running deployment, cleans up, reports it and exits", async (context) => {
    const { expect, onTestFinished } = context;
    await ensureBaseImage();
    const repo = await servedRepository();
    onTestFinished(() => repo.stop());
    await repo.commit(
      {
        Dockerfile: [
          `FROM ${baseImage}`,
          `RUN ["node", "-e", "console.log('slow step started'); setTimeout(() => {}, 120000)"]`,
        ].join("\n"),
      },
      "slow build",
    );
    const plane = await ScriptedControlPlane.start();
    onTestFinished(() => plane.stop());
    // A token of its own: a runner sharing it would clean up this one's work.
    const token = `apr_${randomBytes(12).toString("hex")}`;
    const { child, exited } = spawnRunner(context, plane.url, token);

    const hello = await plane.welcome(0);
    expect(hello.version).toBe("0.1.0");
    const job = { ...testJob(1), serviceId, repoUrl: repo.url };
    job.imageTag = `aeroplane-${serviceId}-${job.deploymentId}`;
    await plane.startJob(job);
    await plane.next("logs", 0, (frame) =>
      frame.lines.some((line) => line.line === "slow step started"),
    );

    const signalledAt = Date.now();
    child.kill("SIGTERM");
    const [code] = await exited;
    expect(code).toBe(0);
    expect(Date.now() - signalledAt).toBeLessThan(10_000);

    const result = await plane.next("job.result");
    expect(result).toMatchObject({ outcome: "aborted", leaseId: job.leaseId });
    const lines = plane.frames.flatMap((frame) =>
      frame.type === "logs" ? frame.lines : [],
    );
    expect(lines.at(-1)).toMatchObject({
      seq: result.lastSeq,
      line: expect.stringMatching(/^Deployment aborted; removed /),
    });
    const docker = new Docker();
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`aeroplane.service-id=${serviceId}`] },
    });
    expect(left).toEqual([]);
    const images = await docker.listImages({ filters: { reference: [job.imageTag] } });
    expect(images).toEqual([]);
  });
});

describe("runner settings and reconnects", () => {
  it("reads flags, falling back to the environment", () => {
    const env = {
      AEROPLANE_URL: "https://pilot.example.com",
      AEROPLANE_RUNNER_TOKEN: "apr_env",
      AEROPLANE_RUNNER_CAPACITY: "4",
    };
    expect(parseRunnerArgs([], env)).toEqual({
      url: "https://pilot.example.com",
      token: "apr_env",
      capacity: 4,
      dockerSocket: undefined,
      allowFileRepos: false,
    });
    expect(
      parseRunnerArgs(
        [
          "--token",
          "apr_flag",
          "--capacity",
          "1",
          "--docker-socket",
          "/d.sock",
          "--allow-file-repos",
        ],
        env,
      ),
    ).toEqual({
      url: env.AEROPLANE_URL,
      token: "apr_flag",
      capacity: 1,
      dockerSocket: "/d.sock",
      allowFileRepos: true,
    });
    expect(() => parseRunnerArgs(["--url", "https://x"], {})).toThrow(/--token/);
    expect(() => parseRunnerArgs(["--capacity", "0"], env)).toThrow(/--capacity/);
  });

  it("connects to the runner endpoint under the control plane URL", () => {
    expect(controlSocketUrl("https://pilot.example.com/")).toBe(
      "wss://pilot.example.com/api/runners/connect",
    );
    expect(controlSocketUrl("http://127.0.0.1:8787")).toBe(
      "ws://127.0.0.1:8787/api/runners/connect",
    );
  });

  it("backs off exponentially with full jitter, up to the cap", () => {
    expect(
      [0, 1, 2, 3, 10].map((n) => backoffDelay(n, 250, 15_000, () => 0.999)),
    ).toEqual([249, 499, 999, 1998, 14_985]);
    expect(backoffDelay(5, 250, 15_000, () => 0)).toBe(0);
  });
});
