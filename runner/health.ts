/**
 * HTTP health checks: is the app in a container answering on its port?
 *
 * Any status from 200 to 399 counts as healthy — a redirect to a login page
 * still proves the app is up.
 */
import http from "node:http";
import type { Clock } from "./clock.js";

export type ProbeResult = { status: number } | { error: string };

export const isHealthy = (result: ProbeResult): result is { status: number } =>
  "status" in result && result.status >= 200 && result.status < 400;

/** One GET of `http://host:port/path`, answered or failed within `timeoutMs`. */
export function probeHttp(
  host: string,
  port: number,
  path: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const request = http.get(
      {
        host,
        port,
        path,
        timeout: timeoutMs,
        signal,
        agent: false,
        headers: { connection: "close" },
      },
      (response) => {
        response.resume();
        resolve({ status: response.statusCode ?? 0 });
      },
    );
    request.on("timeout", () =>
      request.destroy(new Error(`no answer within ${timeoutMs} ms`)),
    );
    request.on("error", (error: NodeJS.ErrnoException) =>
      resolve({ error: error.code ?? error.message }),
    );
  });
}

/** The least time a probe gets to be answered. */
const minProbeMs = 200;

export type WaitResult =
  | { outcome: "healthy"; status: number }
  /** `isAlive` said no: the process under test is gone. */
  | { outcome: "exited" }
  /** Never healthy in time; `last` is the last probe's result. */
  | { outcome: "timeout"; last: ProbeResult | null };

/**
 * Probes until healthy, until `isAlive` reports the app gone, or until
 * `timeoutMs` has passed. Rejects only when `signal` aborts.
 */
export async function waitUntilHealthy(options: {
  probe: (timeoutMs: number) => Promise<ProbeResult>;
  isAlive?: () => Promise<boolean>;
  timeoutMs: number;
  intervalMs?: number;
  clock: Clock;
  signal: AbortSignal;
}): Promise<WaitResult> {
  const { clock, signal } = options;
  const interval = options.intervalMs ?? 500;
  const deadline = clock.now() + options.timeoutMs;
  let last: ProbeResult | null = null;

  for (;;) {
    signal.throwIfAborted();
    if (options.isAlive && !(await options.isAlive())) return { outcome: "exited" };

    // A probe squeezed into the last milliseconds can only time out, and
    // would hide what the one before saw (an HTTP 404, say).
    const remaining = deadline - clock.now();
    if (last !== null && remaining < minProbeMs) return { outcome: "timeout", last };
    last = await options.probe(Math.max(minProbeMs, Math.min(2_000, remaining)));
    signal.throwIfAborted();
    if (isHealthy(last)) return { outcome: "healthy", status: last.status };

    const wait = Math.min(interval, deadline - clock.now());
    if (wait <= 0) return { outcome: "timeout", last };
    await clock.sleep(wait, signal);
  }
}
