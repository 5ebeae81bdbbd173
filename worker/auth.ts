/**
 * API key authentication. Keys are `ap_…` bearer secrets stored as SHA-256
 * hashes; each has an access level and an optional list of projects.
 */
import { and, eq, isNull, lt, or } from "drizzle-orm";
import { createMiddleware } from "hono/factory";
import type { AccessLevel } from "../schema/api";
import { apiKeys } from "../schema/tables";
import { hashSecret } from "./crypto";
import { ApiError, ErrorCode, notFound } from "./errors";
import { database, type AppEnv } from "./router";

export type AuthenticatedKey = {
  id: string;
  access: AccessLevel;
  /** null means every project. */
  projectIds: string[] | null;
};

const rank: Record<AccessLevel, number> = { read: 0, write: 1, admin: 2 };

/** How stale `lastUsedAt` may get before a request refreshes it. */
const LAST_USED_GRANULARITY_MS = 60_000;

/** Reads the bearer token of a request, or null. */
export function bearerToken(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match ? match[1] : null;
}

/**
 * Requires an API key with at least `level` access. 401 for a missing or
 * unknown key, 403 for a key whose level is too low.
 */
export const requireAccess = (level: AccessLevel) =>
  createMiddleware<AppEnv>(async (c, next) => {
    const token = bearerToken(c.req.header("Authorization"));
    if (!token || !token.startsWith("ap_")) {
      throw new ApiError(401, ErrorCode.unauthorized, "Missing or malformed API key");
    }
    const db = database(c.env);
    const row = await db.query.apiKeys.findFirst({
      where: eq(apiKeys.secretHash, await hashSecret(token)),
    });
    if (!row) throw new ApiError(401, ErrorCode.unauthorized, "Invalid API key");
    if (rank[row.access] < rank[level]) {
      throw new ApiError(403, ErrorCode.forbidden, `This API key needs ${level} access`);
    }
    c.set("apiKey", {
      id: row.id,
      access: row.access,
      projectIds: row.projectIds ?? null,
    });

    const stale = new Date(Date.now() - LAST_USED_GRANULARITY_MS).toISOString();
    c.executionCtx.waitUntil(
      db
        .update(apiKeys)
        .set({ lastUsedAt: new Date().toISOString() })
        .where(
          and(
            eq(apiKeys.id, row.id),
            or(isNull(apiKeys.lastUsedAt), lt(apiKeys.lastUsedAt, stale)),
          ),
        )
        .catch((error) => console.error("auth:lastUsedAt", error)),
    );
    await next();
  });

/**
 * Some things serve every project (runners, AI providers): only a key
 * without a project scope may change them.
 */
export function assertUnscoped(key: AuthenticatedKey, what: string): void {
  if (key.projectIds !== null) {
    throw new ApiError(
      403,
      ErrorCode.forbidden,
      `${what} serve every project; changing them needs an admin key without a project scope`,
    );
  }
}

export function canSeeProject(key: AuthenticatedKey, projectId: string): boolean {
  return key.projectIds === null || key.projectIds.includes(projectId);
}

/**
 * Keys scoped to other projects get the same 404 as for a project that does
 * not exist, so a key never learns what lies outside its scope.
 */
export function assertProjectVisible(
  key: AuthenticatedKey,
  projectId: string,
  what: string,
) {
  if (!canSeeProject(key, projectId)) throw notFound(what);
}
