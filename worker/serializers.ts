/**
 * Rows → the JSON shapes of schema/api.ts. The one place that decides what a
 * client sees of a row: secrets and hashes never leave, times are ISO UTC.
 */
import type { z } from "@hono/zod-openapi";
import type { apiKey, project, runner, service } from "../schema/api";
import type { apiKeys, runners } from "../schema/tables";
import type { AuthenticatedKey } from "./auth";
import type { ProjectRow, ServiceRow } from "./lookups";
import { serviceEnv } from "./lookups";

type ApiKeyRow = typeof apiKeys.$inferSelect;
type RunnerRow = typeof runners.$inferSelect;

/** What non-admin keys see in place of each environment value. */
export const REDACTED = "[redacted]";

/** A runner counts as online only if it has also sent a heartbeat this recently. */
export const RUNNER_ONLINE_WINDOW_MS = 90_000;

/**
 * ISO 8601 UTC with milliseconds. SQLite's defaults already write this form;
 * parsing once more keeps values written by other code paths uniform.
 */
export function isoTime(value: string): string;
export function isoTime(value: string | null): string | null;
export function isoTime(value: string | null): string | null {
  return value === null ? null : new Date(value).toISOString();
}

/** A project as every key that can see it sees it. */
export function projectJson(row: ProjectRow): z.infer<typeof project> {
  return {
    id: row.id,
    name: row.name,
    createdAt: isoTime(row.createdAt),
    updatedAt: isoTime(row.updatedAt),
  };
}

/**
 * A service as `viewer` may see it: environment values in clear for admin
 * keys, each replaced by {@link REDACTED} for everyone else.
 */
export async function serviceJson(
  env: Env,
  row: ServiceRow,
  viewer: AuthenticatedKey,
): Promise<z.infer<typeof service>> {
  const variables = await serviceEnv(env, row);
  const shown =
    viewer.access === "admin"
      ? variables
      : Object.fromEntries(Object.keys(variables).map((name) => [name, REDACTED]));
  return {
    id: row.id,
    projectId: row.projectId,
    name: row.name,
    repoUrl: row.repoUrl,
    branch: row.branch,
    rootDir: row.rootDir,
    dockerfilePath: row.dockerfilePath,
    internalPort: row.internalPort,
    hostPort: row.hostPort,
    healthCheckPath: row.healthCheckPath,
    runnerId: row.runnerId,
    env: shown,
    createdAt: isoTime(row.createdAt),
    updatedAt: isoTime(row.updatedAt),
  };
}

/**
 * `online` trusts the flag only while heartbeats keep arriving, so a runner
 * whose connection died without a close still shows as offline soon after.
 */
export function runnerJson(row: RunnerRow, now = Date.now()): z.infer<typeof runner> {
  const heartbeat = row.lastHeartbeatAt === null ? NaN : Date.parse(row.lastHeartbeatAt);
  return {
    id: row.id,
    name: row.name,
    online: row.online && now - heartbeat < RUNNER_ONLINE_WINDOW_MS,
    lastHeartbeatAt: isoTime(row.lastHeartbeatAt),
    version: row.version,
    capacity: row.capacity,
    createdAt: isoTime(row.createdAt),
  };
}

/** An API key's metadata; its secret is never stored and its hash never shown. */
export function apiKeyJson(row: ApiKeyRow): z.infer<typeof apiKey> {
  return {
    id: row.id,
    name: row.name,
    access: row.access,
    projectIds: row.projectIds ?? null,
    createdAt: isoTime(row.createdAt),
    lastUsedAt: isoTime(row.lastUsedAt),
  };
}
