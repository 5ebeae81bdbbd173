/**
 * Runtime-log relay inside a RunnerChannel: fans a service's live container
 * output out to SSE clients. However many clients watch a service, the
 * runner follows its Docker log once; the follow stops when the last client
 * leaves.
 */
import type { RuntimeLogLine, WorkerFrame } from "../../schema/protocol";
import { SseHub, type SseEvent } from "../sse";

/** Lines kept per service, so a client that joins a follow gets a snapshot. */
const KEPT_LINES = 10_000;
/** How long a first client waits for the runner's snapshot. */
const SNAPSHOT_TIMEOUT_MS = 10_000;

type RuntimeLogEvent = {
  id: number;
  line: string;
  stream: "stdout" | "stderr";
  createdAt: string;
};

/** One followed service: its clients, its recent lines, its state. */
class Follow {
  readonly hub: SseHub;
  readonly lines: RuntimeLogEvent[] = [];
  nextId = 1;
  /** Resolves once the runner sent the snapshot, or with the end's status. */
  readonly ready: Promise<SseEvent | null>;
  settle!: (end: SseEvent | null) => void;

  constructor(pingIntervalMs: number, onEmpty: () => void) {
    this.hub = new SseHub(pingIntervalMs, onEmpty);
    this.ready = new Promise((resolve) => (this.settle = resolve));
  }

  add(lines: RuntimeLogLine[]): RuntimeLogEvent[] {
    const events = lines.map(({ line, stream, at }) => ({
      id: this.nextId++,
      line,
      stream,
      createdAt: at,
    }));
    this.lines.push(...events);
    if (this.lines.length > KEPT_LINES)
      this.lines.splice(0, this.lines.length - KEPT_LINES);
    return events;
  }
}

const statusEvent = (data: {
  ok: boolean;
  closed?: boolean;
  reason?: string;
}): SseEvent => ({
  event: "status",
  data,
});

export class RuntimeLogRelay {
  #follows = new Map<string, Follow>();

  constructor(
    private readonly send: (frame: WorkerFrame) => boolean,
    private readonly pingIntervalMs: number,
  ) {}

  /** Opens a client's stream: a snapshot of the last `tail` lines, then live lines. */
  async open(serviceId: string, tail: number): Promise<Response> {
    let follow = this.#follows.get(serviceId);
    if (!follow) {
      follow = new Follow(this.pingIntervalMs, () => this.#stop(serviceId));
      this.#follows.set(serviceId, follow);
      if (!this.send({ type: "runtime.follow", serviceId, tail: Math.max(tail, 200) })) {
        this.#follows.delete(serviceId);
        return endedStream(statusEvent({ ok: false, reason: "runner offline" }));
      }
      const created = follow;
      setTimeout(
        () =>
          created.settle(statusEvent({ ok: false, reason: "the runner did not answer" })),
        SNAPSHOT_TIMEOUT_MS,
      );
    }
    const end = await follow.ready;
    if (end) {
      if (this.#follows.get(serviceId) === follow && follow.hub.size === 0) {
        this.#follows.delete(serviceId);
      }
      return endedStream(end);
    }
    const snapshot = tail === 0 ? [] : follow.lines.slice(-tail);
    return follow.hub.open([
      { event: "snapshot", data: snapshot, id: snapshot.at(-1)?.id ?? 0 },
    ]);
  }

  snapshot(serviceId: string, lines: RuntimeLogLine[]): void {
    const follow = this.#follows.get(serviceId);
    if (!follow) return;
    follow.add(lines);
    follow.settle(null);
  }

  logs(serviceId: string, lines: RuntimeLogLine[]): void {
    const follow = this.#follows.get(serviceId);
    if (!follow) return;
    for (const event of follow.add(lines)) {
      follow.hub.broadcast({ event: "log", data: event, id: event.id });
    }
  }

  end(serviceId: string, ok: boolean, reason?: string): void {
    const follow = this.#follows.get(serviceId);
    if (!follow) return;
    this.#follows.delete(serviceId);
    const status = statusEvent(ok ? { ok: true, closed: true } : { ok: false, reason });
    follow.settle(status);
    follow.hub.closeAll(status);
  }

  /** The runner went away: every follow ends. */
  disconnected(): void {
    for (const serviceId of [...this.#follows.keys()]) {
      this.end(serviceId, false, "runner offline");
    }
  }

  #stop(serviceId: string): void {
    if (!this.#follows.delete(serviceId)) return;
    this.send({ type: "runtime.unfollow", serviceId });
  }
}

/** A stream that says one status and ends. */
function endedStream(status: SseEvent): Response {
  return new SseHub(60_000).open([status], true);
}
