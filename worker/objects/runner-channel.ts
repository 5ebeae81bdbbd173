/**
 * RunnerChannel: one Durable Object per registered runner. It holds the
 * runner's control WebSocket, offers it jobs under leases, relays its log
 * lines to each deployment's DeploymentLog, and records results.
 *
 * Frames from one socket are handled strictly one after another: a frame's
 * D1 and RPC awaits would otherwise let the next frame overtake it, and log
 * lines must reach storage in the order the runner sent them.
 */
import { DurableObject } from "cloudflare:workers";
import { and, eq, inArray } from "drizzle-orm";
import {
  PROTOCOL_VERSION,
  parseFrame,
  runnerFrame,
  type RunnerFrame,
  type WorkerFrame,
} from "../../schema/protocol";
import { deployments, runners } from "../../schema/tables";
import { deploymentLog, transition } from "../deployments";
import { newId } from "../ids";
import { database, numberSetting } from "../router";
import { builtImageTag, jobFor, queuedFor, recordResult, wentLive } from "./runner-work";
import { RuntimeLogRelay } from "./runtime-log-relay";

type Lease = {
  lease_id: string;
  deployment_id: string;
  service_id: string;
  /** offered: waiting for job.accept; active: the runner works on it. */
  state: "offered" | "active";
  /** Epoch ms after which the lease is void without news from the runner. */
  expires_at: number;
};

const HEARTBEAT_INTERVAL_MS = 5_000;
/** How long an offer waits for its accept before it is withdrawn. */
const OFFER_TIMEOUT_MS = 15_000;
/** How often the watchdog alarm looks at leases and queued work. */
const WATCHDOG_INTERVAL_MS = 5_000;
/** D1 heartbeat writes are throttled to one per this interval. */
const HEARTBEAT_WRITE_INTERVAL_MS = 15_000;
const CLOSE_REPLACED = 4000;
const CLOSE_PROTOCOL = 4001;
const CLOSE_REMOVED = 4003;

