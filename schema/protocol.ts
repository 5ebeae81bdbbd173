/**
 * The runner wire protocol: JSON text frames over one WebSocket per runner.
 *
 * Both sides parse every frame on arrival with these schemas and switch on
 * `type` exhaustively. A job moves through offer → accept → start; work only
 * begins after `job.start`, which the Worker sends once the deployment row has
 * moved from `queued` to `building` under this lease.
 */
import { z } from "zod";

export const PROTOCOL_VERSION = 1;

export const logStream = z.enum(["stdout", "stderr"]);

/** A log line as the runner numbers it: `seq` counts from 1 per lease. */
export const runnerLogLine = z.object({
  seq: z.number().int().positive(),
  line: z.string(),
  stream: logStream,
  at: z.string(),
});
export type RunnerLogLine = z.infer<typeof runnerLogLine>;

/** Everything a runner needs to deploy one commit of one service. */
export const job = z.object({
  deploymentId: z.string(),
  leaseId: z.string(),
  serviceId: z.string(),
  repoUrl: z.string(),
  branch: z.string(),
  /** Deploy exactly this commit; null means the branch head. */
  commitSha: z.string().nullable(),
  rootDir: z.string(),
  dockerfilePath: z.string(),
  internalPort: z.number().int(),
  hostPort: z.number().int(),
  healthCheckPath: z.string(),
  env: z.record(z.string(), z.string()),
  imageTag: z.string(),
  containerName: z.string(),
  buildTimeoutMs: z.number().int().positive(),
  healthCheckTimeoutMs: z.number().int().positive(),
});
export type Job = z.infer<typeof job>;

export const jobPhase = z.enum([
  "cloning",
  "building",
  "starting",
  "health-check",
  "swapping",
]);
export type JobPhase = z.infer<typeof jobPhase>;

/** A line of a live container's output, as Docker timestamps it. */
export const runtimeLogLine = z.object({
  line: z.string(),
  stream: logStream,
  at: z.string(),
});
export type RuntimeLogLine = z.infer<typeof runtimeLogLine>;

/** Frames the runner sends to the Worker. */
export const runnerFrame = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("hello"),
    protocol: z.number().int(),
    version: z.string(),
    capacity: z.number().int().positive(),
    /** Leases the runner still works on, or holds results or lines for. */
    leases: z.array(z.object({ deploymentId: z.string(), leaseId: z.string() })),
    /** Deployments whose images or containers the runner's Docker holds. */
    inventory: z.array(z.string()).max(10_000),
  }),
  z.object({ type: z.literal("heartbeat"), leaseIds: z.array(z.string()) }),
  z.object({
    type: z.literal("job.accept"),
    deploymentId: z.string(),
    leaseId: z.string(),
  }),
  z.object({
    type: z.literal("job.reject"),
    deploymentId: z.string(),
    leaseId: z.string(),
    reason: z.string(),
  }),
  z.object({
    type: z.literal("job.phase"),
    deploymentId: z.string(),
    leaseId: z.string(),
    phase: jobPhase,
    commitSha: z.string().optional(),
  }),
  z.object({
    type: z.literal("logs"),
    deploymentId: z.string(),
    leaseId: z.string(),
    lines: z.array(runnerLogLine).min(1),
  }),
  z.object({
    type: z.literal("job.result"),
    deploymentId: z.string(),
    leaseId: z.string(),
    outcome: z.enum(["running", "failed", "aborted"]),
    /** The seq of the job's last log line; the result is final only after it. */
    lastSeq: z.number().int().nonnegative(),
    commitSha: z.string().nullable(),
    reason: z.string().optional(),
  }),
  /** The last lines of a service's live container, answering `runtime.follow`. */
  z.object({
    type: z.literal("runtime.snapshot"),
    serviceId: z.string(),
    lines: z.array(runtimeLogLine),
  }),
  /** Lines the followed container printed since the previous frame. */
  z.object({
    type: z.literal("runtime.logs"),
    serviceId: z.string(),
    lines: z.array(runtimeLogLine).min(1),
  }),
  /**
   * The follow is over: `ok` when the container's log ended (it stopped),
   * not `ok` with a reason when there was nothing to follow.
   */
  z.object({
    type: z.literal("runtime.end"),
    serviceId: z.string(),
    ok: z.boolean(),
    reason: z.string().optional(),
  }),
  /** Everything of a deleted service is gone from this runner's Docker. */
  z.object({ type: z.literal("service.removed"), serviceId: z.string() }),
]);
export type RunnerFrame = z.infer<typeof runnerFrame>;

/** Frames the Worker sends to the runner. */
export const workerFrame = z.discriminatedUnion("type", [
  z.object({
    type: z.literal("welcome"),
    runnerId: z.string(),
    heartbeatIntervalMs: z.number().int().positive(),
    /** Leases from `hello` the Worker no longer recognises: drop them. */
    unknownLeaseIds: z.array(z.string()),
    /**
     * Deployments from the inventory that never went live (failed, aborted,
     * unknown) and hold no lease: their containers and images are orphans.
     */
    orphanDeploymentIds: z.array(z.string()),
  }),
  z.object({ type: z.literal("job.offer"), job }),
  z.object({
    type: z.literal("job.start"),
    deploymentId: z.string(),
    leaseId: z.string(),
  }),
  /** The offer is void (the deployment was aborted or superseded first). */
  z.object({
    type: z.literal("job.cancel"),
    deploymentId: z.string(),
    leaseId: z.string(),
  }),
  z.object({
    type: z.literal("job.abort"),
    deploymentId: z.string(),
    leaseId: z.string(),
  }),
  /** Every line up to and including `seq` of this lease is stored. */
  z.object({
    type: z.literal("logs.ack"),
    deploymentId: z.string(),
    leaseId: z.string(),
    seq: z.number().int().nonnegative(),
  }),
  /**
   * The result is recorded. `accepted: false` means the deployment had
   * already ended (aborted, lease lost): a `running` outcome must be undone.
   */
  z.object({
    type: z.literal("job.result.ack"),
    deploymentId: z.string(),
    leaseId: z.string(),
    accepted: z.boolean(),
  }),
  /** Start following the service's live container: snapshot of `tail`, then lines. */
  z.object({
    type: z.literal("runtime.follow"),
    serviceId: z.string(),
    tail: z.number().int().min(0).max(10_000),
  }),
  /** Nobody watches the service's runtime log any more. */
  z.object({ type: z.literal("runtime.unfollow"), serviceId: z.string() }),
  /**
   * The service was deleted: stop and remove its containers and images.
   * Repeated until the runner answers `service.removed`.
   */
  z.object({ type: z.literal("service.remove"), serviceId: z.string() }),
]);
export type WorkerFrame = z.infer<typeof workerFrame>;

/** Parses one frame; returns null for anything that is not a valid frame. */
export function parseFrame<T extends z.ZodType>(
  schema: T,
  data: unknown,
): z.infer<T> | null {
  if (typeof data !== "string") return null;
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}
