/**
 * Follows the output of services' live containers for the control plane.
 * Each service is followed at most once; the control plane fans the lines
 * out to however many clients watch, and says when the last one left.
 */
import type { RunnerFrame, RuntimeLogLine } from "../schema/protocol.js";
import type { DockerClient } from "./docker.js";
import { createLogger, errorMessage } from "./logger.js";

const log = createLogger("runner:runtime-logs");

/** Lines wait this long to be sent together. */
const BATCH_INTERVAL_MS = 100;
const MAX_LINES_PER_FRAME = 500;
/**
 * Live lines relayed per second and service. An app printing faster than a
 * person can read would otherwise flood the control plane, and with it the
 * deploys that share the runner's socket; the excess is counted, not sent.
 */
export const MAX_LIVE_LINES_PER_SECOND = 1_000;

export class RuntimeLogs {
  #follows = new Map<string, AbortController>();

  constructor(
    private readonly docker: DockerClient,
    /** Sends a frame if connected; lines of a lost connection are not kept. */
    private readonly send: (frame: RunnerFrame) => void,
  ) {}

  /**
   * Starts following `aeroplane-<serviceId>-stable`: a `runtime.snapshot` of
   * the lines it wrote before now (the last `tail`), then `runtime.logs`, and
   * `runtime.end` when its log ends.
   */
  follow(serviceId: string, tail: number): void {
    if (this.#follows.has(serviceId)) return;
    const controller = new AbortController();
    this.#follows.set(serviceId, controller);
    void this.#run(serviceId, tail, controller.signal).finally(() => {
      if (this.#follows.get(serviceId) === controller) this.#follows.delete(serviceId);
    });
  }

  unfollow(serviceId: string): void {
    const controller = this.#follows.get(serviceId);
    if (!controller) return;
    controller.abort();
    this.#follows.delete(serviceId);
    log.info("Stopped following runtime logs", { service: serviceId });
  }

  /** Stops every follow, e.g. when the connection to the control plane drops. */
  stopAll(): void {
    for (const serviceId of [...this.#follows.keys()]) this.unfollow(serviceId);
  }

  async #run(serviceId: string, tail: number, signal: AbortSignal): Promise<void> {
    const container = `aeroplane-${serviceId}-stable`;
    const state = await this.docker.inspect(container).catch(() => null);
    if (!state?.running) {
      this.send({
        type: "runtime.end",
        serviceId,
        ok: false,
        reason: "no live container",
      });
      return;
    }
    log.info("Following runtime logs", { service: serviceId, container });

    // Docker sends the last `tail` lines first, then new ones; what it wrote
    // before we asked is the snapshot.
    const since = new Date().toISOString();
    const snapshot: RuntimeLogLine[] = [];
    const live: RuntimeLogLine[] = [];
    let snapshotSent = false;
    let windowStart = Date.now();
    let windowLines = 0;
    let skipped = 0;
    const keepLive = (line: RuntimeLogLine) => {
      const now = Date.now();
      if (now - windowStart >= 1_000) {
        windowStart = now;
        windowLines = 0;
      }
      if (windowLines >= MAX_LIVE_LINES_PER_SECOND) skipped++;
      else {
        windowLines++;
        live.push(line);
      }
    };
    const flush = () => {
      if (skipped > 0) {
        live.push({
          line:
            `[aeroplane] skipped ${skipped} lines: the app wrote more than ` +
            `${MAX_LIVE_LINES_PER_SECOND} lines per second`,
          stream: "stderr",
          at: new Date().toISOString(),
        });
        skipped = 0;
      }
      if (!snapshotSent) {
        this.send({ type: "runtime.snapshot", serviceId, lines: snapshot.splice(0) });
        snapshotSent = true;
      }
      while (live.length > 0) {
        this.send({
          type: "runtime.logs",
          serviceId,
          lines: live.splice(0, MAX_LINES_PER_FRAME),
        });
      }
    };
    const timer = setInterval(flush, BATCH_INTERVAL_MS);
    try {
      await this.docker.followLogs(container, {
        tail,
        signal,
        onLine: (line) => {
          if (!snapshotSent && line.at < since) snapshot.push(line);
          else keepLive(line);
        },
      });
      flush();
      if (!signal.aborted) {
        log.info("Runtime log ended", { service: serviceId });
        this.send({ type: "runtime.end", serviceId, ok: true });
      }
    } catch (error) {
      if (signal.aborted) return;
      flush();
      log.warn("Following runtime logs failed", { service: serviceId, error });
      this.send({
        type: "runtime.end",
        serviceId,
        ok: false,
        reason: errorMessage(error),
      });
    } finally {
      clearInterval(timer);
    }
  }
}
