/**
 * Deployment endpoints of the published contract: queue, list, show, abort,
 * read logs and stream them.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { desc, eq } from "drizzle-orm";
import { createDeploymentBody, deployment, logLine } from "../../schema/api";
import { deployments } from "../../schema/tables";
import { requireAccess } from "../auth";
import {
  deploymentLog,
  queueDeployment,
  runnerChannel,
  toDeployment,
  transition,
} from "../deployments";
import { conflict } from "../errors";
import { newId } from "../ids";
import { authErrors, errorResponses, idParam, jsonResponse } from "../openapi";
import { findDeployment, findService } from "../lookups";
import { database, newRouter } from "../router";
import { relayUntilHangUp } from "../sse";

export const deploymentRoutes = newRouter();

const errors = errorResponses(400, ...authErrors, 404);
const serviceParams = z.object({ serviceId: idParam("svc_web") });
const deploymentParams = z.object({ deploymentId: idParam("dep_123") });

deploymentRoutes.openapi(
  createRoute({
    method: "post",
    path: "/services/{serviceId}/deployments",
    middleware: [requireAccess("write")] as const,
    request: {
      params: serviceParams,
      body: {
        content: { "application/json": { schema: createDeploymentBody } },
        required: false,
      },
    },
    responses: {
      201: jsonResponse(z.object({ deployment }), "The queued deployment"),
      ...errors,
    },
  }),
  async (c) => {
    const service = await findService(c, c.req.valid("param").serviceId);
    const body = c.req.valid("json") ?? {};
    const row = await queueDeployment(c.env, service, {
      id: newId("dep"),
      trigger: "manual",
      commitSha: body.commitSha ?? null,
    });
    return c.json({ deployment: toDeployment(row) }, 201);
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "get",
    path: "/services/{serviceId}/deployments",
    middleware: [requireAccess("read")] as const,
    request: {
      params: serviceParams,
      query: z.object({ limit: z.coerce.number().int().min(1).max(200).default(50) }),
    },
    responses: {
      200: jsonResponse(z.object({ deployments: z.array(deployment) }), "Newest first"),
      ...errors,
    },
  }),
  async (c) => {
    const service = await findService(c, c.req.valid("param").serviceId);
    const rows = await database(c.env)
      .select()
      .from(deployments)
      .where(eq(deployments.serviceId, service.id))
      .orderBy(desc(deployments.createdAt), desc(deployments.id))
      .limit(c.req.valid("query").limit);
    return c.json({ deployments: rows.map(toDeployment) }, 200);
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "get",
    path: "/deployments/{deploymentId}",
    middleware: [requireAccess("read")] as const,
    request: { params: deploymentParams },
    responses: {
      200: jsonResponse(z.object({ deployment }), "The deployment"),
      ...errors,
    },
  }),
  async (c) => {
    const { deployment: row } = await findDeployment(
      c,
      c.req.valid("param").deploymentId,
    );
    return c.json({ deployment: toDeployment(row) }, 200);
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "post",
    path: "/deployments/{deploymentId}/abort",
    middleware: [requireAccess("write")] as const,
    request: { params: deploymentParams },
    responses: {
      200: jsonResponse(
        z.object({ accepted: z.literal(true) }),
        "The abort is under way",
      ),
      ...errors,
      ...errorResponses(409),
    },
  }),
  async (c) => {
    const { deployment: row } = await findDeployment(
      c,
      c.req.valid("param").deploymentId,
    );
    const line = { line: "Deployment aborted by request", stream: "stderr" as const };
    if (await transition(c.env, row.id, ["queued"], "aborted", {}, [line])) {
      // A runner may hold an offer for it that it has not accepted yet.
      if (row.runnerId) await runnerChannel(c.env, row.runnerId).abort(row.id);
      return c.json({ accepted: true as const }, 200);
    }
    const building = await transition(c.env, row.id, ["building"], "aborted", {}, [
      { ...line, line: `${line.line}; stopping the runner's work and cleaning up` },
    ]);
    if (building) {
      // The row is `aborted` now, so no late result can turn it live; the
      // runner stops and removes what the attempt made.
      const fresh = await database(c.env).query.deployments.findFirst({
        where: eq(deployments.id, row.id),
      });
      if (fresh?.runnerId) await runnerChannel(c.env, fresh.runnerId).abort(row.id);
      return c.json({ accepted: true as const }, 200);
    }
    const current = await database(c.env).query.deployments.findFirst({
      where: eq(deployments.id, row.id),
    });
    throw conflict(
      `Deployment is ${current?.status ?? row.status}; only queued or building deployments can be aborted`,
    );
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "post",
    path: "/deployments/{deploymentId}/redeploy",
    middleware: [requireAccess("write")] as const,
    request: { params: deploymentParams },
    responses: {
      201: jsonResponse(z.object({ deployment }), "The queued redeployment"),
      ...errors,
      ...errorResponses(409),
    },
  }),
  async (c) => {
    const { deployment: source, service } = await findDeployment(
      c,
      c.req.valid("param").deploymentId,
    );
    if (source.status === "queued" || source.status === "building") {
      throw conflict(`Deployment is ${source.status}; redeploy it once it has finished`);
    }
    // Only a deployment that went live is known to have a working image.
    const wentLive = source.containerName !== null;
    const row = await queueDeployment(c.env, service, {
      id: newId("dep"),
      trigger: "redeploy",
      commitSha: source.commitSha,
      imageTag: wentLive ? source.imageTag : null,
      lines: [
        {
          line: wentLive
            ? `Redeploying ${source.id}: image ${source.imageTag} of commit ${source.commitSha}`
            : `Redeploying ${source.id}: commit ${source.commitSha ?? `head of ${service.branch}`}`,
        },
      ],
    });
    return c.json({ deployment: toDeployment(row) }, 201);
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "get",
    path: "/deployments/{deploymentId}/logs",
    middleware: [requireAccess("read")] as const,
    request: {
      params: deploymentParams,
      query: z.object({
        after: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(100_000).default(100_000),
      }),
    },
    responses: {
      200: jsonResponse(z.object({ logs: z.array(logLine) }), "Log lines, oldest first"),
      ...errors,
    },
  }),
  async (c) => {
    const { deployment: row } = await findDeployment(
      c,
      c.req.valid("param").deploymentId,
    );
    const { after, limit } = c.req.valid("query");
    const logs = await deploymentLog(c.env, row.id).read(after, limit);
    return c.json({ logs }, 200);
  },
);

deploymentRoutes.openapi(
  createRoute({
    method: "get",
    path: "/deployments/{deploymentId}/stream",
    middleware: [requireAccess("read")] as const,
    request: {
      params: deploymentParams,
      query: z.object({ lastEventId: z.coerce.number().int().min(0).optional() }),
      headers: z.object({ "last-event-id": z.coerce.number().int().min(0).optional() }),
    },
    responses: {
      200: {
        description: "Server-Sent Events: snapshot, log, status, ping",
        content: { "text/event-stream": { schema: z.string() } },
      },
      ...errors,
    },
  }),
  async (c) => {
    const { deployment: row } = await findDeployment(
      c,
      c.req.valid("param").deploymentId,
    );
    const lastEventId =
      c.req.valid("header")["last-event-id"] ?? c.req.valid("query").lastEventId ?? 0;
    const request = new Request("https://deployment-log/stream", {
      headers: { "Last-Event-ID": String(lastEventId) },
    });
    return relayUntilHangUp(
      await deploymentLog(c.env, row.id).fetch(request),
      c.req.raw.signal,
    );
  },
);
