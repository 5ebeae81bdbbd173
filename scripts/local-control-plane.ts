/**
 * Runs the control plane locally: the real Worker, D1 and Durable Objects in
 * workerd via `wrangler dev`, with state persisted on disk. Used by
 * `npm start` and by the end-to-end tests.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdirSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export const projectRoot = fileURLToPath(new URL("..", import.meta.url));
const wranglerBin = `${projectRoot}node_modules/.bin/wrangler`;

/** Keeps wrangler from waiting on a network this machine may not have. */
export const wranglerEnv = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};

export type ControlPlaneOptions = {
  port: number;
  /** Directory for D1 and Durable Object state; survives restarts. */
  persistDir: string;
  /**
   * Worker variables and secrets, e.g. BOOTSTRAP_TOKEN. They reach wrangler
   * through a 0600 env file, not its arguments, which any user can read.
   */
  vars: Record<string, string>;
  /** Where wrangler's output goes; defaults to this process's stderr. */
  output?: "inherit" | "ignore" | "pipe";
};

/** Asks the OS for a free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  return port;
}

/** Applies the D1 migrations to the local database in `persistDir`. */
export function applyMigrations(persistDir: string): void {
  const result = spawnSync(
    wranglerBin,
    ["d1", "migrations", "apply", "aeroplane", "--local", "--persist-to", persistDir],
    { cwd: projectRoot, env: wranglerEnv, encoding: "utf8" },
  );
  if (result.status !== 0) {
    throw new Error(`Applying D1 migrations failed:\n${result.stdout}\n${result.stderr}`);
  }
}

/** A running `wrangler dev`. */
export class ControlPlane {
  readonly url: string;
  #child: ChildProcess | undefined;

  constructor(readonly options: ControlPlaneOptions) {
    this.url = `http://127.0.0.1:${options.port}`;
  }

  /** Starts wrangler dev and resolves once the Worker answers. */
  async start(): Promise<void> {
    const { port, persistDir, vars, output = "inherit" } = this.options;
    mkdirSync(persistDir, { recursive: true });
    const envFile = join(persistDir, "worker.env");
    writeFileSync(
      envFile,
      Object.entries(vars)
        .map(([key, value]) => `${key}=${JSON.stringify(value)}\n`)
        .join(""),
      { mode: 0o600 },
    );
    this.#child = spawn(
      wranglerBin,
      [
        "dev",
        "--ip",
        "127.0.0.1",
        "--port",
        String(port),
        "--persist-to",
        persistDir,
        "--show-interactive-dev-session=false",
        "--inspector-port",
        String(await freePort()),
        "--env-file",
        envFile,
      ],
      {
        cwd: projectRoot,
        env: wranglerEnv,
        stdio: ["ignore", output, output],
        // Its own process group, so stop() ends workerd with it.
        detached: true,
      },
    );
    await this.#waitUntilServing();
  }

  /** Stops wrangler dev and workerd; the persisted state stays. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    try {
      process.kill(-child.pid!, signal);
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {}
    }, 5_000);
    await exited;
    clearTimeout(timer);
  }

  get process(): ChildProcess | undefined {
    return this.#child;
  }

  async #waitUntilServing(timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.#child?.exitCode !== null) {
        throw new Error(`wrangler dev exited with code ${this.#child?.exitCode}`);
      }
      try {
        const res = await fetch(`${this.url}/healthz`);
        if (res.ok) return;
      } catch {
        // Not listening yet.
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new Error(`wrangler dev did not answer on ${this.url} within ${timeoutMs} ms`);
  }
}

/**
 * Mints the first admin key with the bootstrap secret. Returns null when the
 * installation was bootstrapped before.
 */
export async function bootstrap(url: string, token: string): Promise<string | null> {
  const res = await fetch(`${url}/api/bootstrap`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token, name: "local admin" }),
  });
  if (res.status === 409) return null;
  if (res.status !== 201)
    throw new Error(`Bootstrap failed: ${res.status} ${await res.text()}`);
  const body = (await res.json()) as { secret: string };
  return body.secret;
}
