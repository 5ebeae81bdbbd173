/**
 * The deployment lifecycle on the control plane. Every status change is a
 * conditional update from the status the caller expects, so a late or
 * repeated message can never overwrite a terminal state.
 */
import { and, asc, eq, inArray, sql } from "drizzle-orm";
import type { SQLiteUpdateSetSource } from "drizzle-orm/sqlite-core";
import type { Deployment } from "../schema/api";
import { deployments, runners } from "../schema/tables";
import type { DeploymentRow, ServiceRow } from "./lookups";
import type { DeploymentStatus, PlatformLine } from "./objects/deployment-log";
import { database } from "./router";

type Trigger = DeploymentRow["trigger"];

export function deploymentLog(env: Env, deploymentId: string) {
  return env.DEPLOYMENT_LOG.get(env.DEPLOYMENT_LOG.idFromName(deploymentId));
}

export function runnerChannel(env: Env, runnerId: string) {
  return env.RUNNER.get(env.RUNNER.idFromName(runnerId));
}

/** The deployment as the published contract shows it. */
export function toDeployment(row: DeploymentRow): Deployment {
  return {
    id: row.id,
    serviceId: row.serviceId,
    commitSha: row.commitSha,
    status: row.status,
    trigger: row.trigger,
    imageTag: row.imageTag,
    containerName: row.containerName,
    startedAt: row.startedAt,
    finishedAt: row.finishedAt,
    createdAt: row.createdAt,
  };
}

/** The runner that deploys `service`: its own, else the oldest registered one. */
export async function runnerIdFor(env: Env, service: ServiceRow): Promise<string | null> {
  if (service.runnerId) return service.runnerId;
  const [oldest] = await database(env)
    .select({ id: runners.id })
    .from(runners)
    .orderBy(asc(runners.createdAt), asc(runners.id))
    .limit(1);
  return oldest?.id ?? null;
}

/**
 * Moves a deployment from one of `from` to `to`. Returns false, changing
 * nothing, when the deployment is no longer in an expected status.
 */
export async function transition(
  env: Env,
  deploymentId: string,
  from: DeploymentStatus[],
  to: DeploymentStatus,
  fields: SQLiteUpdateSetSource<typeof deployments> = {},
  lines: PlatformLine[] = [],
): Promise<boolean> {
  const terminal = to !== "queued" && to !== "building";
  const changed = await database(env)
    .update(deployments)
    .set({
      ...fields,
      status: to,
      ...(terminal ? { finishedAt: new Date().toISOString() } : {}),
    })
    .where(and(eq(deployments.id, deploymentId), inArray(deployments.status, from)))
    .returning({ id: deployments.id });
  if (changed.length === 0) return false;
  await announce(env, deploymentId, to, lines);
  return true;
}

/** Writes the platform's lines, then the status, to the deployment's log. */
export async function announce(
  env: Env,
  deploymentId: string,
  status: DeploymentStatus,
  lines: PlatformLine[] = [],
): Promise<void> {
  const log = deploymentLog(env, deploymentId);
  if (lines.length > 0) await log.appendPlatform(lines);
  await log.setStatus(status);
}

/**
 * Queues a deployment of `service`. Older deployments of the service that
 * are still queued become `superseded`: only the newest request matters.
 */
export async function queueDeployment(
  env: Env,
  service: ServiceRow,
  options: {
    id: string;
    trigger: Trigger;
    commitSha: string | null;
    /** An image built before, for redeploys: the runner skips the build if it has it. */
    imageTag?: string | null;
    lines?: PlatformLine[];
  },
): Promise<DeploymentRow> {
  const db = database(env);
  const [row] = await db
    .insert(deployments)
    .values({
      id: options.id,
      serviceId: service.id,
      status: "queued",
      trigger: options.trigger,
      commitSha: options.commitSha,
      imageTag: options.imageTag ?? null,
    })
    .returning();

  const log = deploymentLog(env, row.id);
  await log.open(row.id, "queued");

  const superseded = await db
    .update(deployments)
    .set({ status: "superseded", finishedAt: new Date().toISOString() })
    .where(
      and(
        eq(deployments.serviceId, service.id),
        eq(deployments.status, "queued"),
        // rowid orders inserts strictly, even two within one millisecond.
        sql`rowid < (SELECT rowid FROM ${deployments} WHERE id = ${row.id})`,
      ),
    )
    .returning({ id: deployments.id });
  await Promise.all(
    superseded.map(({ id }) =>
      announce(env, id, "superseded", [
        { line: `Superseded by ${row.id} before it started` },
      ]),
    ),
  );

  const runnerId = await runnerIdFor(env, service);
  const lines: PlatformLine[] = [
    { line: `Deployment queued (trigger: ${options.trigger})` },
    ...(options.lines ?? []),
  ];
  const runner = runnerId
    ? await db.query.runners.findFirst({ where: eq(runners.id, runnerId) })
    : undefined;
  if (!runner) {
    lines.push({
      line: "No runner is registered yet; register one with POST /api/runners and start it",
    });
  } else if (!runner.online) {
    lines.push({ line: `Waiting for runner ${runner.name} (${runner.id}) to connect` });
  }
  await log.appendPlatform(lines);
  if (runnerId) await runnerChannel(env, runnerId).poke();
  return row;
}
