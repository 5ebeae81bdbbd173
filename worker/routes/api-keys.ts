/**
 * API keys: admins mint, list and revoke them. A project-scoped admin works
 * only with keys whose projects all lie inside its own scope; the others are
 * reported as absent, like anything else outside a key's projects.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { eq, inArray } from "drizzle-orm";
import { apiKey, createApiKeyBody } from "../../schema/api";
import { apiKeys, projects } from "../../schema/tables";
import { requireAccess, type AuthenticatedKey } from "../auth";
import { hashSecret } from "../crypto";
import { ApiError, ErrorCode, notFound } from "../errors";
import { newId, newSecret } from "../ids";
import { authErrors, errorResponses, idParam, jsonBody, jsonResponse } from "../openapi";
import { database, newRouter } from "../router";
import { apiKeyJson } from "../serializers";
import { oldestFirst } from "../sql";
import { invalidField } from "../validation";

/** Whether a key scoped to `projectIds` grants nothing beyond `caller`'s scope. */
function withinScope(caller: AuthenticatedKey, projectIds: string[] | null): boolean {
  if (caller.projectIds === null) return true;
  const own = caller.projectIds;
  return projectIds !== null && projectIds.every((id) => own.includes(id));
}

const createKeyRoute = createRoute({
  method: "post",
  path: "/keys",
  summary: "Create an API key",
  description: "The secret in the response is shown only here; only its hash is stored.",
  tags: ["API keys"],
  middleware: [requireAccess("admin")] as const,
  request: { body: jsonBody(createApiKeyBody) },
  responses: {
    201: jsonResponse(z.object({ apiKey, secret: z.string() }), "The new key"),
    ...errorResponses(400, ...authErrors),
  },
});

const listKeysRoute = createRoute({
  method: "get",
  path: "/keys",
  summary: "List API keys",
  tags: ["API keys"],
  middleware: [requireAccess("admin")] as const,
  responses: {
    200: jsonResponse(z.object({ apiKeys: z.array(apiKey) }), "The keys, oldest first"),
    ...errorResponses(...authErrors),
  },
});

const deleteKeyRoute = createRoute({
  method: "delete",
  path: "/keys/{keyId}",
  summary: "Revoke an API key",
  tags: ["API keys"],
  middleware: [requireAccess("admin")] as const,
  request: { params: z.object({ keyId: idParam("key_4k2v8w0c1x9q7m3z") }) },
  responses: {
    204: { description: "Revoked; the key stops working at once" },
    ...errorResponses(...authErrors, 404),
  },
});

export const apiKeyRoutes = newRouter()
  .openapi(createKeyRoute, async (c) => {
    const body = c.req.valid("json");
    const projectIds = body.projectIds === null ? null : [...new Set(body.projectIds)];
    if (!withinScope(c.var.apiKey, projectIds)) {
      throw new ApiError(
        403,
        ErrorCode.forbidden,
        "A project-scoped key can only create keys for projects in its own scope",
      );
    }

    const db = database(c.env);
    if (projectIds !== null) {
      const found = await db
        .select({ id: projects.id })
        .from(projects)
        .where(inArray(projects.id, projectIds));
      const known = new Set(found.map((row) => row.id));
      const missing = projectIds.findIndex((id) => !known.has(id));
      if (missing >= 0) throw invalidField(`projectIds.${missing}`, "no such project");
    }

    const secret = newSecret("ap");
    const [row] = await db
      .insert(apiKeys)
      .values({
        id: newId("key"),
        name: body.name,
        secretHash: await hashSecret(secret),
        access: body.access,
        projectIds,
      })
      .returning();
    return c.json({ apiKey: apiKeyJson(row), secret }, 201);
  })

  .openapi(listKeysRoute, async (c) => {
    // Keys are few (people and CI jobs), so the scope filter runs here rather
    // than as JSON queries in SQL.
    const rows = await database(c.env)
      .select()
      .from(apiKeys)
      .orderBy(...oldestFirst(apiKeys.createdAt));
    const visible = rows.filter((row) =>
      withinScope(c.var.apiKey, row.projectIds ?? null),
    );
    return c.json({ apiKeys: visible.map(apiKeyJson) }, 200);
  })

  .openapi(deleteKeyRoute, async (c) => {
    const { keyId } = c.req.valid("param");
    const db = database(c.env);
    const row = await db.query.apiKeys.findFirst({ where: eq(apiKeys.id, keyId) });
    if (!row || !withinScope(c.var.apiKey, row.projectIds ?? null)) {
      throw notFound("API key");
    }

    await db.delete(apiKeys).where(eq(apiKeys.id, keyId));
    return c.body(null, 204);
  });
