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
export class SseHub {
  #clients = new Set<WritableStreamDefaultWriter<Uint8Array>>();
  #pingTimer: ReturnType<typeof setInterval> | undefined;

  constructor(readonly pingIntervalMs: number) {}

  get size(): number {
    return this.#clients.size;
  }

  /**
   * Opens a stream whose first bytes are `initial`; later broadcasts follow.
   * With `close`, the stream ends after `initial` (the subject is finished).
   */
  open(initial: SseEvent[], close = false): Response {
    const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>(
      undefined,
      undefined,
      { highWaterMark: MAX_BUFFERED_BYTES, size: (chunk) => chunk.byteLength },
    );
    const writer = writable.getWriter();
    for (const event of initial) this.#write(writer, encodeEvent(event));
    if (close) {
      writer.close().catch(() => {});
    } else {
      this.#clients.add(writer);
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
    for (const writer of this.#clients) this.#write(writer, bytes);
  }

  /** Sends `last` to every client and ends their streams. */
  closeAll(last?: SseEvent): void {
    for (const writer of this.#clients) {
      if (last) this.#write(writer, encodeEvent(last));
      writer.close().catch(() => {});
    }
    this.#clients.clear();
    this.#schedulePings();
  }

  #write(writer: WritableStreamDefaultWriter<Uint8Array>, bytes: Uint8Array): void {
    if (writer.desiredSize !== null && writer.desiredSize < 0) {
      this.#drop(writer);
      return;
    }
    // A rejected write means the client went away.
    writer.write(bytes).catch(() => this.#drop(writer));
  }

  #drop(writer: WritableStreamDefaultWriter<Uint8Array>): void {
    if (!this.#clients.delete(writer)) return;
    writer.abort().catch(() => {});
    this.#schedulePings();
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
