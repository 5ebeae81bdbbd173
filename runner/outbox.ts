/**
 * The runner's outbox: every log line and result it owes the control plane,
 * kept until the control plane acknowledges it.
 *
 * Pure state with no socket: the agent appends, `drain()` hands out what is
 * due on the current connection, acks release, and `rewind()` after a
 * reconnect makes everything unacknowledged due again. Because lines carry a
 * per-lease `seq` and the Worker stores them idempotently by it, resending is
 * safe: nothing is lost, nothing is stored twice, order is kept.
 */
import type { RunnerFrame, RunnerLogLine } from "../schema/protocol.js";

type ResultFrame = Extract<RunnerFrame, { type: "job.result" }>;
type LogsFrame = Extract<RunnerFrame, { type: "logs" }>;

export type JobOutcome = Pick<ResultFrame, "outcome" | "commitSha" | "reason">;

export interface LeaseRef {
  deploymentId: string;
  leaseId: string;
}

/** Frame limits: a Worker WebSocket message may not exceed 1 MiB. */
export const maxLinesPerFrame = 500;
const maxFrameChars = 256 * 1024;
/** Longer lines (minified bundles, progress bars) are cut to this length. */
export const maxLineChars = 8 * 1024;

interface LeaseLog extends LeaseRef {
  /**
   * Unacknowledged lines are `lines[head…]`, ascending and contiguous by seq.
   * Acks move `head` instead of shifting the array, and the acknowledged
   * prefix is cut off only once it is most of the array: a 20,000-line
   * build acked 500 lines at a time costs O(lines), not O(lines²).
   */
  lines: RunnerLogLine[];
  head: number;
  nextSeq: number;
  /** Highest seq the control plane has stored. */
  ackedSeq: number;
  /** Highest seq handed out on the current connection (never below ackedSeq). */
  sentSeq: number;
  result: ResultFrame | null;
  resultSent: boolean;
  resultAcked: boolean;
}

/** Below this many acknowledged lines the array is not worth compacting. */
const compactAfter = 1_024;

export class Outbox {
  #leases = new Map<string, LeaseLog>();

  /** Starts numbering a lease's lines from 1. Opening twice changes nothing. */
  open(ref: LeaseRef): void {
    if (this.#leases.has(ref.leaseId)) return;
    this.#leases.set(ref.leaseId, {
      deploymentId: ref.deploymentId,
      leaseId: ref.leaseId,
      lines: [],
      head: 0,
      nextSeq: 1,
      ackedSeq: 0,
      sentSeq: 0,
      result: null,
      resultSent: false,
      resultAcked: false,
    });
  }

  /** Queues a line; returns its seq, or null when the lease is unknown or finished. */
  append(
    leaseId: string,
    line: string,
    stream: RunnerLogLine["stream"],
    at: Date,
  ): number | null {
    const lease = this.#leases.get(leaseId);
    if (!lease || lease.result) return null;
    const text =
      line.length > maxLineChars ? `${line.slice(0, maxLineChars)}… [truncated]` : line;
    const seq = lease.nextSeq++;
    lease.lines.push({ seq, line: text, stream, at: at.toISOString() });
    return seq;
  }

  /** Records the job's result; it is due once every line before it is sent. */
  finish(leaseId: string, outcome: JobOutcome): void {
    const lease = this.#leases.get(leaseId);
    if (!lease || lease.result) return;
    lease.result = {
      type: "job.result",
      deploymentId: lease.deploymentId,
      leaseId,
      ...outcome,
      lastSeq: lease.nextSeq - 1,
    };
  }

  /** Every line up to and including `seq` is stored. */
  ackLines(leaseId: string, seq: number): void {
    const lease = this.#leases.get(leaseId);
    if (!lease) return;
    const acked = Math.min(seq, lease.nextSeq - 1);
    if (acked <= lease.ackedSeq) return;
    // Seqs are contiguous, so the first kept line is found by arithmetic.
    lease.head += acked - lease.ackedSeq;
    lease.ackedSeq = acked;
    lease.sentSeq = Math.max(lease.sentSeq, acked);
    if (lease.head >= compactAfter && lease.head * 2 >= lease.lines.length) {
      lease.lines = lease.lines.slice(lease.head);
      lease.head = 0;
    }
  }

  /** The result is recorded; returns it (or null if unknown). */
  ackResult(leaseId: string): ResultFrame | null {
    const lease = this.#leases.get(leaseId);
    if (!lease?.result) return null;
    lease.resultAcked = true;
    return lease.result;
  }

  /** True when nothing of the lease is owed any more: result and lines acked. */
  isSettled(leaseId: string): boolean {
    const lease = this.#leases.get(leaseId);
    return !lease || (lease.resultAcked && lease.ackedSeq === lease.nextSeq - 1);
  }

  forget(leaseId: string): void {
    this.#leases.delete(leaseId);
  }

  /** Leases with anything still owed (lines or a result), oldest first. */
  leases(): LeaseRef[] {
    return [...this.#leases.values()]
      .filter((lease) => !this.isSettled(lease.leaseId))
      .map(({ deploymentId, leaseId }) => ({ deploymentId, leaseId }));
  }

  /** How many lines wait to be handed out on this connection. */
  unsentLines(): number {
    let count = 0;
    for (const lease of this.#leases.values()) count += lease.nextSeq - 1 - lease.sentSeq;
    return count;
  }

  /**
   * Frames due now, marked as sent: each lease's unsent lines in seq order,
   * batched, then its result once all of its lines have gone out.
   */
  drain(): RunnerFrame[] {
    const frames: RunnerFrame[] = [];
    for (const lease of this.#leases.values()) {
      for (const batch of batches(unsent(lease))) {
        frames.push({
          type: "logs",
          deploymentId: lease.deploymentId,
          leaseId: lease.leaseId,
          lines: batch,
        } satisfies LogsFrame);
        lease.sentSeq = batch[batch.length - 1].seq;
      }
      if (lease.result && !lease.resultSent && !lease.resultAcked) {
        frames.push(lease.result);
        lease.resultSent = true;
      }
    }
    return frames;
  }

  /** A new connection: everything not yet acknowledged is due again. */
  rewind(): void {
    for (const lease of this.#leases.values()) {
      lease.sentSeq = lease.ackedSeq;
      lease.resultSent = false;
    }
  }
}

/** The lines of a lease not yet handed out; seqs are contiguous, so a slice. */
function unsent(lease: LeaseLog): RunnerLogLine[] {
  // lines[head] carries seq ackedSeq + 1.
  return lease.lines.slice(lease.head + lease.sentSeq - lease.ackedSeq);
}

/** Splits lines into frames of at most 500 lines and about 256 KiB. */
function* batches(lines: RunnerLogLine[]): Generator<RunnerLogLine[]> {
  let batch: RunnerLogLine[] = [];
  let chars = 0;
  for (const line of lines) {
    const size = line.line.length + 64;
    if (
      batch.length > 0 &&
      (batch.length >= maxLinesPerFrame || chars + size > maxFrameChars)
    ) {
      yield batch;
      batch = [];
      chars = 0;
    }
    batch.push(line);
    chars += size;
  }
  if (batch.length > 0) yield batch;
}
