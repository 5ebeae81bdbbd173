/**
 * The whole system for end-to-end tests: the real Worker in `wrangler dev`
 * with its own persisted state, and real runner processes, talking over
 * real sockets. Requests are made the way a curl user would make them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { z } from "@hono/zod-openapi";
import type { createServiceBody } from "../../../schema/api";
import {
  ControlPlane,
  applyMigrations,
  bootstrap,
  freePort,
  projectRoot,
} from "../../../scripts/local-control-plane";
import { removeServices } from "./docker-fixtures";

export type ApiResponse = { status: number; body: any };

/**
 * The body of POST /api/projects/:id/services, where internalPort defaults
 * to 3000 (every test app listens there) and hostPort to a free port.
 */
export type ServiceFields = Omit<
  z.input<typeof createServiceBody>,
  "internalPort" | "hostPort"
> & { internalPort?: number; hostPort?: number };

export type CreatedService = { projectId: string; serviceId: string; hostPort: number };

export class TestSystem {
  readonly controlPlane: ControlPlane;
  adminKey = "";
  #runners = new Set<ChildProcess>();
  #serviceIds: string[] = [];
  #persistDir: string;

  private constructor(port: number, persistDir: string, vars: Record<string, string>) {
    this.#persistDir = persistDir;
    this.controlPlane = new ControlPlane({
      port,
      persistDir,
      vars: {
        BOOTSTRAP_TOKEN: "e2e-bootstrap-token",
        ENCRYPTION_KEY: "e2e-encryption-key",
        SSE_PING_INTERVAL_MS: "250",
        ...vars,
      },
      output: process.env.AEROPLANE_TEST_VERBOSE ? "inherit" : "ignore",
    });
  }

  get url(): string {
    return this.controlPlane.url;
  }

  /** Starts a fresh control plane and mints its admin key. */
  static async start(vars: Record<string, string> = {}): Promise<TestSystem> {
    const persistDir = mkdtempSync(join(tmpdir(), "aeroplane-e2e-"));
    applyMigrations(persistDir);
    const system = new TestSystem(await freePort(), persistDir, vars);
    await system.controlPlane.start();
    const key = await bootstrap(system.url, "e2e-bootstrap-token");
    if (!key) throw new Error("A fresh control plane was already bootstrapped");
    system.adminKey = key;
    return system;
  }

  async api(
    method: string,
    path: string,
    body?: unknown,
    key = this.adminKey,
  ): Promise<ApiResponse> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${key}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  }

  /** Like {@link api}, but throws unless the status is `expected`. */
  async ok(method: string, path: string, body?: unknown, expected = 200): Promise<any> {
    const res = await this.api(method, path, body);
    if (res.status !== expected) {
      throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    }
    return res.body;
  }

  /** Creates a project and returns its id. */
  async createProject(name = "e2e"): Promise<string> {
    const { project } = await this.ok("POST", "/api/projects", { name }, 201);
    return project.id;
  }

  /**
   * Creates a service, in a new project named `projectName` unless given the
   * `projectId` of one. {@link stop} removes what Docker holds of it.
   */
  async createService(
    fields: ServiceFields,
    { projectId, projectName = "e2e" }: { projectId?: string; projectName?: string } = {},
  ): Promise<CreatedService> {
    projectId ??= await this.createProject(projectName);
    const hostPort = fields.hostPort ?? (await freePort());
    const { service } = await this.ok(
      "POST",
      `/api/projects/${projectId}/services`,
      { internalPort: 3000, ...fields, hostPort },
      201,
    );
    this.#serviceIds.push(service.id);
    return { projectId, serviceId: service.id, hostPort };
  }

  /** Registers a runner and returns its token. */
  async registerRunner(
    name = "e2e",
    capacity = 2,
  ): Promise<{ id: string; token: string }> {
    const { runner, token } = await this.ok(
      "POST",
      "/api/runners",
      { name, capacity },
      201,
    );
    return { id: runner.id, token };
  }

  /**
   * Starts a runner process; its output goes to stderr when verbose. With
   * `url` it reaches the control plane there (e.g. through a proxy); with
   * `stderr: "pipe"` the caller reads the runner's own log from `child.stderr`.
   */
  startRunner(
    token: string,
    args: string[] = [],
    env: Record<string, string> = {},
    options: { url?: string; stderr?: "pipe" } = {},
  ): ChildProcess {
    const stderr =
      options.stderr ?? (process.env.AEROPLANE_TEST_VERBOSE ? "inherit" : "ignore");
    const child = spawn(
      process.execPath,
      ["--import", "tsx", join(projectRoot, "runner/main.ts"), ...args],
      {
        cwd: projectRoot,
        env: {
          ...process.env,
          AEROPLANE_URL: options.url ?? this.url,
          AEROPLANE_RUNNER_TOKEN: token,
          AEROPLANE_LOG_LEVEL: process.env.AEROPLANE_TEST_VERBOSE ? "debug" : "warn",
          ...env,
        },
        stdio: ["ignore", "inherit", stderr],
      },
    );
    this.#runners.add(child);
    child.once("exit", () => this.#runners.delete(child));
    return child;
  }

  /** Stops `wrangler dev` (SIGTERM by default); the persisted state stays. */
  async stopControlPlane(signal?: NodeJS.Signals): Promise<void> {
    await this.controlPlane.stop(signal);
  }

  /** Starts the control plane again on the same port with the same state. */
  async startControlPlane(): Promise<void> {
    await this.controlPlane.start();
  }

  /** Stops and starts the control plane, keeping its port and persisted state. */
  async restartControlPlane(): Promise<void> {
    await this.stopControlPlane();
    await this.startControlPlane();
  }

  /** Polls a deployment until `done` holds for it, or fails after `timeoutMs`. */
  async waitForDeployment(
    deploymentId: string,
    done: (deployment: any) => boolean,
    timeoutMs = 90_000,
  ): Promise<any> {
    const deadline = Date.now() + timeoutMs;
    let last: any;
    while (Date.now() < deadline) {
      last = (await this.ok("GET", `/api/deployments/${deploymentId}`)).deployment;
      if (done(last)) return last;
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    const logs = await this.ok("GET", `/api/deployments/${deploymentId}/logs`);
    throw new Error(
      `Deployment ${deploymentId} stuck at ${JSON.stringify(last)}\n` +
        logs.logs.map((l: any) => l.line).join("\n"),
    );
  }

  /**
   * Stops the runners and the control plane, deletes the persisted state,
   * and removes every container and image of the services it created.
   */
  async stop(): Promise<void> {
    await Promise.all(
      [...this.#runners].map(async (child) => {
        const exited = once(child, "exit");
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }),
    );
    await this.controlPlane.stop();
    rmSync(this.#persistDir, { recursive: true, force: true });
    // After the runners: none of them can start a container again.
    await removeServices(this.#serviceIds);
  }
}
