/**
 * A control plane for runner tests whose every move the test scripts: a
 * real WebSocket server at the runner endpoint that records the frames the
 * runner sends (each checked against the shared schema) and sends what the
 * test says, when it says. Like the Worker, it lets a newer connection
 * replace an older one (close code 4000), and it can refuse the token.
 */
import { once } from "node:events";
import type { AddressInfo } from "node:net";
import { WebSocketServer, type VerifyClientCallbackAsync, type WebSocket } from "ws";
import {
  parseFrame,
  runnerFrame,
  type Job,
  type RunnerFrame,
  type WorkerFrame,
} from "../../../schema/protocol.js";

/** A control plane whose every move the test scripts. */
export class ScriptedControlPlane {
  readonly frames: RunnerFrame[] = [];
  readonly authorizations: (string | undefined)[] = [];
  /** Answer every handshake with this HTTP status instead of accepting it. */
  refuseWith: number | null = null;
  #server!: WebSocketServer;
  #socket: WebSocket | null = null;
  #listeners: ((frame: RunnerFrame) => void)[] = [];

  private constructor() {}

  #listen(server: WebSocketServer): void {
    this.#server = server;
    server.on("connection", (socket, request) => {
      // The newest connection wins, as the Worker decides.
      this.#socket?.close(4000, "Replaced by a newer connection");
      this.#socket = socket;
      this.authorizations.push(request.headers.authorization);
      socket.on("message", (data) => {
        const frame = parseFrame(runnerFrame, data.toString());
        // Every frame the runner sends must match the shared schema.
        if (!frame) throw new Error(`Invalid frame: ${data.toString()}`);
        this.frames.push(frame);
        for (const listener of this.#listeners) listener(frame);
      });
    });
  }

  static async start(): Promise<ScriptedControlPlane> {
    const plane = new ScriptedControlPlane();
    const verifyClient: VerifyClientCallbackAsync = (info, accept) => {
      if (plane.refuseWith === null) return accept(true);
      plane.authorizations.push(info.req.headers.authorization);
      accept(false, plane.refuseWith, "Invalid runner token");
    };
    const server = new WebSocketServer({
      port: 0,
      host: "127.0.0.1",
      path: "/api/runners/connect",
      verifyClient,
    });
    await once(server, "listening");
    plane.#listen(server);
    return plane;
  }

  /** How many handshakes arrived, accepted or refused. */
  get connections(): number {
    return this.authorizations.length;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Calls `listener` with every frame as it arrives, to answer at once. */
  onFrame(listener: (frame: RunnerFrame) => void): void {
    this.#listeners.push(listener);
  }

  send(frame: WorkerFrame): void {
    this.#socket?.send(JSON.stringify(frame));
  }

  /** Waits for the first frame from index `from` on that matches. */
  async next<T extends RunnerFrame["type"]>(
    type: T,
    from = 0,
    match: (frame: Extract<RunnerFrame, { type: T }>) => boolean = () => true,
    timeoutMs = 15_000,
  ): Promise<Extract<RunnerFrame, { type: T }> & { index: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      for (let index = from; index < this.frames.length; index++) {
        const frame = this.frames[index];
        if (frame.type === type && match(frame as Extract<RunnerFrame, { type: T }>)) {
          return { ...(frame as Extract<RunnerFrame, { type: T }>), index };
        }
      }
      if (Date.now() > deadline) throw new Error(`No ${type} frame arrived`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  /** Greets the runner's next hello; returns the hello. */
  async welcome(
    from: number,
    unknownLeaseIds: string[] = [],
    orphanDeploymentIds: string[] = [],
  ) {
    const hello = await this.next("hello", from);
    this.send({
      type: "welcome",
      runnerId: "run_1",
      heartbeatIntervalMs: 50,
      unknownLeaseIds,
      orphanDeploymentIds,
    });
    return hello;
  }

  /** Offers `job` and starts it once accepted. */
  async startJob(job: Job): Promise<void> {
    const from = this.frames.length;
    this.send({ type: "job.offer", job });
    await this.next("job.accept", from, (frame) => frame.leaseId === job.leaseId);
    this.send({
      type: "job.start",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
    });
  }

  /** Closes the connection with a close frame, as the Worker ends one. */
  close(code: number, reason: string): void {
    this.#socket?.close(code, reason);
    this.#socket = null;
  }

  /** Cuts the connection the way a network failure would. */
  drop(): void {
    this.#socket?.terminate();
    this.#socket = null;
  }

  async stop(): Promise<void> {
    for (const client of this.#server.clients) client.terminate();
    await new Promise((resolve) => this.#server.close(resolve));
  }
}
