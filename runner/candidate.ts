/**
 * The candidate container: the attempt's image started without a published
 * port, and health-checked over the bridge network before any swap.
 *
 * An app that exits during the check fails at once, with its exit code and
 * its last lines of output; one that never answers fails when the
 * health-check timeout runs out, and the reason names that timeout.
 */
import { aeroplaneLabels } from "./docker.js";
import { probeHttp, waitUntilHealthy, type ProbeResult } from "./health.js";
import { errorMessage } from "./logger.js";
import { DeployFailure, logContainerOutput, type AttemptContext } from "./swap.js";

/** Starts the candidate, replacing debris of an earlier try with its name. */
export async function startCandidate(ctx: AttemptContext): Promise<void> {
  const { job, docker, names } = ctx;
  ctx.signal.throwIfAborted();
  // A container of that name can only be debris of an earlier try.
  await docker.remove(names.candidate);
  ctx.log(`Starting candidate container ${names.candidate}`);
  try {
    await docker.createAndStart({
      name: names.candidate,
      image: job.imageTag,
      env: job.env,
      labels: aeroplaneLabels(job.serviceId, job.deploymentId, "candidate", {
        runner: ctx.runnerMark,
      }),
    });
  } catch (error) {
    throw new DeployFailure(
      `Could not start the candidate container: ${errorMessage(error)}`,
    );
  }
}

/** Waits for the candidate to answer HTTP on its port over the bridge network. */
export async function checkCandidate(ctx: AttemptContext): Promise<void> {
  const { job, docker, names } = ctx;
  const port = job.internalPort;
  const limit = seconds(job.healthCheckTimeoutMs);
  ctx.log(`Health check: GET ${job.healthCheckPath} on port ${port}, up to ${limit} s`);

  let address: string | null = null;
  const isAlive = async () => {
    const state = await docker.inspect(names.candidate);
    address = state?.ipAddress ?? null;
    return state?.running === true && address !== null;
  };
  const result = await waitUntilHealthy({
    probe: (timeoutMs) =>
      probeHttp(address!, port, job.healthCheckPath, timeoutMs, ctx.signal),
    isAlive,
    timeoutMs: job.healthCheckTimeoutMs,
    clock: ctx.clock,
    signal: ctx.signal,
  });

  if (result.outcome === "healthy") {
    ctx.log(
      `Health check passed: GET ${job.healthCheckPath} answered HTTP ${result.status}`,
    );
    return;
  }
  // A timeout can also mean the app died just before the deadline.
  const exited = result.outcome === "exited" || !(await isAlive());
  await logContainerOutput(ctx, names.candidate);
  if (exited) {
    const state = await docker.inspect(names.candidate);
    const code = state?.exitCode ?? "unknown";
    throw new DeployFailure(`The app exited with code ${code} during the health check`);
  }
  throw new DeployFailure(unhealthyReason(result.last, port, job.healthCheckPath, limit));
}

/** The health-check timeout ran out: says so, with its length, and what was seen. */
function unhealthyReason(
  last: ProbeResult | null,
  port: number,
  checkPath: string,
  limit: string,
): string {
  if (last && "status" in last) {
    return (
      `Health check failed: GET ${checkPath} on port ${port} answered HTTP ` +
      `${last.status} (expected 200–399) until the ${limit} s health-check timeout`
    );
  }
  const cause = last ? ` (last attempt: ${last.error})` : "";
  return (
    `Health check timed out after ${limit} s: the app did not answer HTTP on ` +
    `port ${port}${cause}`
  );
}

/** Milliseconds as seconds for people: 30000 → "30", 1500 → "1.5". */
export function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
