/**
 * The runner's deployment pipeline against the real Docker engine, cloning
 * real repositories over git://. Each test has its own repository, service id
 * and host port, so the tests run concurrently and files run in parallel.
 */
import net from "node:net";
import { describe, expect, it } from "vitest";
import { createRedactor } from "../../runner/redact.js";
import { settleSwap } from "../../runner/settle.js";
import { baseImage } from "./support/docker-fixtures.js";
import {
  app,
  client,
  deploy,
  docker,
  imageExists,
  newService,
  text,
  useRunnerFixtures,
} from "./support/runner-fixtures.js";

useRunnerFixtures();

describe.concurrent("runDeployment", () => {
  it("deploys the branch head: the app answers on hostPort, one labelled container remains", async () => {
    const service = await newService();
    // A step no other build shares, so the cache cannot answer it silently.
    const marker = `build marker for ${service.serviceId}`;
    const run1 = `RUN ["node", "-e", "console.log('${marker}')"]`;
    const sha = await service.repo.commit(app("v1", { run: run1 }), "first version");
    const job = service.job();

    const run = await deploy(job);

    expect(run.result).toEqual({ outcome: "running", commitSha: sha, replaced: null });
    expect(await service.answer()).toBe("v1");
    expect(text(run)).toContain(marker);
    expect(text(run)[0]).toBe(`Cloning ${service.repo.url} at main`);
    expect(text(run)).toContain(`Checked out ${sha}`);
    expect(text(run)).toContain(
      `Starting candidate container aeroplane-${service.serviceId}-${job.deploymentId}`,
    );
    expect(text(run)).toContain("Health check passed: GET / answered HTTP 200");
    expect(run.phases).toEqual([
      { phase: "cloning", commitSha: undefined },
      { phase: "building", commitSha: sha },
      { phase: "starting", commitSha: sha },
      { phase: "health-check", commitSha: sha },
      { phase: "swapping", commitSha: sha },
    ]);

    const containers = await service.containers();
    expect(containers.map((container) => container.Names[0])).toEqual([
      `/aeroplane-${service.serviceId}-stable`,
    ]);
    expect(containers[0].Labels).toMatchObject({
      "aeroplane.managed": "true",
      "aeroplane.service-id": service.serviceId,
      "aeroplane.deployment-id": job.deploymentId,
      "aeroplane.role": "stable",
    });
    const inspected = await docker.getContainer(containers[0].Id).inspect();
    expect(inspected.HostConfig.RestartPolicy?.Name).toBe("unless-stopped");
    const image = await docker.getImage(job.imageTag).inspect();
    expect(image.Config.Labels).toMatchObject({
      "aeroplane.managed": "true",
      "aeroplane.deployment-id": job.deploymentId,
      "aeroplane.commit-sha": sha,
    });
  });

  it("deploys an exact commit, then a newer one replaces it, parked until settled", async () => {
    const service = await newService();
    const first = await service.repo.commit(app("v1"), "first version");
    await service.repo.commit(app("v2"), "second version");

    const pinned = service.job({ commitSha: first });
    const run = await deploy(pinned);
    expect(run.result).toEqual({ outcome: "running", commitSha: first, replaced: null });
    expect(await service.answer()).toBe("v1");

    const headJob = service.job();
    const head = await deploy(headJob);
    expect(head.result).toEqual({
      outcome: "running",
      commitSha: service.repo.head,
      replaced: { deploymentId: pinned.deploymentId, image: pinned.imageTag },
    });
    expect(await service.answer()).toBe("v2");
    // The replaced one waits, stopped, until the control plane records v2.
    const names = async () =>
      (await service.containers()).map((container) => container.Names[0]).sort();
    expect(await names()).toEqual([
      `/aeroplane-${service.serviceId}-previous`,
      `/aeroplane-${service.serviceId}-stable`,
    ]);

    await settleSwap(
      { docker: client, job: headJob, replaced: head.result.replaced! },
      true,
    );
    expect(await names()).toEqual([`/aeroplane-${service.serviceId}-stable`]);
    // Its image stays for a rollback or redeploy.
    expect(await imageExists(pinned.imageTag)).toBe(true);
  });

  it("fails a build with Docker's error as the last line, and the previous one keeps serving", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    expect((await deploy(service.job())).result.outcome).toBe("running");

    // A step of its own (no cache can answer it) before the failing one.
    const marker = `step of ${service.serviceId}`;
    const failing = [
      `RUN ["node", "-e", "console.log('${marker}')"]`,
      `RUN ["node", "-e", "console.error('boom in build'); process.exit(3)"]`,
    ].join("\n");
    await service.repo.commit(app("v2", { run: failing }), "broken build");
    const job = service.job();
    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(text(run)).toContain("boom in build");
    const last = run.lines.at(-1)!;
    expect(last.stream).toBe("stderr");
    expect(last.line).toMatch(/^Build failed: .*returned a non-zero code: 3/);
    expect(run.result.reason).toBe(last.line);
    expect(await service.answer()).toBe("v1");
    expect((await service.containers()).length).toBe(1);
    expect(await imageExists(job.imageTag)).toBe(false);

    // The image the finished step left as cache went with the attempt.
    const lines = text(run);
    const stepImage = lines
      .slice(lines.indexOf(marker))
      .map((line) => /^ ---> ([0-9a-f]{12})$/.exec(line)?.[1])
      .find(Boolean);
    expect(stepImage).toBeDefined();
    expect(await imageExists(stepImage!)).toBe(false);
  });

  it("fails an app that never answers HTTP, naming the port and the time allowed", async () => {
    const service = await newService();
    const silent = `CMD ["node", "-e", "console.log('up but silent'); setInterval(() => {}, 1000)"]`;
    await service.repo.commit(app("v1", { cmd: silent }), "silent app");
    const job = service.job({ healthCheckTimeoutMs: 3_000 });

    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(run.lines.at(-1)).toEqual({
      line: expect.stringMatching(
        /^Health check timed out after 3 s: the app did not answer HTTP on port 3000/,
      ),
      stream: "stderr",
    });
    expect(text(run)).toContain("up but silent");
    expect(await service.containers()).toEqual([]);
    expect(await imageExists(job.imageTag)).toBe(false);
  });

  it("fails a health-check path that answers 404 with that answer, not the last probe's timeout", async () => {
    const service = await newService();
    const notFound = `CMD ["node", "-e", "require('http').createServer((q, s) => { s.statusCode = 404; s.end(); }).listen(3000)"]`;
    await service.repo.commit(app("v1", { cmd: notFound }), "no health route");
    const job = service.job({ healthCheckPath: "/healthz", healthCheckTimeoutMs: 2_000 });

    const run = await deploy(job);

    expect(run.result.outcome).toBe("failed");
    expect(run.result.reason).toBe(
      "Health check failed: GET /healthz on port 3000 answered HTTP 404 (expected 200–399) " +
        "until the 2 s health-check timeout",
    );
    expect(await service.containers()).toEqual([]);
  });

  it("fails fast when the app exits, with its exit code and last output", async () => {
    const service = await newService();
    const crash = `CMD ["node", "-e", "console.error('missing DATABASE_URL'); process.exit(4)"]`;
    await service.repo.commit(app("v1", { cmd: crash }), "crashing app");
    const job = service.job({ healthCheckTimeoutMs: 60_000 });

    const started = Date.now();
    const run = await deploy(job);
    const healthCheckStart = run.lines.findIndex((entry) =>
      entry.line.startsWith("Health check:"),
    );

    expect(run.result.outcome).toBe("failed");
    expect(run.lines.at(-1)?.line).toBe(
      "The app exited with code 4 during the health check",
    );
    expect(text(run).slice(healthCheckStart)).toContain("missing DATABASE_URL");
    // Far less than the minute the health check would have waited.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(await service.containers()).toEqual([]);
  });

  it("aborts during the build within seconds, removing everything of the attempt", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    expect((await deploy(service.job())).result.outcome).toBe("running");

    const slow = `RUN ["node", "-e", "console.log('slow step started'); setTimeout(() => {}, 120000)"]`;
    await service.repo.commit(app("v2", { run: slow }), "slow build");
    const job = service.job();
    const controller = new AbortController();
    let abortedAt = 0;
    const run = await deploy(job, {
      signal: controller.signal,
      onLine: (line) => {
        if (line === "slow step started") {
          abortedAt = Date.now();
          controller.abort();
        }
      },
    });

    expect(abortedAt).toBeGreaterThan(0);
    expect(Date.now() - abortedAt).toBeLessThan(10_000);
    expect(run.result.outcome).toBe("aborted");
    expect(run.lines.at(-1)?.line).toMatch(/^Deployment aborted; removed /);
    const attempt = await docker.listContainers({
      all: true,
      filters: { label: [`aeroplane.deployment-id=${job.deploymentId}`] },
    });
    expect(attempt).toEqual([]);
    expect(await imageExists(job.imageTag)).toBe(false);

    // The classic builder's RUN container stops with the closed connection.
    const deadline = Date.now() + 10_000;
    const buildStepRunning = async () =>
      (await docker.listContainers()).some((c) =>
        c.Command.includes("slow step started"),
      );
    while (await buildStepRunning()) {
      expect(Date.now()).toBeLessThan(deadline);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(await service.answer()).toBe("v1");
    expect((await service.containers()).length).toBe(1);
  });

  it("rolls the swap back when aborted during it: the previous deployment serves again", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const first = service.job();
    expect((await deploy(first)).result.outcome).toBe("running");

    await service.repo.commit(app("v2"), "second version");
    const job = service.job();
    const controller = new AbortController();
    const run = await deploy(job, {
      signal: controller.signal,
      onLine: (line) => {
        if (line.startsWith(`Starting aeroplane-${service.serviceId}-stable`))
          controller.abort();
      },
    });

    expect(run.result.outcome).toBe("aborted");
    expect(text(run)).toContain(
      `Rolled back: the previous aeroplane-${service.serviceId}-stable serves again`,
    );
    expect(await service.answer()).toBe("v1");
    const containers = await service.containers();
    expect(
      containers.map((container) => container.Labels["aeroplane.deployment-id"]),
    ).toEqual([first.deploymentId]);
    expect(containers[0].Names).toEqual([`/aeroplane-${service.serviceId}-stable`]);
    expect(await imageExists(job.imageTag)).toBe(false);
  });

  it("fails before cloning when another process holds the host port, saying how to fix it", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const squatter = net.createServer();
    await new Promise<void>((resolve) =>
      squatter.listen(service.hostPort, "0.0.0.0", resolve),
    );
    try {
      const job = service.job();
      const run = await deploy(job);
      expect(run.result.outcome).toBe("failed");
      expect(run.result.reason).toBe(
        `Host port ${service.hostPort} is already in use on this host by another ` +
          `process; choose another hostPort (PATCH /api/services/${service.serviceId})`,
      );
      expect(run.lines).toEqual([{ line: run.result.reason, stream: "stderr" }]);
      expect(run.phases).toEqual([]);
      expect(await service.containers()).toEqual([]);
      expect(await imageExists(job.imageTag)).toBe(false);
    } finally {
      squatter.close();
    }
  });

  it("names the container that publishes the host port, and deploys once it is gone", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const name = `squatter-${service.serviceId}`;
    const squatter = await docker.createContainer({
      name,
      Image: baseImage,
      Cmd: ["node", "-e", "setInterval(() => {}, 1000)"],
      ExposedPorts: { "8080/tcp": {} },
      HostConfig: {
        PortBindings: { "8080/tcp": [{ HostPort: String(service.hostPort) }] },
      },
    });
    try {
      await squatter.start();
      const blocked = await deploy(service.job());
      expect(blocked.result.reason).toBe(
        `Host port ${service.hostPort} is already in use on this host by ${name}; ` +
          `choose another hostPort (PATCH /api/services/${service.serviceId})`,
      );
    } finally {
      await squatter.remove({ force: true });
    }

    // Once it is gone the port is free again. (The service's own -stable
    // holding it is no conflict: every redeploy test replaces one.)
    expect((await deploy(service.job())).result.outcome).toBe("running");
    expect(await service.answer()).toBe("v1");
  });

  it("redacts environment values from every log line and the reason", async () => {
    const service = await newService();
    const leak = `CMD ["node", "-e", "console.log('token=' + process.env.API_TOKEN); process.exit(1)"]`;
    await service.repo.commit(app("v1", { cmd: leak }), "leaky app");
    const secret = "s3cret-token-value";

    const run = await deploy(
      service.job({ env: { API_TOKEN: secret, MODE: "exit", GREETING: "Step" } }),
    );

    expect(run.result.outcome).toBe("failed");
    expect(text(run)).toContain("token=[redacted:API_TOKEN]");
    expect(JSON.stringify(run)).not.toContain(secret);
    // Ordinary short values leave the log alone.
    expect(text(run).some((line) => /^Step 1\/\d+ : FROM /.test(line))).toBe(true);
    expect(run.result.reason).toMatch(/^The app exited with code 1 /);
  });

  it("fails clearly on a missing branch, root directory or Dockerfile", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");

    const branch = await deploy(service.job({ branch: "nope" }));
    expect(branch.result.reason).toBe(
      "Clone failed: Remote branch nope not found in upstream origin",
    );

    const rootDir = await deploy(service.job({ rootDir: "services/web" }));
    expect(rootDir.result.reason).toBe(
      'Root directory "services/web" does not exist in the repository',
    );

    const dockerfile = await deploy(service.job({ dockerfilePath: "docker/Dockerfile" }));
    expect(dockerfile.result.reason).toBe(
      'No Dockerfile at "docker/Dockerfile" in the repository',
    );
    expect(dockerfile.lines.at(-1)).toEqual({
      line: dockerfile.result.reason,
      stream: "stderr",
    });

    const escape = await deploy(service.job({ rootDir: "../.." }));
    expect(escape.result.reason).toBe(
      'Root directory "../.." points outside the repository',
    );
  });

  it("fails on a commit the repository does not have, naming it, the repository and the branch", async () => {
    const service = await newService();
    await service.repo.commit(app("v1"), "first version");
    const missing = "deadbeef".repeat(5);

    const full = await deploy(service.job({ commitSha: missing }));
    expect(full.result.outcome).toBe("failed");
    expect(full.result.reason).toBe(
      `Commit ${missing} not found in ${service.repo.url} (branch main)`,
    );
    expect(full.lines.at(-1)).toEqual({ line: full.result.reason, stream: "stderr" });

    // An abbreviated sha is looked for in the branch's history.
    const short = await deploy(service.job({ commitSha: "deadbee" }));
    expect(short.result.reason).toBe(
      `Commit deadbee not found in ${service.repo.url} (branch main)`,
    );
  });

  it("builds from rootDir, with the Dockerfile relative to it, honouring .dockerignore", async () => {
    const service = await newService();
    const listContext = `RUN ["node", "-e", "console.log('context: ' + require('fs').readdirSync('.'))"]`;
    const files = app("from a subdirectory");
    await service.repo.commit(
      {
        "services/web/docker/Dockerfile": files.Dockerfile.replace(
          "COPY server.js .",
          `COPY . .\n${listContext}`,
        ),
        "services/web/server.js": files["server.js"],
        "services/web/notes/secret.txt": "not for the image",
        "services/web/.dockerignore": "notes\n",
        "README.md": "outside the build context",
      },
      "app in a subdirectory",
    );
    const run = await deploy(
      service.job({ rootDir: "services/web", dockerfilePath: "docker/Dockerfile" }),
    );
    expect(run.result.outcome).toBe("running");
    expect(text(run)).toContain("context: .dockerignore,docker,server.js");
    expect(await service.answer()).toBe("from a subdirectory");
  });
});

