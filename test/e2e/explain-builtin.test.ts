/**
 * The `builtin` provider on real failed deployments: for each kind of
 * failure it knows, a service is set up to fail that way, deployed through
 * the real Worker and runner onto the real Docker engine, and explained.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage, HOST_NODE_IMAGE } from "../../scripts/host-node-image";
import { deploy, logLineTexts } from "./support/deployments";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeDockerfile, runNode } from "./support/node-app";
import { TestSystem, type ServiceFields } from "./support/system";

/** A Dockerfile that copies `script` and runs it with node `flags`. */
const dockerfile = (script: string, nodeFlags: string[] = []) =>
  nodeDockerfile({ script, nodeFlags });

/** One commit holds every app; each service picks its own by dockerfilePath. */
const files = {
  "port.js": `require("http").createServer((q, s) => s.end("ok"))
    .listen(8080, () => console.log("Server listening on port 8080"));`,
  "crash.js": `console.log("starting"); require("express");`,
  "oom.js": `console.log("loading the cache"); const kept = [];
    for (;;) kept.push(new Array(100000).fill("x".repeat(8)));`,
  "health.js": `require("http").createServer((q, s) => {
      s.statusCode = q.url === "/" ? 200 : 404; s.end();
    }).listen(3000, () => console.log("listening on 3000"));`,
  "Dockerfile.port": dockerfile("port.js"),
  "Dockerfile.crash": dockerfile("crash.js"),
  "Dockerfile.oom": dockerfile("oom.js", ["--max-old-space-size=16"]),
  "Dockerfile.health": dockerfile("health.js"),
  "Dockerfile.build": [
    `FROM ${HOST_NODE_IMAGE}`,
    runNode("console.error('npm ERR! missing: left-pad@1.3.0'); process.exit(3)"),
  ].join("\n"),
};

let system: TestSystem;
let repo: ServedRepository;
let gitHost: http.Server;
let runnerId: string;
let projectId: string;
let servicesCreated = 0;

/** A git host that wants credentials for everything, as a private repo's does. */
async function startLockedGitHost(): Promise<string> {
  gitHost = http.createServer((_, res) => {
    res.writeHead(401, { "WWW-Authenticate": 'Basic realm="git"' });
    res.end("Authentication required");
  });
  gitHost.listen(0, "127.0.0.1");
  await once(gitHost, "listening");
  return `http://127.0.0.1:${(gitHost.address() as AddressInfo).port}/acme/private.git`;
}

/** Deploys a new service with `settings`, waits for it to fail, explains it. */
async function explainFailed(settings: Partial<ServiceFields>) {
  const { serviceId } = await system.createService(
    { name: `web-${servicesCreated++}`, repoUrl: repo.url, runnerId, ...settings },
    { projectId },
  );
  const deploymentId = await deploy(system, serviceId);
  await system.waitForDeployment(
    deploymentId,
    (d) => d.status !== "queued" && d.status !== "building",
  );
  const log = (await logLineTexts(system, deploymentId)).join("\n");
  const res = await system.api(
    "POST",
    `/api/deployments/${deploymentId}/explain-failure`,
    { providerId: "builtin" },
  );
  expect(res.status, `${JSON.stringify(res.body)}\n${log}`).toBe(200);
  return { explanation: res.body.explanation, log };
}

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start({ HEALTH_CHECK_TIMEOUT_MS: "10000" });
  const runner = await system.registerRunner("explain", 4);
  runnerId = runner.id;
  system.startRunner(runner.token);
  repo = await servedRepository();
  await repo.commit(files, "apps that fail in every way");
  projectId = await system.createProject("explain-builtin");
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
  gitHost?.close();
});

describe("builtin explains real failed deployments", { concurrent: true }, () => {
  it("a port mismatch", async () => {
    const { explanation } = await explainFailed({ dockerfilePath: "Dockerfile.port" });
    expect(explanation.likelyCause).toMatch(
      /listens on port 8080 .*internalPort is 3000/,
    );
    expect(explanation.commands[0]).toContain('{"internalPort":8080}');
  });

  it("a crash on start, with its exit code and error line", async () => {
    const { explanation } = await explainFailed({ dockerfilePath: "Dockerfile.crash" });
    expect(explanation.summary).toMatch(/crashed on start: it exited with code 1/);
    expect(explanation.likelyCause).toContain("Error: Cannot find module 'express'");
  });

  // Runners set no memory limit, so no kernel OOM kill (exit 137) can be
  // provoked here; V8 running out of its capped heap is the real thing too.
  it("an app that runs out of memory", async () => {
    const { explanation, log } = await explainFailed({
      dockerfilePath: "Dockerfile.oom",
    });
    expect(explanation.summary, log).toMatch(/ran out of memory/);
    expect(explanation.likelyCause).toMatch(/heap out of memory|OOM killer/);
  });

  it("a missing Dockerfile", async () => {
    const { explanation } = await explainFailed({ dockerfilePath: "Dockerfile.absent" });
    expect(explanation.summary).toMatch(/no Dockerfile at "Dockerfile.absent"/);
  });

  it("a wrong root dir", async () => {
    const { explanation } = await explainFailed({ rootDir: "web" });
    expect(explanation.likelyCause).toMatch(/rootDir is "web".*no such directory/);
  });

  it("a failed build step, with the step and the command", async () => {
    const { explanation } = await explainFailed({ dockerfilePath: "Dockerfile.build" });
    // The runner appends its LABEL steps, so the step count is Docker's own.
    expect(explanation.summary).toMatch(
      /^The build failed at step 2\/\d+ \(RUN \["node", "-e"/,
    );
    expect(explanation.likelyCause).toMatch(/exited with code 3/);
    expect(explanation.likelyCause).toContain("npm ERR! missing: left-pad@1.3.0");
  });

  it("a clone of a branch that does not exist", async () => {
    const { explanation } = await explainFailed({ branch: "nope" });
    expect(explanation.summary).toBe(
      'The clone failed: the branch "nope" does not exist in the repository.',
    );
  });

  it("a clone the git host refuses without credentials", async () => {
    const { explanation } = await explainFailed({ repoUrl: await startLockedGitHost() });
    expect(explanation.summary).toBe(
      "The clone failed: the git host refused access to the repository.",
    );
    expect(explanation.suggestedFix).toMatch(/access token/);
  });

  it("a health-check path that answers 404", async () => {
    const { explanation, log } = await explainFailed({
      dockerfilePath: "Dockerfile.health",
      healthCheckPath: "/healthz",
    });
    expect(explanation.likelyCause, log).toMatch(
      /no route at the health-check path "\/healthz"/,
    );
    expect(explanation.commands[0]).toContain('{"healthCheckPath":"/"}');
  });
});
