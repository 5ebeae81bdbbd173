/**
 * What a RunnerChannel reads and writes in D1: the queued work a runner may
 * take, the job it is offered, the result it reports, and which of the
 * deployments its Docker holds ever went live.
 */
import { and, asc, eq, inArray, isNull, or, sql } from "drizzle-orm";
import type { Job, RunnerFrame } from "../../schema/protocol";
import { deployments, runners, services } from "../../schema/tables";
import { announce, transition } from "../deployments";
import { serviceEnv, type ServiceRow } from "../lookups";
import { database, numberSetting } from "../router";

export type QueuedJob = {
  deploymentId: string;
  commitSha: string | null;
  imageTag: string | null;
  service: ServiceRow;
};

type ResultFrame = Extract<RunnerFrame, { type: "job.result" }>;

export const imageTagOf = (serviceId: string, deploymentId: string) =>
  `aeroplane-${serviceId}-${deploymentId}`;

/** The deployment's image tag, keeping one a redeploy already named. */
export const builtImageTag = (serviceId: string, deploymentId: string) =>
  sql`COALESCE(${deployments.imageTag}, ${imageTagOf(serviceId, deploymentId)})`;

export const stableContainerOf = (serviceId: string) => `aeroplane-${serviceId}-stable`;

/**
 * Queued deployments for `runnerId`, oldest first, whose service has
 * nothing building. Services without a runner of their own go to the
 * oldest runner.
 */
export async function queuedFor(env: Env, runnerId: string): Promise<QueuedJob[]> {
  const db = database(env);
  const [oldest] = await db
    .select({ id: runners.id })
    .from(runners)
    .orderBy(asc(runners.createdAt), asc(runners.id))
    .limit(1);
  const mine =
    oldest?.id === runnerId
      ? or(eq(services.runnerId, runnerId), isNull(services.runnerId))
      : eq(services.runnerId, runnerId);
  return db
    .select({
      deploymentId: deployments.id,
      commitSha: deployments.commitSha,
      imageTag: deployments.imageTag,
      service: services,
    })
    .from(deployments)
    .innerJoin(services, eq(services.id, deployments.serviceId))
    .where(
      and(
        eq(deployments.status, "queued"),
        mine,
        sql`NOT EXISTS (SELECT 1 FROM deployments AS b
              WHERE b.service_id = ${deployments.serviceId} AND b.status = 'building')`,
      ),
    )
    .orderBy(asc(deployments.createdAt))
    .limit(100);
}

/** Everything the runner needs to deploy `queued` under `leaseId`. */
export async function jobFor(env: Env, leaseId: string, queued: QueuedJob): Promise<Job> {
  const { deploymentId, commitSha, imageTag, service } = queued;
  return {
    deploymentId,
    leaseId,
    serviceId: service.id,
    repoUrl: service.repoUrl,
    branch: service.branch,
    commitSha,
    rootDir: service.rootDir,
    dockerfilePath: service.dockerfilePath,
    internalPort: service.internalPort,
    hostPort: service.hostPort,
    healthCheckPath: service.healthCheckPath,
    env: await serviceEnv(env, service),
    // A redeploy names the image it reuses; anything else builds its own.
    imageTag: imageTag ?? imageTagOf(service.id, deploymentId),
    containerName: stableContainerOf(service.id),
    buildTimeoutMs: numberSetting(env, "BUILD_TIMEOUT_MS", 30 * 60_000),
    healthCheckTimeoutMs: numberSetting(env, "HEALTH_CHECK_TIMEOUT_MS", 60_000),
  };
}

/**
 * Records a runner's result as a conditional update from `building`; a
 * deployment that goes live supersedes the one it replaced. Returns false
 * when the deployment had already ended (aborted, lease lost).
 */
export async function recordResult(
  env: Env,
  serviceId: string,
  frame: ResultFrame,
): Promise<boolean> {
  const { deploymentId, commitSha } = frame;
  const commit = commitSha ? { commitSha } : {};
  if (frame.outcome === "failed") {
    return transition(env, deploymentId, ["building"], "failed", {
      ...commit,
      failureReason: frame.reason ?? "The deployment failed",
    });
  }
  if (frame.outcome === "aborted") {
    return transition(env, deploymentId, ["building"], "aborted", commit);
  }
  const live = await transition(env, deploymentId, ["building"], "running", {
    ...commit,
    imageTag: builtImageTag(serviceId, deploymentId),
    containerName: stableContainerOf(serviceId),
  });
  if (!live) return false;
  const replaced = await database(env)
    .update(deployments)
    // finishedAt stays: it says when that deployment's own deploy ended.
    .set({ status: "superseded" })
    .where(
      and(
        eq(deployments.serviceId, serviceId),
        eq(deployments.status, "running"),
        sql`${deployments.id} != ${deploymentId}`,
      ),
    )
    .returning({ id: deployments.id });
  await Promise.all(
    replaced.map(({ id }) =>
      announce(env, id, "superseded", [{ line: `Replaced by ${deploymentId}` }]),
    ),
  );
  return true;
}

/** The deployments among `ids` that went live at some point. */
export async function wentLive(env: Env, ids: string[]): Promise<Set<string>> {
  const live = new Set<string>();
  // D1 binds at most 100 parameters per statement.
  for (let i = 0; i < ids.length; i += 90) {
    const rows = await database(env)
      .select({ id: deployments.id })
      .from(deployments)
      .where(
        and(
          inArray(deployments.id, ids.slice(i, i + 90)),
          inArray(deployments.status, ["running", "superseded"]),
        ),
      );
    for (const row of rows) live.add(row.id);
  }
  return live;
}
