/** Time as the runner sees it, injected so tests can drive retries and timeouts. */
import { setTimeout as delay } from "node:timers/promises";

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`; rejects with the signal's reason when it aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: async (ms, signal) => {
    try {
      await delay(ms, undefined, { signal });
    } catch (error) {
      // timers/promises rejects with its own AbortError; callers expect
      // the reason they aborted with.
      if (signal?.aborted) throw signal.reason;
      throw error;
    }
  },
};
