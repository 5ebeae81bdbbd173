/**
 * Runners: the agents on users' Docker hosts. Admins register them and hand
 * the `apr_…` token to the host; anyone with read access sees their state.
 * The runners' own WebSocket lives in another module, mounted before this.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import { createRunnerBody, runner } from "../../schema/api";
import { runners } from "../../schema/tables";
import { assertUnscoped, requireAccess } from "../auth";
import { hashSecret } from "../crypto";
import { runnerChannel } from "../deployments";
import { notFound } from "../errors";
import { newId, newSecret } from "../ids";
import { authErrors, errorResponses, idParam, jsonBody, jsonResponse } from "../openapi";
import { database, newRouter } from "../router";
import { runnerJson } from "../serializers";
import { oldestFirst } from "../sql";

const runnerParams = z.object({ runnerId: idParam("run_4k2v8w0c1x9q7m3z") });

const createRunnerRoute = createRoute({
  method: "post",
  path: "/runners",
  summary: "Register a runner",
  description: "The token in the response is shown only here; only its hash is stored.",
  tags: ["Runners"],
  middleware: [requireAccess("admin")] as const,
  request: { body: jsonBody(createRunnerBody) },
  responses: {
    201: jsonResponse(z.object({ runner, token: z.string() }), "The new runner"),
    ...errorResponses(400, ...authErrors),
  },
});

const listRunnersRoute = createRoute({
  method: "get",
  path: "/runners",
  summary: "List runners",
  tags: ["Runners"],
  middleware: [requireAccess("read")] as const,
  responses: {
    200: jsonResponse(z.object({ runners: z.array(runner) }), "Oldest first"),
    ...errorResponses(...authErrors),
  },
});

const getRunnerRoute = createRoute({
  method: "get",
  path: "/runners/{runnerId}",
  summary: "Get a runner",
  tags: ["Runners"],
  middleware: [requireAccess("read")] as const,
  request: { params: runnerParams },
  responses: {
    200: jsonResponse(z.object({ runner }), "The runner"),
    ...errorResponses(...authErrors, 404),
  },
});

const deleteRunnerRoute = createRoute({
  method: "delete",
  path: "/runners/{runnerId}",
  summary: "Remove a runner",
  description:
    "Its token stops working and its open connection is closed; services that named it are left without a runner.",
  tags: ["Runners"],
  middleware: [requireAccess("admin")] as const,
  request: { params: runnerParams },
  responses: {
    204: { description: "Removed" },
    ...errorResponses(...authErrors, 404),
  },
});

export const runnerRoutes = newRouter()
  .openapi(createRunnerRoute, async (c) => {
    assertUnscoped(c.var.apiKey, "Runners");
    const { name, capacity } = c.req.valid("json");
    const token = newSecret("apr");
    const [row] = await database(c.env)
      .insert(runners)
      .values({ id: newId("run"), name, capacity, tokenHash: await hashSecret(token) })
      .returning();
    return c.json({ runner: runnerJson(row), token }, 201);
  })

  .openapi(listRunnersRoute, async (c) => {
    const rows = await database(c.env)
      .select()
      .from(runners)
      .orderBy(...oldestFirst(runners.createdAt));
    const now = Date.now();
    return c.json({ runners: rows.map((row) => runnerJson(row, now)) }, 200);
  })

  .openapi(getRunnerRoute, async (c) => {
    const { runnerId } = c.req.valid("param");
    const row = await database(c.env).query.runners.findFirst({
      where: eq(runners.id, runnerId),
    });
    if (!row) throw notFound("Runner");
    return c.json({ runner: runnerJson(row) }, 200);
  })

  .openapi(deleteRunnerRoute, async (c) => {
    assertUnscoped(c.var.apiKey, "Runners");
    const { runnerId } = c.req.valid("param");
    const deleted = await database(c.env)
      .delete(runners)
      .where(eq(runners.id, runnerId))
      .returning({ id: runners.id });
    if (deleted.length === 0) throw notFound("Runner");
    // The token was checked when the socket opened; close it now.
    await runnerChannel(c.env, runnerId).disconnect("The runner was removed");
    return c.body(null, 204);
  });
