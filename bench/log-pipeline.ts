/**
 * `npm run bench`: measures the log pipeline, the part of Aeroplane every
 * deploy leans on.
 *
 * 1. The runner's outbox: numbering, batching and acking lines in memory.
 * 2. Ingestion through the real Worker (wrangler dev): a runner socket sends
 *    a build's worth of lines in protocol frames; we time until the last ack,
 *    then time reading them back through /logs and the SSE snapshot.
 *
 * Numbers go to stdout as a table and as JSON on the last line.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { Outbox } from "../runner/outbox";
import {
  PROTOCOL_VERSION,
  parseFrame,
  workerFrame,
  type RunnerFrame,
  type WorkerFrame,
} from "../schema/protocol";
import {
  ControlPlane,
  applyMigrations,
  bootstrap,
  freePort,
} from "../scripts/local-control-plane";

const LINES = Number(process.env.BENCH_LINES ?? 100_000);
const LINE = "Step 7/12 : RUN npm ci --omit=dev && npm run build  # a typical build line";
const results: Record<string, number> = {};

function record(name: string, value: number, unit: string): void {
  results[name] = Math.round(value * 100) / 100;
  process.stdout.write(
    `${name.padEnd(40)} ${String(results[name]).padStart(12)} ${unit}\n`,
  );
}

function benchOutbox(): void {
  globalThis.gc?.();
  const before = process.memoryUsage().heapUsed;
  const outbox = new Outbox();
  outbox.open({ deploymentId: "dep_bench", leaseId: "lse_bench" });
  const at = new Date();
  const start = performance.now();
  for (let i = 1; i <= LINES; i++)
    outbox.append("lse_bench", `${LINE} ${i}`, "stdout", at);
  const appended = performance.now();
  const held = process.memoryUsage().heapUsed - before;
  let frames = 0;
  for (const frame of outbox.drain()) {
    frames++;
    if (frame.type === "logs") outbox.ackLines("lse_bench", frame.lines.at(-1)!.seq);
  }
  const drained = performance.now();
  record("outbox.append lines/s", LINES / ((appended - start) / 1000), "lines/s");
  record("outbox.drain+ack lines/s", LINES / ((drained - appended) / 1000), "lines/s");
  record("outbox.bytes per held line", held / LINES, "bytes");
  record("outbox.frames", frames, "frames");
}

/** A minimal runner: the protocol frames a real runner would send. */
class BenchRunner {
  #socket: WebSocket;
  #waiters = new Map<string, (frame: WorkerFrame) => void>();
  #inbox: WorkerFrame[] = [];

  constructor(url: string, token: string) {
    this.#socket = new WebSocket(`${url.replace(/^http/, "ws")}/api/runners/connect`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    this.#socket.on("message", (data) => {
      const frame = parseFrame(workerFrame, data.toString());
      if (!frame) throw new Error(`Bad frame ${data.toString().slice(0, 100)}`);
      const waiter = this.#waiters.get(frame.type);
      if (waiter) {
        this.#waiters.delete(frame.type);
        waiter(frame);
      } else this.#inbox.push(frame);
    });
  }

  async open(): Promise<void> {
    await new Promise((resolve, reject) => {
      this.#socket.once("open", resolve);
      this.#socket.once("error", reject);
    });
  }

  send(frame: RunnerFrame): void {
    this.#socket.send(JSON.stringify(frame));
  }

  next<T extends WorkerFrame["type"]>(
    type: T,
  ): Promise<Extract<WorkerFrame, { type: T }>> {
    const index = this.#inbox.findIndex((f) => f.type === type);
    if (index >= 0) {
      return Promise.resolve(
        this.#inbox.splice(index, 1)[0] as Extract<WorkerFrame, { type: T }>,
      );
    }
    return new Promise((resolve) =>
      this.#waiters.set(type, resolve as (f: WorkerFrame) => void),
    );
  }

  /** Resolves when an ack reaches `seq`. */
  acked(seq: number): Promise<void> {
    return new Promise((resolve) => {
      const check = (data: WebSocket.RawData) => {
        const frame = parseFrame(workerFrame, data.toString());
        if (frame?.type === "logs.ack" && frame.seq >= seq) {
          this.#socket.off("message", check);
          resolve();
        }
      };
      this.#socket.on("message", check);
    });
  }

  close(): void {
    this.#socket.close();
  }
}

async function benchIngestion(): Promise<void> {
  const persistDir = mkdtempSync(join(tmpdir(), "aeroplane-bench-"));
  applyMigrations(persistDir);
  const controlPlane = new ControlPlane({
    port: await freePort(),
    persistDir,
    vars: { BOOTSTRAP_TOKEN: "bench", ENCRYPTION_KEY: "bench" },
    output: process.env.BENCH_VERBOSE ? "inherit" : "ignore",
  });
  await controlPlane.start();
  try {
    const key = (await bootstrap(controlPlane.url, "bench"))!;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${controlPlane.url}${path}`, {
        method,
        headers: {
          Authorization: `Bearer ${key}`,
          ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await res.json()) as any;
    };
    const { token } = await call("POST", "/api/runners", { name: "bench" });
    const { project } = await call("POST", "/api/projects", { name: "bench" });
    const { service } = await call("POST", `/api/projects/${project.id}/services`, {
      name: "bench",
      repoUrl: "https://example.invalid/bench.git",
      internalPort: 3000,
    });

    const runner = new BenchRunner(controlPlane.url, token);
    await runner.open();
    runner.send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      version: "bench",
      capacity: 1,
      leases: [],
      inventory: [],
    });
    await runner.next("welcome");
    const queuedAt = performance.now();
    const { deployment } = await call("POST", `/api/services/${service.id}/deployments`);
    const { job } = await runner.next("job.offer");
    runner.send({
      type: "job.accept",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
    });
    await runner.next("job.start");
    record("queue → job.start latency", performance.now() - queuedAt, "ms");

    // Frames as the runner's outbox makes them, sent as fast as the socket takes them.
    const outbox = new Outbox();
    outbox.open({ deploymentId: job.deploymentId, leaseId: job.leaseId });
    const at = new Date();
    for (let i = 1; i <= LINES; i++)
      outbox.append(job.leaseId, `${LINE} ${i}`, "stdout", at);
    const allAcked = runner.acked(LINES);
    const start = performance.now();
    for (const frame of outbox.drain()) runner.send(frame);
    await allAcked;
    const ingest = performance.now() - start;
    record("ingest lines/s (send → last ack)", LINES / (ingest / 1000), "lines/s");

    let t = performance.now();
    const logs = await call("GET", `/api/deployments/${deployment.id}/logs`);
    record(`GET /logs of ${logs.logs.length} lines`, performance.now() - t, "ms");

    t = performance.now();
    const res = await fetch(
      `${controlPlane.url}/api/deployments/${deployment.id}/stream`,
      {
        headers: { Authorization: `Bearer ${key}` },
      },
    );
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    // Look for the status event that follows the snapshot in a sliding window.
    for (let tail = ""; !tail.includes("event: status");) {
      tail =
        tail.slice(-32) + decoder.decode((await reader.read()).value, { stream: true });
    }
    record("SSE snapshot of all lines", performance.now() - t, "ms");
    await reader.cancel();
    runner.close();
  } finally {
    await controlPlane.stop();
    rmSync(persistDir, { recursive: true, force: true });
  }
}

benchOutbox();
await benchIngestion();
process.stdout.write(`${JSON.stringify({ lines: LINES, ...results })}\n`);
