/**
 * The runner's deployment lifecycle against the real Docker engine: abort in
 * each phase the runner owns, the build and health-check timeouts, redeploys
 * that reuse an image, and image retention.
 */
import http from "node:http";
import net from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import type { Clock } from "../../runner/clock.js";
import { aeroplaneLabels } from "../../runner/docker.js";
import { waitUntilHealthy, type ProbeResult } from "../../runner/health.js";
import { settleSwap } from "../../runner/settle.js";
import {
  app,
  client,
  deploy,
  imageExists,
  leftovers,
  newService,
  randomId,
  text,
  useRunnerFixtures,
  type TestService,
} from "./support/runner-fixtures.js";

useRunnerFixtures();

/** A git:// server that accepts connections and never says a word. */
async function silentGitServer() {
  const sockets = new Set<net.Socket>();
  let closed = 0;
  const server = net.createServer((socket) => {
    sockets.add(socket);
    // Reading is what lets the socket see the other end go away.
    socket.resume();
    socket.on("close", () => (closed += 1));
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `git://127.0.0.1:${port}/app`,
    connections: () => sockets.size,
    closed: () => closed,
    stop: () => {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Deploys `reply` as the service's live version and settles it. */
async function goLive(service: TestService, reply: string) {
  const sha = await service.repo.commit(app(reply), `version ${reply}`);
  const job = service.job();
  const run = await deploy(job);
  expect(run.result.outcome).toBe("running");
  await settleSwap({ docker: client, job, replaced: run.result.replaced ?? null }, true);
  return { job, sha };
}

/** Aborts `controller` `delayMs` after the first log line that `matches`. */
function abortAfter(controller: AbortController, matches: RegExp, delayMs: number) {
  const at = { time: 0 };
  return {
    at,
    onLine: (line: string) => {
      if (at.time !== 0 || !matches.test(line)) return;
      at.time = Date.now() + delayMs;
      setTimeout(() => controller.abort(), delayMs);
    },
  };
}

describe.concurrent("the deployment lifecycle", () => {
  it("aborts during the clone within seconds: git is stopped, the live version keeps serving", async ({
    expect,
  }) => {
    const service = await newService();
    await goLive(service, "v1");
    const git = await silentGitServer();
    try {
      const job = service.job({ repoUrl: git.url });
      const controller = new AbortController();
      const abort = abortAfter(controller, /^Cloning /, 500);

      const run = await deploy(job, { signal: controller.signal, onLine: abort.onLine });

      expect(git.connections()).toBe(1);
      expect(run.result.outcome).toBe("aborted");
      expect(Date.now() - abort.at.time).toBeLessThan(10_000);
      expect(run.phases.map((p) => p.phase)).toEqual(["cloning"]);
      expect(run.lines.at(-1)?.line).toBe(
        "Deployment aborted; removed nothing (none was made yet)",
      );
      // git's connection went with it: the process was killed, not orphaned.
      await expect.poll(() => git.closed(), { timeout: 5_000 }).toBe(1);
      expect(await leftovers(job.deploymentId)).toEqual([]);
      expect(await service.answer()).toBe("v1");
      expect((await service.containers()).length).toBe(1);
    } finally {
      git.stop();
    }
  });

  it("aborts during the health check within seconds, removing the candidate and its image", async () => {
    const service = await newService();
    await goLive(service, "v1");
    const silent = `CMD ["node", "-e", "console.log('up but silent'); setInterval(() => {}, 1000)"]`;
    await service.repo.commit(app("v2", { cmd: silent }), "silent app");
    const job = service.job({ healthCheckTimeoutMs: 60_000 });
    const controller = new AbortController();
    const abort = abortAfter(controller, /^Health check: /, 1_000);

    const run = await deploy(job, { signal: controller.signal, onLine: abort.onLine });

    expect(run.result.outcome).toBe("aborted");
    expect(Date.now() - abort.at.time).toBeLessThan(10_000);
    expect(run.phases.at(-1)?.phase).toBe("health-check");
    expect(run.lines.at(-1)?.line).toBe(
      `Deployment aborted; removed container aeroplane-${service.serviceId}-` +
        `${job.deploymentId} and image ${job.imageTag}`,
    );
    expect(await leftovers(job.deploymentId)).toEqual([]);
    expect(await service.answer()).toBe("v1");
    expect((await service.containers()).length).toBe(1);
  });

  it("fails a build that outlasts the build timeout, naming it, and removes its step images", async () => {
    const service = await newService();
    await goLive(service, "v1");
    // A step of its own finishes (its image stays as cache) before the slow one.
    const marker = `step of ${service.serviceId}`;
    const steps = [
      `RUN ["node", "-e", "console.log('${marker}')"]`,
      `RUN ["node", "-e", "console.log('slow step started'); setTimeout(() => {}, 120000)"]`,
    ].join("\n");
    await service.repo.commit(app("v2", { run: steps }), "slow build");
    const job = service.job({ buildTimeoutMs: 5_000 });

    const started = Date.now();
    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(run.lines.at(-1)).toEqual({
      line: "Build timed out after 5 s",
      stream: "stderr",
    });
    expect(run.result.reason).toBe("Build timed out after 5 s");
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await leftovers(job.deploymentId)).toEqual([]);
    expect(await service.answer()).toBe("v1");

    // The finished step's image went too, although the cut-off step's
    // container was still being removed when the cleanup began.
    const lines = text(run);
    expect(lines).toContain("slow step started");
    const stepImage = lines
      .slice(lines.indexOf(marker))
      .map((line) => /^ ---> ([0-9a-f]{12})$/.exec(line)?.[1])
      .find(Boolean);
    expect(stepImage).toBeDefined();
    expect(await imageExists(stepImage!)).toBe(false);
  });

  it("rolls back a new -stable that exits after the swap, with its exit code and last output", async () => {
    const service = await newService();
    await goLive(service, "v1");
    // The app asks the test whether to start: yes for the candidate, no
    // for the -stable that follows it, which then exits.
    let starts = 0;
    const counter = http.createServer((request, response) => {
      starts += 1;
      response.end(starts === 1 ? "start" : "crash");
    });
    await new Promise<void>((resolve) => counter.listen(0, "0.0.0.0", resolve));
    const counterPort = (counter.address() as net.AddressInfo).port;
    const files = app("v2");
    files["server.js"] = `
      const http = require("http");
      // The host is the default gateway, as /proc/net/route lists it.
      const route = require("fs").readFileSync("/proc/net/route", "utf8")
        .split("\\n").map((line) => line.split("\\t")).find((f) => f[1] === "00000000");
      const host = route[2].match(/../g).map((b) => parseInt(b, 16)).reverse().join(".");
      http.get("http://" + host + ":" + process.env.COUNTER_PORT + "/", (answer) => {
        let body = "";
        answer.on("data", (chunk) => (body += chunk));
        answer.on("end", () => {
          if (body === "crash") {
            console.error("told to crash on this start");
            process.exit(7);
          }
          http.createServer((q, s) => s.end("v2")).listen(3000);
        });
      });`;
    await service.repo.commit(files, "crashes on its second start");
    try {
      const job = service.job({ env: { COUNTER_PORT: String(counterPort) } });
      const started = Date.now();
      const run = await deploy(job);

      expect(starts).toBe(2);
      expect(run.result.outcome).toBe("failed");
      const stable = `aeroplane-${service.serviceId}-stable`;
      expect(run.result.reason).toBe(`${stable} exited with code 7 after the swap`);
      const lines = text(run);
      const header = lines.findIndex((line) =>
        line.endsWith(`of output from ${stable}:`),
      );
      expect(header).toBeGreaterThan(0);
      expect(lines.slice(header)).toContain("told to crash on this start");
      expect(lines).toContain(`Rolled back: the previous ${stable} serves again`);
      // Fails fast: far less than the 15 s the check would wait.
      expect(Date.now() - started).toBeLessThan(14_000);
      expect(await service.answer()).toBe("v1");
      expect(await leftovers(job.deploymentId)).toEqual([]);
    } finally {
      counter.close();
    }
  });

  it("redeploys an existing image without cloning or building; a failed redeploy keeps it", async () => {
    const service = await newService();
    const { job: original, sha: v1 } = await goLive(service, "v1");
    // The branch moves on; a redeploy must still run v1's image.
    await service.repo.commit(app("v2"), "second version");

    const redeploy = service.job({ imageTag: original.imageTag, commitSha: null });
    const run = await deploy(redeploy);

    expect(run.result).toMatchObject({ outcome: "running", commitSha: v1 });
    expect(text(run)[0]).toBe(`Image ${original.imageTag} exists; skipping the build`);
    expect(text(run).some((line) => line.startsWith("Cloning"))).toBe(false);
    expect(run.phases.map((p) => p.phase)).toEqual([
      "starting",
      "health-check",
      "swapping",
    ]);
    expect(run.phases[0].commitSha).toBe(v1);
    expect(await service.answer()).toBe("v1");
    await settleSwap(
      { docker: client, job: redeploy, replaced: run.result.replaced! },
      true,
    );

    // A redeploy that fails (nothing answers on port 3001) leaves the image.
    const failing = service.job({
      imageTag: original.imageTag,
      internalPort: 3001,
      healthCheckTimeoutMs: 1_500,
    });
    const failed = await deploy(failing);
    expect(failed.result.outcome).toBe("failed");
    expect(failed.result.reason).toMatch(
      /^Health check timed out after 1.5 s: the app did not answer HTTP on port 3001/,
    );
    expect(await leftovers(failing.deploymentId)).toEqual([]);
    expect(await imageExists(original.imageTag)).toBe(true);
    expect(await service.answer()).toBe("v1");
  });

  it("keeps the images of the last 5 deployments, counting the live one however old", async () => {
    const service = await newService();
    // Six images of earlier deployments, built at once, then ordered by age.
    const built = await Promise.all(
      Array.from({ length: 6 }, async (_, i) => {
        const deploymentId = randomId("dep");
        const tag = `aeroplane-${service.serviceId}-${deploymentId}`;
        const dir = await mkdtemp(path.join(tmpdir(), "aeroplane-images-"));
        try {
          for (const [name, content] of Object.entries(app(`image ${i}`))) {
            await writeFile(path.join(dir, name), content);
          }
          await client.buildImage({
            contextDir: dir,
            dockerfile: "Dockerfile",
            tag,
            labels: aeroplaneLabels(service.serviceId, deploymentId, "candidate"),
            onLine: () => undefined,
          });
        } finally {
          await rm(dir, { recursive: true, force: true });
        }
        const { createdAt } = (await client.inspectImage(tag))!;
        return { tag, reply: `image ${i}`, createdAt };
      }),
    );
    const oldestFirst = built.sort((a, b) => a.createdAt - b.createdAt);
    const tags = oldestFirst.map((image) => image.tag);

    // Rolling back to the oldest makes it live: it stays, the next oldest goes.
    const rollback = service.job({ imageTag: tags[0] });
    const run = await deploy(rollback);

    expect(run.result.outcome).toBe("running");
    expect(await service.answer()).toBe(oldestFirst[0].reply);
    expect(text(run)).toContain(
      `Removed 1 old image(s) of this service: ${tags[1]}:latest`,
    );
    const kept = await Promise.all(tags.map(imageExists));
    expect(kept).toEqual([true, false, true, true, true, true]);
  });
});

describe("waitUntilHealthy", () => {
  it("reports the last real answer, not a probe squeezed into the deadline's last moment", async () => {
    // Time only moves when the code under test sleeps or probes.
    let now = 0;
    const clock: Clock = {
      now: () => now,
      sleep: async (ms) => void (now += ms),
    };
    const budgets: number[] = [];
    const probe = async (timeoutMs: number): Promise<ProbeResult> => {
      budgets.push(timeoutMs);
      now += Math.min(timeoutMs, 5);
      // An app that answers in 50 ms: a tighter budget can only time out.
      return timeoutMs < 50
        ? { error: `no answer within ${timeoutMs} ms` }
        : { status: 404 };
    };

    const result = await waitUntilHealthy({
      probe,
      timeoutMs: 2_000,
      clock,
      signal: new AbortController().signal,
    });

    expect(result).toEqual({ outcome: "timeout", last: { status: 404 } });
    expect(Math.min(...budgets)).toBeGreaterThanOrEqual(200);
  });
});
