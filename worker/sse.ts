/**
 * Server-Sent Events fan-out: one writer per connected client, with
 * keep-alive pings, for the Durable Objects that stream logs.
 */

const encoder = new TextEncoder();

export type SseEvent = { event: string; data: unknown; id?: number };

/** Encodes one event. `data` is JSON on a single line, so no line splitting is needed. */
export function encodeEvent({ event, data, id }: SseEvent): Uint8Array {
  const idLine = id === undefined ? "" : `id: ${id}\n`;
  return encoder.encode(`event: ${event}\n${idLine}data: ${JSON.stringify(data)}\n\n`);
}

/**
 * Bytes a client may fall behind before it is dropped. A dropped client
 * reconnects with Last-Event-ID and loses nothing, whereas an unbounded
 * queue would let one slow reader exhaust the object's memory.
 */
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** A set of SSE clients that receive the same events. */
type Client = {
  writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Bytes written but not yet taken by the client. */
  pending: number;
};

export class SseHub {
  #clients = new Set<Client>();
  #pingTimer: ReturnType<typeof setInterval> | undefined;

  /**
   * @param onEmpty called when the last client leaves (or is dropped); a
   * client that goes away is noticed at the next write, a ping at the latest.
   */
  constructor(
    readonly pingIntervalMs: number,
    private readonly onEmpty: () => void = () => {},
  ) {}

  get size(): number {
    return this.#clients.size;
  }

  /**
   * Opens a stream whose first bytes are `initial`; later broadcasts follow.
   * With `close`, the stream ends after `initial` (the subject is finished).
   */
  open(initial: SseEvent[], close = false): Response {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
    const client: Client = { writer: writable.getWriter(), pending: 0 };
    // The first events (a snapshot can be megabytes) are owed in full; only
    // what piles up behind them counts against the client's allowance.
    for (const event of initial) client.writer.write(encodeEvent(event)).catch(() => {});
    if (close) {
      client.writer.close().catch(() => {});
    } else {
      this.#clients.add(client);
      this.#schedulePings();
    }
    return new Response(readable, {
      headers: {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-transform",
        // Tells nginx-style proxies not to buffer the stream.
        "X-Accel-Buffering": "no",
      },
    });
  }

  broadcast(event: SseEvent): void {
    if (this.#clients.size === 0) return;
    const bytes = encodeEvent(event);
    for (const client of this.#clients) this.#write(client, bytes);
  }

  /** Sends `last` to every client and ends their streams. */
  closeAll(last?: SseEvent): void {
    for (const client of this.#clients) {
      if (last) this.#write(client, encodeEvent(last));
      client.writer.close().catch(() => {});
    }
    this.#clients.clear();
    this.#schedulePings();
  }

  #write(client: Client, bytes: Uint8Array): void {
    // The runtime's identity stream applies backpressure per write rather than
    // per byte, so count what is still queued ourselves.
    if (client.pending > MAX_BUFFERED_BYTES) {
      this.#drop(client);
      return;
    }
    client.pending += bytes.byteLength;
    client.writer.write(bytes).then(
      () => (client.pending -= bytes.byteLength),
      // A rejected write means the client went away.
      () => this.#drop(client),
    );
  }

  #drop(client: Client): void {
    if (!this.#clients.delete(client)) return;
    // close() rather than abort(): workerd reports an aborted body stream as
    // an uncaught error, and the client is gone or resumes with Last-Event-ID.
    client.writer.close().catch(() => {});
    this.#schedulePings();
    if (this.#clients.size === 0) this.onEmpty();
  }

  #schedulePings(): void {
    if (this.#clients.size > 0 && this.#pingTimer === undefined) {
      this.#pingTimer = setInterval(
        () => this.broadcast({ event: "ping", data: { t: Date.now() } }),
        this.pingIntervalMs,
      );
    } else if (this.#clients.size === 0 && this.#pingTimer !== undefined) {
      clearInterval(this.#pingTimer);
      this.#pingTimer = undefined;
    }
  }
}

/**
 * Passes a Durable Object's SSE response on to the client, cancelling the
 * object's stream when the client hangs up: that is how a hub learns at once
 * that the client left (the object's own request signal does not fire).
 */
export function relayUntilHangUp(res: Response, clientSignal: AbortSignal): Response {
  if (!res.body) return res;
  const { readable, writable } = new TransformStream();
  res.body.pipeTo(writable, { signal: clientSignal }).catch(() => {});
  return new Response(readable, res);
}
