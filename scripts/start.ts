/**
 * `npm start`: the whole system on one machine. It runs the control plane
 * (wrangler dev, with D1 and Durable Objects persisted in .aeroplane/), a
 * runner against the local Docker engine, and on first run mints an admin
 * key, registers the runner and sets up the example service.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import Docker from "dockerode";
import {
  ControlPlane,
  applyMigrations,
  bootstrap,
  projectRoot,
} from "./local-control-plane";
import { ensureHostNodeImage } from "./host-node-image";

const stateDir = `${projectRoot}.aeroplane`;
const localFile = `${stateDir}/local.json`;
const devEnvFile = `${stateDir}/dev.env`;

/** What the first run sets up, kept so later runs reuse it. */
type LocalInstall = {
  bootstrapToken: string;
  encryptionKey: string;
  apiKey?: string;
  runnerId?: string;
  runnerToken?: string;
  exampleServiceId?: string;
};

const say = (line: string) => process.stdout.write(`${line}\n`);

function loadInstall(): LocalInstall {
  if (existsSync(localFile)) return JSON.parse(readFileSync(localFile, "utf8"));
  return {
    bootstrapToken: randomBytes(24).toString("hex"),
    encryptionKey: randomBytes(32).toString("hex"),
  };
}

function saveInstall(install: LocalInstall): void {
  writeFileSync(localFile, `${JSON.stringify(install, null, 2)}\n`, { mode: 0o600 });
}

async function call<T>(
  url: string,
  apiKey: string,
  method: string,
  path: string,
  body?: unknown,
) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { Authorization: `Bearer ${apiKey}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok)
    throw new Error(`${method} ${path} answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as T;
}

/** Says whether Docker answers, and how to fix it when it does not. */
async function checkDocker(docker: Docker): Promise<boolean> {
  try {
    await docker.ping();
    return true;
  } catch (error) {
    say("");
    say(`! Docker is not reachable (${(error as Error).message}).`);
    say(
      "  Start it (`sudo systemctl start docker`, or `sudo dockerd &`) and make sure this",
    );
    say("  user may use /var/run/docker.sock (`sudo usermod -aG docker $USER`).");
    say("  The API keeps serving; the runner takes jobs once Docker answers.");
    say("");
    return false;
  }
}

function currentBranch(): string | null {
  try {
    return execFileSync("git", ["rev-parse", "--abbrev-ref", "HEAD"], {
      cwd: projectRoot,
      encoding: "utf8",
    }).trim();
  } catch {
    return null;
  }
}

async function setUpFirstRun(url: string, install: LocalInstall): Promise<void> {
  if (!install.apiKey) {
    const secret = await bootstrap(url, install.bootstrapToken);
    if (!secret) {
      throw new Error(
        `This installation was bootstrapped before, but ${localFile} has no API key.\n` +
          `Delete ${stateDir} to start over.`,
      );
    }
    install.apiKey = secret;
    saveInstall(install);
  }
  if (install.runnerId) {
    // An admin may have removed the local runner; its token is dead then.
    const res = await fetch(`${url}/api/runners/${install.runnerId}`, {
      headers: { Authorization: `Bearer ${install.apiKey}` },
    });
    if (res.status === 404) {
      say("The local runner was removed; registering it again…");
      install.runnerId = install.runnerToken = undefined;
    }
  }
  if (!install.runnerToken) {
    const { runner, token } = await call<{ runner: { id: string }; token: string }>(
      url,
      install.apiKey,
      "POST",
      "/api/runners",
      { name: "local" },
    );
    install.runnerId = runner.id;
    install.runnerToken = token;
    saveInstall(install);
  }
  const branch = currentBranch();
  if (!install.exampleServiceId && branch) {
    const { project } = await call<{ project: { id: string } }>(
      url,
      install.apiKey,
      "POST",
      "/api/projects",
      { name: "example" },
    );
    const { service } = await call<{ service: { id: string } }>(
      url,
      install.apiKey,
      "POST",
      `/api/projects/${project.id}/services`,
      {
        name: "hello",
        // This very repository; the runner may clone it because it was
        // started with --allow-file-repos below.
        repoUrl: `file://${projectRoot.replace(/\/$/, "")}`,
        branch,
        rootDir: "examples/hello",
        internalPort: 3000,
      },
    );
    install.exampleServiceId = service.id;
    saveInstall(install);
  }
}

function startRunner(url: string, token: string): ChildProcess {
  return spawn(
    process.execPath,
    ["--import", "tsx", `${projectRoot}runner/main.ts`, "--allow-file-repos"],
    {
      cwd: projectRoot,
      stdio: "inherit",
      env: { ...process.env, AEROPLANE_URL: url, AEROPLANE_RUNNER_TOKEN: token },
      // Its own process group: Ctrl-C reaches it once, through stop() below,
      // rather than twice (terminal and stop()), which would skip its cleanup.
      detached: true,
    },
  );
}

async function main(): Promise<void> {
  mkdirSync(stateDir, { recursive: true });
  const install = loadInstall();
  saveInstall(install);
  const port = Number(process.env.AEROPLANE_PORT ?? 8787);

  say("Applying D1 migrations…");
  applyMigrations(`${stateDir}/state`);

  const controlPlane = new ControlPlane({
    port,
    persistDir: `${stateDir}/state`,
    vars: {
      BOOTSTRAP_TOKEN: install.bootstrapToken,
      ENCRYPTION_KEY: install.encryptionKey,
    },
  });
  say(`Starting the control plane on ${controlPlane.url}…`);
  await controlPlane.start();
  await setUpFirstRun(controlPlane.url, install);

  const docker = new Docker();
  if (await checkDocker(docker)) {
    say("Building the example's base image from this machine's node binary…");
    await ensureHostNodeImage(docker);
  }
  const runner = startRunner(controlPlane.url, install.runnerToken!);

  writeFileSync(
    devEnvFile,
    `export AEROPLANE_URL=${controlPlane.url}\nexport AEROPLANE_API_KEY=${install.apiKey}\n`,
    { mode: 0o600 },
  );
  const service = install.exampleServiceId
    ? await call<{ service: { hostPort: number } }>(
        controlPlane.url,
        install.apiKey!,
        "GET",
        `/api/services/${install.exampleServiceId}`,
      )
    : null;

  say("");
  say("Aeroplane is running. Written to .aeroplane/dev.env:");
  say(`  export AEROPLANE_URL=${controlPlane.url}`);
  say(`  export AEROPLANE_API_KEY=${install.apiKey}`);
  if (service) {
    say("");
    say("Deploy the example app (examples/hello):");
    say(
      `  curl -X POST "$AEROPLANE_URL/api/services/${install.exampleServiceId}/deployments" ` +
        `-H "Authorization: Bearer $AEROPLANE_API_KEY"`,
    );
    say(`Then open http://127.0.0.1:${service.service.hostPort}/`);
  }
  say("");
  say("Press Ctrl-C to stop.");

  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    say("\nStopping…");
    runner.kill("SIGTERM");
    await controlPlane.stop();
    await new Promise((resolve) =>
      runner.exitCode === null ? runner.once("exit", resolve) : resolve(null),
    );
    process.exit(0);
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
  runner.on("exit", (code) => {
    if (!stopping) say(`The runner exited (code ${code}); the API keeps serving.`);
  });
  controlPlane.process?.on("exit", (code) => {
    if (!stopping) {
      say(`wrangler dev exited (code ${code}).`);
      void stop();
    }
  });
}

main().catch((error) => {
  process.stderr.write(
    `npm start failed: ${error instanceof Error ? error.message : error}\n`,
  );
  process.exit(1);
});