export class RunnerChannel extends DurableObject<Env> {
  #sql: SqlStorage;
  /** The tail of the chain that serialises frames, pokes and alarms. */
  #queue: Promise<unknown> = Promise.resolve();
  #lastHeartbeatWrite = 0;
  #runtimeLogs: RuntimeLogRelay;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    this.#runtimeLogs = new RuntimeLogRelay(
      (frame) => this.#send(frame),
      numberSetting(env, "SSE_PING_INTERVAL_MS", 15_000),
    );
    this.#sql.exec(`
      CREATE TABLE IF NOT EXISTS leases (
        lease_id TEXT PRIMARY KEY,
        deployment_id TEXT NOT NULL UNIQUE,
        service_id TEXT NOT NULL,
        state TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      );
      CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS service_removals (service_id TEXT PRIMARY KEY);
    `);
  }

  // ── Entry points ──────────────────────────────────────────────────────────

  /**
   * Accepts the runner's WebSocket (the Worker has already checked its
   * token), or opens a runtime-log stream of one of its services.
   */
  async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/runtime-logs") {
      const serviceId = url.searchParams.get("serviceId") ?? "";
      const tail = Number(url.searchParams.get("tail") ?? 200);
      return this.#runtimeLogs.open(serviceId, tail);
    }
    const runnerId = request.headers.get("X-Aeroplane-Runner-Id");
    if (!runnerId || request.headers.get("Upgrade")?.toLowerCase() !== "websocket") {
      return new Response("Expected a runner WebSocket", { status: 400 });
    }
    this.#setFact("runnerId", runnerId);

    // One control socket per runner: the newest connection wins.
    for (const old of this.ctx.getWebSockets()) {
      old.close(CLOSE_REPLACED, "Replaced by a newer connection");
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    await this.#scheduleWatchdog();
    return new Response(null, { status: 101, webSocket: client });
  }

  /** Called when work for this runner may have appeared. */
  async poke(): Promise<void> {
    await this.#serially(() => this.#dispatch());
  }

  /** Tells the runner to stop the deployment's work and clean up. */
  async abort(deploymentId: string): Promise<void> {
    await this.#serially(async () => {
      const lease = this.#leaseOf(deploymentId);
      if (!lease) return;
      if (lease.state === "offered") {
        this.#dropLease(lease.lease_id);
        this.#send({ type: "job.cancel", deploymentId, leaseId: lease.lease_id });
      } else {
        this.#send({ type: "job.abort", deploymentId, leaseId: lease.lease_id });
      }
    });
  }

  /**
   * The service was deleted: the runner removes its containers and images.
   * Kept until the runner confirms, and repeated after each reconnect.
   */
  async removeService(serviceId: string): Promise<void> {
    this.#sql.exec(
      "INSERT INTO service_removals (service_id) VALUES (?) ON CONFLICT DO NOTHING",
      serviceId,
    );
    this.#send({ type: "service.remove", serviceId });
  }

  /** Closes the runner's socket, e.g. because the runner was removed. */
  async disconnect(reason: string): Promise<void> {
    for (const ws of this.ctx.getWebSockets()) ws.close(CLOSE_REMOVED, reason);
  }

  async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    const frame = parseFrame(runnerFrame, message);
    if (!frame) {
      console.error(
        "RunnerChannel:webSocketMessage",
        "unparseable frame",
        String(message).slice(0, 200),
      );
      ws.close(CLOSE_PROTOCOL, "Unparseable frame");
      return;
    }
    await this.#serially(() => this.#handle(ws, frame));
  }

  async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    // Answer the runner's close frame so its close handshake completes.
    try {
      ws.close(code === 1005 ? 1000 : code, reason);
    } catch {
      // Already closed from this side.
    }
    await this.#serially(() => this.#markOfflineIfGone(ws));
  }

  async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    console.error("RunnerChannel:webSocketError", error);
    await this.#serially(() => this.#markOfflineIfGone(ws));
  }

  /** The watchdog: voids lapsed leases and retries queued work. */
  async alarm(): Promise<void> {
    await this.#serially(async () => {
      await this.#expireLeases();
      await this.#dispatch();
    });
    await this.#scheduleWatchdog();
  }

  // ── Frames ────────────────────────────────────────────────────────────────

  async #handle(ws: WebSocket, frame: RunnerFrame): Promise<void> {
    switch (frame.type) {
      case "hello":
        return this.#hello(ws, frame);
      case "heartbeat":
        return this.#heartbeat(frame.leaseIds);
      case "job.accept":
        return this.#accept(frame.deploymentId, frame.leaseId);
      case "job.reject":
        return this.#reject(frame.deploymentId, frame.leaseId, frame.reason);
      case "job.phase":
        return this.#phase(frame);
      case "logs":
        return this.#logs(frame);
      case "job.result":
        return this.#result(frame);
      case "runtime.snapshot":
        return this.#runtimeLogs.snapshot(frame.serviceId, frame.lines);
      case "runtime.logs":
        return this.#runtimeLogs.logs(frame.serviceId, frame.lines);
      case "runtime.end":
        return this.#runtimeLogs.end(frame.serviceId, frame.ok, frame.reason);
      case "service.removed":
        this.#sql.exec(
          "DELETE FROM service_removals WHERE service_id = ?",
          frame.serviceId,
        );
        return;
    }
  }

  async #hello(ws: WebSocket, frame: Extract<RunnerFrame, { type: "hello" }>) {
    if (frame.protocol !== PROTOCOL_VERSION) {
      ws.close(CLOSE_PROTOCOL, `Protocol ${frame.protocol} is not supported`);
      return;
    }
    this.#setFact("capacity", String(frame.capacity));
    const known = new Set(this.#leases().map((l) => l.lease_id));
    // A lease the runner still holds but we forgot (lapsed, finished) is void:
    // telling the runner so is what prevents a silent second run.
    const unknownLeaseIds = frame.leases
      .map((l) => l.leaseId)
      .filter((id) => !known.has(id));
    const held = new Set(frame.leases.map((l) => l.leaseId));
    for (const lease of this.#leases()) {
      if (held.has(lease.lease_id)) continue;
      if (lease.state === "offered") {
        // The offer died with the old connection.
        this.#dropLease(lease.lease_id);
      } else {
        // The runner restarted and lost the job: it must not run again.
        await this.#failLease(
          lease,
          `runner lost: runner ${this.#runnerId()} restarted and no longer holds the job`,
        );
      }
    }
    this.#renew(frame.leases.map((l) => l.leaseId));

    await database(this.env)
      .update(runners)
      .set({
        online: true,
        version: frame.version,
        capacity: frame.capacity,
        lastHeartbeatAt: new Date().toISOString(),
      })
      .where(eq(runners.id, this.#runnerId()));
    this.#send({
      type: "welcome",
      runnerId: this.#runnerId(),
      heartbeatIntervalMs: HEARTBEAT_INTERVAL_MS,
      unknownLeaseIds,
      orphanDeploymentIds: await this.#orphans(frame.inventory),
    });
    const removals = this.#sql
      .exec<{ service_id: string }>("SELECT service_id FROM service_removals")
      .toArray();
    for (const { service_id } of removals)
      this.#send({ type: "service.remove", serviceId: service_id });
    await this.#dispatch();
  }

  async #heartbeat(leaseIds: string[]) {
    this.#renew(leaseIds);
    await this.#stopVoidLeases(leaseIds);
    const now = Date.now();
    if (now - this.#lastHeartbeatWrite < HEARTBEAT_WRITE_INTERVAL_MS) return;
    this.#lastHeartbeatWrite = now;
    await database(this.env)
      .update(runners)
      .set({ online: true, lastHeartbeatAt: new Date(now).toISOString() })
      .where(eq(runners.id, this.#runnerId()));
  }

  async #accept(deploymentId: string, leaseId: string) {
    const lease = this.#lease(leaseId);
    if (!lease || lease.state !== "offered" || lease.deployment_id !== deploymentId) {
      this.#send({ type: "job.cancel", deploymentId, leaseId });
      return;
    }
    let started = false;
    try {
      started = await transition(
        this.env,
        deploymentId,
        ["queued"],
        "building",
        {
          startedAt: new Date().toISOString(),
          runnerId: this.#runnerId(),
          leaseId,
        },
        [{ line: `Runner ${this.#runnerId()} accepted the deployment` }],
      );
    } catch (error) {
      // The one-building-per-service index refused it: another build runs.
      console.error("RunnerChannel:accept", deploymentId, error);
    }
    if (!started) {
      this.#dropLease(leaseId);
      this.#send({ type: "job.cancel", deploymentId, leaseId });
      // The slot and the service are free again: a newer deployment may wait.
      await this.#dispatch();
      return;
    }
    this.#sql.exec(
      "UPDATE leases SET state = 'active', expires_at = ? WHERE lease_id = ?",
      Date.now() + this.#leaseTimeoutMs(),
      leaseId,
    );
    this.#send({ type: "job.start", deploymentId, leaseId });
  }

  async #reject(deploymentId: string, leaseId: string, reason: string) {
    if (!this.#lease(leaseId)) return;
    this.#dropLease(leaseId);
    // The job stays queued; it is offered again by a later watchdog round.
    this.#setFact(`rejected:${deploymentId}`, String(Date.now()));
    await deploymentLog(this.env, deploymentId).appendPlatform([
      {
        line: `Runner ${this.#runnerId()} cannot take the job yet: ${reason}`,
        stream: "stderr",
      },
    ]);
  }

  async #phase(frame: Extract<RunnerFrame, { type: "job.phase" }>) {
    const lease = this.#lease(frame.leaseId);
    // The image exists once the candidate starts.
    const built = frame.phase === "starting" && lease !== undefined;
    if (!frame.commitSha && !built) return;
    await database(this.env)
      .update(deployments)
      .set({
        ...(frame.commitSha ? { commitSha: frame.commitSha } : {}),
        ...(built
          ? { imageTag: builtImageTag(lease.service_id, frame.deploymentId) }
          : {}),
      })
      .where(
        and(
          eq(deployments.id, frame.deploymentId),
          eq(deployments.leaseId, frame.leaseId),
        ),
      );
  }

  async #logs(frame: Extract<RunnerFrame, { type: "logs" }>) {
    const { deploymentId, leaseId } = frame;
    if (!this.#lease(leaseId)) {
      // The lease is over: its result was recorded (and every line before
      // it), or it lapsed and the deployment failed. Nothing after that
      // belongs in the log; the runner may forget the lines.
      const seq = Math.max(...frame.lines.map((l) => l.seq));
      this.#send({ type: "logs.ack", deploymentId, leaseId, seq });
      await this.#stopVoidLeases([leaseId]);
      return;
    }
    const seq = await deploymentLog(this.env, deploymentId).appendRunner(
      leaseId,
      frame.lines,
    );
    this.#send({ type: "logs.ack", deploymentId, leaseId, seq });
  }

  /**
   * A runner still working under a lease that lapsed (say it was paused past
   * the timeout) learns here that its deployment failed, and stops before it
   * can swap anything in.
   */
  async #stopVoidLeases(leaseIds: string[]): Promise<void> {
    const known = new Set(this.#leases().map((l) => l.lease_id));
    const unknown = leaseIds.filter((id) => !known.has(id));
    if (unknown.length === 0) return;
    const rows = await database(this.env)
      .select({ id: deployments.id, leaseId: deployments.leaseId })
      .from(deployments)
      .where(
        and(
          inArray(deployments.leaseId, unknown.slice(0, 90)),
          inArray(deployments.status, ["failed", "aborted"]),
        ),
      );
    for (const row of rows) {
      this.#send({ type: "job.abort", deploymentId: row.id, leaseId: row.leaseId! });
    }
  }

  async #result(frame: Extract<RunnerFrame, { type: "job.result" }>) {
    const { deploymentId, leaseId } = frame;
    const db = database(this.env);
    const row = await db.query.deployments.findFirst({
      where: eq(deployments.id, deploymentId),
    });
    let accepted = false;
    if (row && row.leaseId === leaseId) {
      accepted = await recordResult(this.env, row.serviceId, frame);
      // Aborted while the runner finished: the abort already won, which is
      // all the runner needs to know to clean up or roll back.
      if (!accepted && frame.outcome !== "running") accepted = true;
    }
    this.#dropLease(leaseId);
    this.#send({ type: "job.result.ack", deploymentId, leaseId, accepted });
    await this.#dispatch();
  }

  // ── Dispatch and leases ───────────────────────────────────────────────────

  /** Offers queued deployments while the runner has free slots. */
  async #dispatch(): Promise<void> {
    if (this.#openSockets().length === 0 || this.#fact("capacity") === null) return;
    const leases = this.#leases();
    let free = Number(this.#fact("capacity")) - leases.length;
    if (free <= 0) return;

    const busy = new Set(leases.map((l) => l.service_id));
    for (const candidate of await queuedFor(this.env, this.#runnerId())) {
      if (free <= 0) break;
      if (busy.has(candidate.service.id)) continue;
      const rejectedAt = Number(this.#fact(`rejected:${candidate.deploymentId}`) ?? 0);
      if (Date.now() - rejectedAt < OFFER_TIMEOUT_MS) continue;

      const leaseId = newId("lse");
      this.#sql.exec(
        `INSERT INTO leases (lease_id, deployment_id, service_id, state, expires_at)
         VALUES (?, ?, ?, 'offered', ?)`,
        leaseId,
        candidate.deploymentId,
        candidate.service.id,
        Date.now() + OFFER_TIMEOUT_MS,
      );
      busy.add(candidate.service.id);
      free -= 1;
      this.#send({ type: "job.offer", job: await jobFor(this.env, leaseId, candidate) });
    }
  }

  /** Voids offers nobody accepted and active leases whose runner went quiet. */
  async #expireLeases(): Promise<void> {
    const now = Date.now();
    const seconds = Math.round(this.#leaseTimeoutMs() / 1000);
    for (const lease of this.#leases()) {
      if (lease.expires_at > now) continue;
      if (lease.state === "offered") this.#dropLease(lease.lease_id);
      else await this.#failLease(lease, `runner lost: no heartbeat for ${seconds} s`);
    }
  }

  /** Ends a building deployment whose lease is void; it is never rerun silently. */
  async #failLease(lease: Lease, reason: string): Promise<void> {
    this.#dropLease(lease.lease_id);
    await transition(
      this.env,
      lease.deployment_id,
      ["building"],
      "failed",
      {
        failureReason: reason,
      },
      [{ line: `Deployment failed: ${reason}`, stream: "stderr" }],
    );
  }

  /**
   * The deployments of `inventory` that never went live and hold no lease
   * here: what the runner's Docker keeps of them is left over.
   */
  async #orphans(inventory: string[]): Promise<string[]> {
    const leased = new Set(this.#leases().map((l) => l.deployment_id));
    const live = await wentLive(this.env, inventory);
    return inventory.filter((id) => !live.has(id) && !leased.has(id));
  }

  #renew(leaseIds: string[]): void {
    const expiresAt = Date.now() + this.#leaseTimeoutMs();
    for (const leaseId of leaseIds) {
      this.#sql.exec(
        "UPDATE leases SET expires_at = ? WHERE lease_id = ? AND state = 'active'",
        expiresAt,
        leaseId,
      );
    }
  }

  async #markOfflineIfGone(closed: WebSocket): Promise<void> {
    const others = this.#openSockets().filter((ws) => ws !== closed);
    if (others.length > 0) return;
    this.#runtimeLogs.disconnected();
    await database(this.env)
      .update(runners)
      .set({ online: false })
      .where(eq(runners.id, this.#runnerId()));
  }

  // ── Plumbing ──────────────────────────────────────────────────────────────

  #serially<T>(task: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(task);
    this.#queue = run.catch((error) => console.error("RunnerChannel:task", error));
    return run;
  }

  /** Sends a frame to the runner; false when no socket took it. */
  #send(frame: WorkerFrame): boolean {
    const text = JSON.stringify(frame);
    let sent = false;
    for (const ws of this.#openSockets()) {
      try {
        ws.send(text);
        sent = true;
      } catch (error) {
        console.error("RunnerChannel:send", frame.type, error);
      }
    }
    return sent;
  }

  async #scheduleWatchdog(): Promise<void> {
    const active = this.#openSockets().length > 0 || this.#leases().length > 0;
    if (active && (await this.ctx.storage.getAlarm()) === null) {
      await this.ctx.storage.setAlarm(Date.now() + WATCHDOG_INTERVAL_MS);
    }
  }

  /** Sockets still open: a replaced one lingers in getWebSockets() while closing. */
  #openSockets(): WebSocket[] {
    return this.ctx.getWebSockets().filter((ws) => ws.readyState === WebSocket.OPEN);
  }

  #leaseTimeoutMs(): number {
    return numberSetting(this.env, "LEASE_TIMEOUT_MS", 30_000);
  }

  #leases(): Lease[] {
    return this.#sql.exec<Lease>("SELECT * FROM leases").toArray();
  }

  #lease(leaseId: string): Lease | undefined {
    return this.#sql
      .exec<Lease>("SELECT * FROM leases WHERE lease_id = ?", leaseId)
      .toArray()[0];
  }

  #leaseOf(deploymentId: string): Lease | undefined {
    return this.#sql
      .exec<Lease>("SELECT * FROM leases WHERE deployment_id = ?", deploymentId)
      .toArray()[0];
  }

  #dropLease(leaseId: string): void {
    this.#sql.exec("DELETE FROM leases WHERE lease_id = ?", leaseId);
  }

  #runnerId(): string {
    const id = this.#fact("runnerId");
    if (!id) throw new Error("RunnerChannel used before a runner connected");
    return id;
  }

  #fact(key: string): string | null {
    return (
      this.#sql
        .exec<{ value: string }>("SELECT value FROM facts WHERE key = ?", key)
        .toArray()[0]?.value ?? null
    );
  }

  #setFact(key: string, value: string): void {
    this.#sql.exec(
      `INSERT INTO facts (key, value) VALUES (?, ?)
       ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
      key,
      value,
    );
  }
}