describe("createRedactor", () => {
  it("leaves words alone that merely contain a short, ordinary value", () => {
    const redact = createRedactor({ MODE: "exit", GREETING: "Step", PORT: "3000" });

    expect(redact("exiting")).toBe("exiting");
    expect(redact("The app exited with code 4 during the health check")).toBe(
      "The app exited with code 4 during the health check",
    );
    expect(redact("Step 1/4 : FROM aeroplane-test/node:local")).toBe(
      "Step 1/4 : FROM aeroplane-test/node:local",
    );
    expect(redact("listening on 3000")).toBe("listening on 3000");
  });

  it("hides values of 8 characters or more anywhere, naming the variable", () => {
    const redact = createRedactor({
      DATABASE_URL: "postgres://db.internal/app",
      RELEASE: "blue-falcon",
    });

    expect(redact("connecting to postgres://db.internal/app now")).toBe(
      "connecting to [redacted:DATABASE_URL] now",
    );
    expect(redact("x-blue-falconry")).toBe("x-[redacted:RELEASE]ry");
  });

  it("hides a short value under a secret-like name, but only as a word of its own", () => {
    const redact = createRedactor({
      DB_Password: "hunter",
      api_key: "k3y9",
      SESSION_ID: "abc",
      NAME: "hunter2x",
    });

    expect(redact("password is hunter, not hunters")).toBe(
      "password is [redacted:DB_Password], not hunters",
    );
    expect(redact("key=k3y9;")).toBe("key=[redacted:api_key];");
    // Too short to hide even under a secret name.
    expect(redact("session abc")).toBe("session abc");
    // The longer value wins where both match.
    expect(redact("hunter2x")).toBe("[redacted:NAME]");
  });

  it("never searches a replacement again, and still hides URL credentials", () => {
    const redact = createRedactor({ TOKEN: "redacted", OTHER_SECRET: "TOKEN" });

    expect(redact("redacted TOKEN")).toBe("[redacted:TOKEN] [redacted:OTHER_SECRET]");
    expect(redact("cloning https://user:pw@git.example.com/app")).toBe(
      "cloning https://***@git.example.com/app",
    );
  });
});
