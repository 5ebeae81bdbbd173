/**
 * The runner process: `npm run runner -- --url <control plane> --token apr_…`.
 *
 * It connects to the control plane, takes deployment jobs, and runs them on
 * the local Docker engine. Settings come from flags, or from the environment
 * (AEROPLANE_URL, AEROPLANE_RUNNER_TOKEN, AEROPLANE_RUNNER_CAPACITY).
 */
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { Agent } from "./agent.js";
import { removeStaleCloneDirs } from "./clone-dirs.js";
import { ControlConnection } from "./connection.js";
import { createDockerClient } from "./docker.js";
import { createLogger, errorMessage } from "./logger.js";
import { reconcileAtStartup, runnerMarkOf } from "./reconcile.js";

const log = createLogger("runner:main");

const usage = `Usage: npm run runner -- --url <url> --token <apr_…> [options]

  --url <url>             Control plane URL            (env AEROPLANE_URL)
  --token <token>         Runner token, apr_…          (env AEROPLANE_RUNNER_TOKEN)
  --capacity <n>          Jobs run at once, default 2  (env AEROPLANE_RUNNER_CAPACITY)
  --docker-socket <path>  Docker socket, default DOCKER_HOST or /var/run/docker.sock
  --allow-file-repos      Also deploy file:// repositories from this host's disk
  -h, --help              Show this help

Log level: AEROPLANE_LOG_LEVEL=debug|info|warn|error (default info).

Exits 78 when the control plane shuts this runner out for good (another runner
connected with the same token, the runner was removed, or its token is refused);
restarting it then would not help (systemd: RestartPreventExitStatus=78).`;

export interface RunnerSettings {
  url: string;
  token: string;
  capacity: number;
  dockerSocket?: string;
  /** Lets services deploy file:// repositories from this host's disk. */
  allowFileRepos: boolean;
}

/** Reads flags, falling back to the environment; throws a usage error. */
export function parseRunnerArgs(
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): RunnerSettings | "help" {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" },
      token: { type: "string" },
      capacity: { type: "string" },
      "docker-socket": { type: "string" },
      "allow-file-repos": { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
    strict: true,
  });
  if (values.help) return "help";

  const url = values.url ?? env.AEROPLANE_URL;
  const token = values.token ?? env.AEROPLANE_RUNNER_TOKEN;
  const capacityText = values.capacity ?? env.AEROPLANE_RUNNER_CAPACITY ?? "2";
  const capacity = Number(capacityText);
  if (!url) throw new Error("Missing --url (or AEROPLANE_URL)");
  if (!/^https?:\/\//.test(url))
    throw new Error(`--url must be http(s)://…, got "${url}"`);
  if (!token) throw new Error("Missing --token (or AEROPLANE_RUNNER_TOKEN)");
  if (!token.startsWith("apr_")) throw new Error("The runner token starts with apr_");
  if (!Number.isInteger(capacity) || capacity < 1) {
    throw new Error(
      `--capacity must be a whole number of at least 1, got "${capacityText}"`,
    );
  }
  return {
    url,
    token,
    capacity,
    dockerSocket: values["docker-socket"],
    allowFileRepos: values["allow-file-repos"] ?? false,
  };
}

function packageVersion(): string {
  const manifest = readFileSync(new URL("../package.json", import.meta.url), "utf8");
  return (JSON.parse(manifest) as { version: string }).version;
}

/**
 * The exit code after the control plane shut this runner out: replaced by a
 * newer runner with the same token, removed, or its token refused.
 * Restarting cannot help (a restarted runner would only replace the newer
 * one, and the two would take turns), so a service manager should not:
 * systemd's `RestartPreventExitStatus=78`. 78 is sysexits' EX_CONFIG.
 */
export const shutOutExitCode = 78;

export interface RunningRunner {
  agent: Agent;
  connection: ControlConnection;
  /**
   * Resolves with the reason when the control plane ended the connection
   * for good; the runner no longer reconnects, and should stop.
   */
  ended: Promise<string>;
  /** Aborts running jobs (bounded by `timeoutMs`), then closes the socket. */
  stop(timeoutMs?: number): Promise<void>;
}

/** Starts a runner: checks Docker, then connects (and keeps reconnecting). */
export async function startRunner(settings: RunnerSettings): Promise<RunningRunner> {
  const docker = createDockerClient({ socketPath: settings.dockerSocket });
  const runnerMark = runnerMarkOf(settings.token);
  // A predecessor killed mid-clone left its directory; ours all come later.
  await removeStaleCloneDirs(tmpdir(), runnerMark, performance.timeOrigin);
  const agent = new Agent({
    capacity: settings.capacity,
    version: packageVersion(),
    docker,
    allowFileRepos: settings.allowFileRepos,
    runnerMark,
  });
  // Unreachable Docker is logged with a fix; the runner still connects and
  // turns offers down with the same reason until Docker answers.
  if ((await agent.checkDocker()) === null) {
    // No job runs yet, so whatever a killed predecessor left mid-deployment
    // is debris; images of deployments that never went live are named by
    // the control plane after `hello`.
    await reconcileAtStartup(docker, runnerMark).catch((error: unknown) =>
      log.error("Reconciling Docker at startup failed", { error: errorMessage(error) }),
    );
  }

  let end!: (reason: string) => void;
  const ended = new Promise<string>((resolve) => (end = resolve));
  const connection = new ControlConnection({
    url: settings.url,
    token: settings.token,
    handlers: agent,
    onEnded: end,
  });
  connection.start();
  log.info("Runner started", { url: settings.url, capacity: settings.capacity });

  return {
    agent,
    connection,
    ended,
    async stop(timeoutMs = 10_000) {
      await agent.shutdown(timeoutMs);
      await connection.stop();
    },
  };
}

async function main(): Promise<void> {
  let settings: RunnerSettings | "help";
  try {
    settings = parseRunnerArgs(process.argv.slice(2));
  } catch (error) {
    process.stderr.write(`${errorMessage(error)}\n\n${usage}\n`);
    process.exit(2);
  }
  if (settings === "help") {
    process.stdout.write(`${usage}\n`);
    return;
  }

  const runner = await startRunner(settings);
  let stopping = false;
  /** Aborts the jobs as cleanly as time allows, then exits with `code`. */
  const stop = (code: number) => {
    stopping = true;
    runner.stop().then(
      () => process.exit(code),
      (error) => {
        log.error("Stopping failed", { error });
        process.exit(1);
      },
    );
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      log.warn(`Second ${signal}: exiting without cleaning up`);
      process.exit(1);
    }
    log.info(`${signal}: aborting running jobs and disconnecting`);
    stop(0);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  // The connection has said why (runner:ws); only the jobs are left to stop.
  void runner.ended.then(() => {
    if (!stopping) stop(shutOutExitCode);
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error) => {
    log.error("The runner failed to start", { error });
    process.exit(1);
  });
}
