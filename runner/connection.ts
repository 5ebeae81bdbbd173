/**
 * The runner's control connection: one WebSocket to the control plane,
 * reopened forever with exponential backoff and full jitter.
 *
 * It only moves frames. Parsing happens on arrival against the shared zod
 * schemas; what a frame means is the agent's business.
 *
 * Three answers end it for good instead of a reconnect, because retrying
 * cannot change them: another runner connected with the same token (the
 * newest connection wins; two runners retrying would take turns forever),
 * the runner was removed, or the token is refused at the handshake.
 */
import WebSocket from "ws";
import {
  parseFrame,
  workerFrame,
  type RunnerFrame,
  type WorkerFrame,
} from "../schema/protocol.js";
import { createLogger, errorMessage } from "./logger.js";

const log = createLogger("runner:ws");

/** What the connection reports to (the agent, in the runner). */
export interface ConnectionHandlers {
  connected(send: (frame: RunnerFrame) => void): void;
  received(frame: WorkerFrame): void;
  disconnected(): void;
}

export interface ConnectionOptions {
  /** The control plane's base URL, e.g. https://aeroplane.example.com. */
  url: string;
  /** The runner token, `apr_…`. */
  token: string;
  handlers: ConnectionHandlers;
  /** First retry delay bound; doubles per failed attempt up to `maxDelayMs`. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** A connection that lasted this long resets the backoff. */
  stableAfterMs?: number;
  /** A WebSocket ping goes out this often; no pong by the next one = dead. */
  pingIntervalMs?: number;
  /** For tests: a deterministic source of jitter. */
  random?: () => number;
  /**
   * Called once, instead of a reconnect, when the control plane ends this
   * runner's connection for good; `reason` says why, for the operator.
   */
  onEnded?: (reason: string) => void;
}

/** `https://host/base` → `wss://host/base/api/runners/connect`. */
export function controlSocketUrl(baseUrl: string): string {
  const url = new URL(baseUrl);
  url.protocol =
    url.protocol === "https:" ? "wss:" : url.protocol === "http:" ? "ws:" : url.protocol;
  url.pathname = `${url.pathname.replace(/\/+$/, "")}/api/runners/connect`;
  return url.toString();
}

/**
 * Full-jitter backoff: a uniformly random delay below min(cap, base·2^attempt),
 * so runners that lost the control plane together do not return together.
 */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  return Math.floor(random() * Math.min(capMs, baseMs * 2 ** attempt));
}

/** Close codes the control plane uses, worth a clear word in the log. */
const closeReasons: Record<number, string> = {
  4001: "the control plane rejected a frame or the protocol version",
};

/** Close codes after which reconnecting is pointless, and what to tell the operator. */
const finalCloses: Record<number, string> = {
  4000: "Another runner connected with this token; this one stops",
  4003: "The control plane removed this runner; register the runner again to use this host",
};

/** Said when the handshake is answered 401. */
const tokenRefused =
  "The control plane refused this runner's token; register the runner again";

