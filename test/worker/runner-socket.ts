/**
 * A scripted runner for workerd tests: it speaks the real protocol over a
 * real WebSocket to the Worker's `/api/runners/connect`.
 */
import { SELF } from "cloudflare:test";
import { expect } from "vitest";
import {
  PROTOCOL_VERSION,
  parseFrame,
  workerFrame,
  type Job,
  type RunnerFrame,
  type WorkerFrame,
} from "../../schema/protocol";

type ResultDetails = { lastSeq?: number; commitSha?: string | null; reason?: string };

export class ScriptedRunner {
  #inbox: WorkerFrame[] = [];
  #waiters: (() => void)[] = [];

  /** Resolves with the close code once the Worker closes the socket. */
  readonly closed: Promise<number>;

  private constructor(readonly socket: WebSocket) {
    this.closed = new Promise((resolve) =>
      socket.addEventListener("close", (event) => resolve(event.code)),
    );
    socket.addEventListener("message", (event) => {
      const frame = parseFrame(workerFrame, event.data);
      expect(frame, `unparseable frame ${String(event.data)}`).not.toBeNull();
      this.#inbox.push(frame!);
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  static async connect(token: string): Promise<ScriptedRunner> {
    const res = await SELF.fetch("http://aeroplane.test/api/runners/connect", {
      headers: { Upgrade: "websocket", Authorization: `Bearer ${token}` },
    });
    expect(res.status).toBe(101);
    const socket = res.webSocket!;
    socket.accept();
    return new ScriptedRunner(socket);
  }

  send(frame: RunnerFrame): void {
    this.socket.send(JSON.stringify(frame));
  }

  hello(
    capacity = 2,
    leases: { deploymentId: string; leaseId: string }[] = [],
    inventory: string[] = [],
  ): void {
    this.send({
      type: "hello",
      protocol: PROTOCOL_VERSION,
      version: "test",
      capacity,
      leases,
      inventory,
    });
  }

  /** Waits for the next frame of `type`, skipping (and keeping) others. */
  async next<T extends WorkerFrame["type"]>(
    type: T,
    timeoutMs = 5_000,
  ): Promise<Extract<WorkerFrame, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.#inbox.findIndex((f) => f.type === type);
      if (index >= 0)
        return this.#inbox.splice(index, 1)[0] as Extract<WorkerFrame, { type: T }>;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`No ${type} frame within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        setTimeout(resolve, left);
      });
    }
  }

  /** Accepts the next offer and waits until the Worker says to start. */
  async acceptNext(): Promise<Job> {
    const { job } = await this.next("job.offer");
    this.send({
      type: "job.accept",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
    });
    await this.next("job.start");
    return job;
  }

  /** Reports a job's outcome, as the runner does once its lines are sent. */
  result(
    job: Pick<Job, "deploymentId" | "leaseId">,
    outcome: "running" | "failed" | "aborted",
    { lastSeq = 0, commitSha = null, reason }: ResultDetails = {},
  ): void {
    this.send({
      type: "job.result",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
      outcome,
      lastSeq,
      commitSha,
      ...(reason === undefined ? {} : { reason }),
    });
  }

  /** Frames of `type` received so far and not yet consumed. */
  pending(type: WorkerFrame["type"]): WorkerFrame[] {
    return this.#inbox.filter((f) => f.type === type);
  }

  close(): void {
    this.socket.close(1000, "done");
  }
}
