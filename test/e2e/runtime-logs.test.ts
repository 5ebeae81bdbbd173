/**
 * Runtime logs of a real container, through the real Worker and runner:
 * a snapshot then live lines, one Docker follow shared by two clients and
 * stopped when both leave, and a closing status when the container stops.
 */
import type { ChildProcess } from "node:child_process";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import { deploy } from "./support/deployments";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeDockerfile } from "./support/node-app";
import { readEvents, type SseEvent } from "./support/sse";
import { TestSystem } from "./support/system";
import { waitFor } from "./support/wait";

const docker = new Docker();
let system: TestSystem;
let repo: ServedRepository;
let runner: ChildProcess;
let runnerLog = "";
let serviceId: string;
let hostPort: number;

// Prints a line at start, and per request (health checks aside) one line on
// stdout and one on stderr.
const server = `
console.log("booted");
console.log("Server listening on port 3000");
require("http").createServer((q, s) => {
  if (q.url !== "/health") {
    console.log("GET " + q.url);
    console.error("served " + q.url);
  }
  s.end("ok");
}).listen(3000);`;

beforeAll(async () => {
  await ensureHostNodeImage(docker);
  system = await TestSystem.start();
  const registered = await system.registerRunner();
  runner = system.startRunner(
    registered.token,
    [],
    { AEROPLANE_LOG_LEVEL: "info" },
    {
      stderr: "pipe",
    },
  );
  runner.stderr!.setEncoding("utf8").on("data", (chunk: string) => (runnerLog += chunk));

  repo = await servedRepository();
  await repo.commit({ Dockerfile: nodeDockerfile(), "server.js": server }, "app");
  ({ serviceId, hostPort } = await system.createService(
    { name: "web", repoUrl: repo.url, healthCheckPath: "/health" },
    { projectName: "logs" },
  ));
  const deploymentId = await deploy(system, serviceId);
  await system.waitForDeployment(deploymentId, (d) => d.status === "running");
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

/** Reads events from a stream until `until` says stop; the stream stays open. */
async function collect(
  events: AsyncGenerator<SseEvent>,
  until: (seen: SseEvent[]) => boolean,
): Promise<SseEvent[]> {
  const seen: SseEvent[] = [];
  // next() rather than for-await: breaking out of a for-await would end the stream.
  for (let r = await events.next(); !r.done; r = await events.next()) {
    if (r.value.event !== "ping") seen.push(r.value);
    if (until(seen)) break;
  }
  return seen;
}

const lines = (events: SseEvent[]) =>
  events
    .filter((e) => e.event === "log")
    .map((e) => JSON.parse(e.data) as { id: number; line: string; stream: string });

const count = (text: string, what: string) => text.split(what).length - 1;

describe("GET /api/services/:serviceId/runtime-logs/stream", () => {
  it("sends a snapshot, then live lines, to two clients sharing one follow", async () => {
    const url = `${system.url}/api/services/${serviceId}/runtime-logs/stream?tail=1`;
    const one = new AbortController();
    const two = new AbortController();
    const first = readEvents(url, system.adminKey, { signal: one.signal });
    const [snapshot] = await collect(first, (seen) => seen.length === 1);
    expect(snapshot.event).toBe("snapshot");
    expect(JSON.parse(snapshot.data)).toEqual([
      {
        id: expect.any(Number),
        line: "Server listening on port 3000",
        stream: "stdout",
        createdAt: expect.stringMatching(/Z$/),
      },
    ]);
    const second = readEvents(url, system.adminKey, { signal: two.signal });
    expect((await collect(second, (seen) => seen.length === 1))[0].event).toBe(
      "snapshot",
    );

    await fetch(`http://127.0.0.1:${hostPort}/hello`);
    const wanted = (seen: SseEvent[]) => lines(seen).length >= 2;
    const [a, b] = await Promise.all([collect(first, wanted), collect(second, wanted)]);
    for (const seen of [a, b]) {
      expect(
        lines(seen)
          .map(({ line, stream }) => ({ line, stream }))
          .sort((x, y) => x.stream.localeCompare(y.stream)),
      ).toEqual([
        { line: "served /hello", stream: "stderr" },
        { line: "GET /hello", stream: "stdout" },
      ]);
    }
    // One follow: both clients see the same ids for the same lines.
    expect(lines(a).map((l) => l.id)).toEqual(lines(b).map((l) => l.id));
    expect(count(runnerLog, "Following runtime logs")).toBe(1);

    one.abort();
    two.abort();
    await waitFor(
      "the runner to stop following",
      () => runnerLog.includes("Stopped following runtime logs"),
      10_000,
    );
  });

  it("ends with a closed status when the container stops", async () => {
    const url = `${system.url}/api/services/${serviceId}/runtime-logs/stream`;
    const events = readEvents(url, system.adminKey);
    const [snapshot] = await collect(events, (seen) => seen.length === 1);
    expect(JSON.parse(snapshot.data).map((l: { line: string }) => l.line)).toContain(
      "booted",
    );
    await docker.getContainer(`aeroplane-${serviceId}-stable`).stop({ t: 1 });
    const rest = await collect(events, () => false);
    expect(rest.at(-1)).toMatchObject({ event: "status" });
    expect(JSON.parse(rest.at(-1)!.data)).toEqual({ ok: true, closed: true });
  });

  it("says there is no live container once it is gone", async () => {
    const url = `${system.url}/api/services/${serviceId}/runtime-logs/stream`;
    const events = await collect(readEvents(url, system.adminKey), () => false);
    expect(events.map((e) => e.event)).toEqual(["status"]);
    expect(JSON.parse(events[0].data)).toEqual({
      ok: false,
      reason: "no live container",
    });
  });
});

describe("an app that prints faster than anyone can read", () => {
  it("is relayed at a bounded rate, with the skipped lines counted, and the API stays up", async () => {
    const chatty = await servedRepository("chatty");
    try {
      const script = `
        let n = 0;
        require("http").createServer((q, s) => s.end("ok")).listen(3000);
        setInterval(() => { for (let i = 0; i < 500; i++) console.log("chatty " + n++); }, 10);`;
      await chatty.commit(
        { Dockerfile: nodeDockerfile(), "server.js": script },
        "chatty app",
      );
      const { serviceId: chattyId } = await system.createService(
        { name: "chatty", repoUrl: chatty.url },
        { projectName: "chatty" },
      );
      const deploymentId = await deploy(system, chattyId);
      await system.waitForDeployment(deploymentId, (d) => d.status === "running");

      const stop = new AbortController();
      const url = `${system.url}/api/services/${chattyId}/runtime-logs/stream?tail=0`;
      const events = readEvents(url, system.adminKey, { signal: stop.signal });
      const startedAt = Date.now();
      const seen: SseEvent[] = [];
      let pings = 0;
      for (let r = await events.next(); !r.done; r = await events.next()) {
        if (r.value.event === "ping") pings++;
        else seen.push(r.value);
        // At least 3 s, and until a skipped-lines line came (a loaded host
        // may slow the app below the cap for a while).
        const waited = Date.now() - startedAt;
        const sawSkip = lines(seen).some((l) => l.line.startsWith("[aeroplane] skipped"));
        if ((waited > 3_000 && sawSkip) || waited > 20_000) break;
      }
      const seconds = (Date.now() - startedAt) / 1000;
      const logged = lines(seen);
      const skipped = logged.filter((l) => l.line.startsWith("[aeroplane] skipped"));
      // The app wrote ~50,000 lines a second; at most 1,000 a second came through.
      expect(logged.length - skipped.length).toBeLessThanOrEqual(
        1_000 * Math.ceil(seconds + 1),
      );
      expect(skipped.length).toBeGreaterThan(0);
      expect(skipped[0].stream).toBe("stderr");
      expect(pings).toBeGreaterThan(0);
      expect((await fetch(`${system.url}/healthz`)).status).toBe(200);

      stop.abort();
      await waitFor(
        "the runner to stop following the chatty service",
        () => runnerLog.includes(`Stopped following runtime logs service=${chattyId}`),
        10_000,
      );
    } finally {
      await chatty.stop();
    }
  });
});