export class ControlConnection {
  readonly #options: Required<Omit<ConnectionOptions, "onEnded">> & ConnectionOptions;
  readonly #url: string;
  #socket: WebSocket | null = null;
  #attempt = 0;
  #stopped = false;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: ConnectionOptions) {
    this.#options = {
      baseDelayMs: 250,
      maxDelayMs: 15_000,
      stableAfterMs: 30_000,
      pingIntervalMs: 20_000,
      random: Math.random,
      ...options,
    };
    this.#url = controlSocketUrl(options.url);
  }

  start(): void {
    this.#stopped = false;
    this.#open();
  }

  /** Closes the socket (sending what is buffered first) and stops reconnecting. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    const socket = this.#socket;
    if (!socket || socket.readyState === WebSocket.CLOSED) return;
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.close(1000, "The runner is stopping");
    const timer = setTimeout(() => socket.terminate(), 2_000);
    await closed;
    clearTimeout(timer);
  }

  #open(): void {
    const { handlers } = this.#options;
    log.debug("Connecting…", { url: this.#url });
    const socket = new WebSocket(this.#url, {
      headers: { Authorization: `Bearer ${this.#options.token}` },
      handshakeTimeout: 15_000,
    });
    this.#socket = socket;
    let openedAt: number | null = null;
    let pingTimer: ReturnType<typeof setInterval> | undefined;
    /** Why this connection ends the runner's, when it does. */
    let final: string | null = null;

    socket.on("open", () => {
      openedAt = Date.now();
      log.info("Connected to the control plane", { url: this.#url });
      pingTimer = this.#keepAlive(socket);
      handlers.connected((frame) => this.#send(socket, frame));
    });

    socket.on("message", (data, isBinary) => {
      const frame = isBinary ? null : parseFrame(workerFrame, data.toString());
      if (!frame) {
        log.warn("Ignored a frame that is not part of the protocol", {
          frame: data.toString().slice(0, 200),
        });
        return;
      }
      log.debug("Received", { type: frame.type });
      handlers.received(frame);
    });

    socket.on("error", (error) => {
      if (handshakeStatus(error) === 401) final = tokenRefused;
      else log.warn(explainError(error), { url: this.#url });
    });

    socket.on("close", (code, reason) => {
      clearInterval(pingTimer);
      if (this.#socket === socket) this.#socket = null;
      final ??= finalCloses[code] ?? null;
      if (openedAt !== null) {
        const why = closeReasons[code] ?? (reason.toString() || `code ${code}`);
        if (this.#stopped || final) log.info("Disconnected from the control plane");
        else log.warn("Disconnected from the control plane", { reason: why });
        handlers.disconnected();
        if (Date.now() - openedAt >= this.#options.stableAfterMs) this.#attempt = 0;
      }
      if (final && !this.#stopped) return this.#end(final);
      this.#scheduleReconnect();
    });
  }

  #send(socket: WebSocket, frame: RunnerFrame): void {
    if (socket.readyState !== WebSocket.OPEN) return;
    log.debug("Sending", { type: frame.type });
    socket.send(JSON.stringify(frame), (error) => {
      // The outbox keeps what matters until it is acknowledged.
      if (error) log.debug("A frame was not sent", { type: frame.type, error });
    });
  }

  /**
   * Pings the control plane; a socket that does not answer by the next ping
   * is dead (a silently dropped NAT entry, a vanished host) and is dropped.
   */
  #keepAlive(socket: WebSocket): ReturnType<typeof setInterval> {
    let answered = true;
    socket.on("pong", () => (answered = true));
    return setInterval(() => {
      if (!answered) {
        log.warn("The control plane stopped answering pings; reconnecting");
        socket.terminate();
        return;
      }
      answered = false;
      socket.ping();
    }, this.#options.pingIntervalMs);
  }

  /** Stops for good: no reconnect; the owner decides what the process does. */
  #end(reason: string): void {
    this.#stopped = true;
    log.error(reason, { url: this.#url });
    this.#options.onEnded?.(reason);
  }

  #scheduleReconnect(): void {
    if (this.#stopped) return;
    const { baseDelayMs, maxDelayMs, random } = this.#options;
    const delay = backoffDelay(this.#attempt, baseDelayMs, maxDelayMs, random);
    this.#attempt += 1;
    log.info("Reconnecting", { inMs: delay, attempt: this.#attempt });
    this.#retryTimer = setTimeout(() => this.#open(), delay);
  }
}

/** The HTTP status that answered the WebSocket handshake, when it failed on one. */
function handshakeStatus(error: Error): number | null {
  const status = /Unexpected server response: (\d+)/.exec(error.message)?.[1];
  return status ? Number(status) : null;
}

/** Turns the handshake's raw errors into what an operator can act on. */
function explainError(error: Error): string {
  const status = handshakeStatus(error);
  // 403 may come from a proxy in front of the control plane, so it is retried.
  if (status === 403) {
    return "The control plane refused the runner token (HTTP 403); check --token or AEROPLANE_RUNNER_TOKEN";
  }
  if (status === 404) {
    return "The control plane has no runner endpoint at this URL (HTTP 404); check --url or AEROPLANE_URL";
  }
  return `Control connection failed: ${errorMessage(error)}`;
}
