/**
 * DeploymentLog: one Durable Object per deployment. It owns the deployment's
 * log lines (in its own SQLite), knows the deployment's latest status, and
 * fans both out to SSE clients.
 *
 * Runner lines arrive numbered per lease. They are stored only in sequence
 * (seq = last stored + 1) and idempotently, so a resend after a reconnect
 * neither duplicates nor reorders, and the public `id` follows `seq` order.
 */
import { DurableObject } from "cloudflare:workers";
import type { LogLine } from "../../schema/api";
import type { RunnerLogLine } from "../../schema/protocol";
import type { deploymentStatuses } from "../../schema/tables";
import { numberSetting } from "../router";
import { SseHub, type SseEvent } from "../sse";

export type DeploymentStatus = (typeof deploymentStatuses)[number];
export type PlatformLine = { line: string; stream?: "stdout" | "stderr" };

const TERMINAL: ReadonlySet<DeploymentStatus> = new Set([
  "running",
  "failed",
  "aborted",
  "superseded",
]);

type Row = { id: number; line: string; stream: "stdout" | "stderr"; created_at: string };

export class DeploymentLog extends DurableObject<Env> {
  #sql: SqlStorage;
  #hub: SseHub;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    this.#sql = ctx.storage.sql;
    this.#hub = new SseHub(numberSetting(env, "SSE_PING_INTERVAL_MS", 15_000));
    this.#sql.exec(`
      CREATE TABLE IF NOT EXISTS log_lines (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        lease_id TEXT,
        seq INTEGER,
        line TEXT NOT NULL,
        stream TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE UNIQUE INDEX IF NOT EXISTS log_lines_lease_seq
        ON log_lines (lease_id, seq) WHERE lease_id IS NOT NULL;
      CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    `);
  }

  /** Records which deployment this object logs for, and its first status. */
  async open(deploymentId: string, status: DeploymentStatus): Promise<void> {
    this.#setFact("deploymentId", deploymentId);
    if (this.#fact("status") === null) this.#setFact("status", status);
  }

  /** Appends lines the platform itself writes ("Queued", "Runner lost", …). */
  async appendPlatform(lines: PlatformLine[]): Promise<void> {
    const at = new Date().toISOString();
    for (const { line, stream = "stdout" } of lines) {
      this.#insert(null, null, line, stream, at);
    }
  }

  /**
   * Stores a batch of a runner's lines for `leaseId` and returns the highest
   * seq stored without a gap: the runner may forget every line up to it.
   */
  async appendRunner(leaseId: string, lines: RunnerLogLine[]): Promise<number> {
    let stored = this.storedSeq(leaseId);
    for (const line of [...lines].sort((a, b) => a.seq - b.seq)) {
      // Lines already stored are resends; lines past a gap wait for the gap.
      if (line.seq !== stored + 1) continue;
      this.#insert(leaseId, line.seq, line.line, line.stream, line.at);
      stored = line.seq;
    }
    return stored;
  }

  /** The highest seq of `leaseId` stored without a gap (0 if none). */
  storedSeq(leaseId: string): number {
    const row = this.#sql
      .exec<{ seq: number | null }>(
        "SELECT MAX(seq) AS seq FROM log_lines WHERE lease_id = ?",
        leaseId,
      )
      .one();
    return row.seq ?? 0;
  }

  /** Records a status change, tells SSE clients, and ends their streams if final. */
  async setStatus(status: DeploymentStatus): Promise<void> {
    if (this.#fact("status") === status) return;
    this.#setFact("status", status);
    const event = this.#statusEvent(status);
    if (TERMINAL.has(status)) this.#hub.closeAll(event);
    else this.#hub.broadcast(event);
  }

  /** Lines with id greater than `afterId`, oldest first. */
  async read(afterId = 0, limit = 100_000): Promise<LogLine[]> {
    const deploymentId = this.#fact("deploymentId") ?? "";
    return this.#sql
      .exec<Row>(
        "SELECT id, line, stream, created_at FROM log_lines WHERE id > ? ORDER BY id LIMIT ?",
        afterId,
        limit,
      )
      .toArray()
      .map((row) => toLogLine(deploymentId, row));
  }

  /**
   * The SSE stream: a `snapshot` of every line after `lastEventId`, then live
   * `log` events, `status` events and `ping`s. The stream ends with the
   * first terminal status (`running` included: the deploy is over).
   */
  async fetch(request: Request): Promise<Response> {
    const asked = Number(request.headers.get("Last-Event-ID") ?? 0);
    // A cursor past the end resumes at the end, so ids never go backwards.
    const lastEventId = Math.min(Number.isSafeInteger(asked) ? asked : 0, this.#lastId());
    const snapshot = await this.read(lastEventId);
    const status = (this.#fact("status") ?? "queued") as DeploymentStatus;
    const initial: SseEvent[] = [
      { event: "snapshot", data: snapshot, id: snapshot.at(-1)?.id ?? lastEventId },
      this.#statusEvent(status),
    ];
    return this.#hub.open(initial, TERMINAL.has(status));
  }

  #insert(
    leaseId: string | null,
    seq: number | null,
    line: string,
    stream: "stdout" | "stderr",
    at: string,
  ): void {
    const row = this.#sql
      .exec<{ id: number }>(
        `INSERT INTO log_lines (lease_id, seq, line, stream, created_at)
         VALUES (?, ?, ?, ?, ?) RETURNING id`,
        leaseId,
        seq,
        line,
        stream,
        at,
      )
      .one();
    const logLine = toLogLine(this.#fact("deploymentId") ?? "", {
      id: row.id,
      line,
      stream,
      created_at: at,
    });
    this.#hub.broadcast({ event: "log", data: logLine, id: row.id });
  }

  #lastId(): number {
    return (
      this.#sql.exec<{ id: number | null }>("SELECT MAX(id) AS id FROM log_lines").one()
        .id ?? 0
    );
  }

  #statusEvent(status: DeploymentStatus): SseEvent {
    return {
      event: "status",
      data: { deploymentId: this.#fact("deploymentId"), status },
    };
  }

  #fact(key: string): string | null {
    const rows = this.#sql
      .exec<{ value: string }>("SELECT value FROM facts WHERE key = ?", key)
      .toArray();
    return rows[0]?.value ?? null;
  }

  #setFact(key: string, value: string): void {
    this.#sql.exec(
      "INSERT INTO facts (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?",
      key,
      value,
      value,
    );
  }
}

function toLogLine(deploymentId: string, row: Row): LogLine {
  return {
    id: row.id,
    deploymentId,
    line: row.line,
    stream: row.stream,
    createdAt: row.created_at,
  };
}
