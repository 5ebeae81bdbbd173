/**
 * Services: what gets deployed — a repository, how to build it, and where
 * its container listens. Environment variables are sealed at rest and shown
 * in clear only to admin keys.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, eq, inArray, notExists } from "drizzle-orm";
import { createServiceBody, service, updateServiceBody } from "../../schema/api";
import { deployments, runners, services } from "../../schema/tables";
import { requireAccess } from "../auth";
import { seal } from "../crypto";
import { runnerChannel, runnerIdFor } from "../deployments";
import { conflict, notFound } from "../errors";
import {
  hostPortConflict,
  hostPortRange,
  hostPortsExhausted,
  lowestFreeHostPort,
} from "../host-ports";
import { newId } from "../ids";
import { encryptionKey, findProject, findService, type ServiceRow } from "../lookups";
import { authErrors, errorResponses, idParam, jsonBody, jsonResponse } from "../openapi";
import { database, newRouter, type Database } from "../router";
import { serviceJson } from "../serializers";
import { isConstraintViolation, oldestFirst } from "../sql";
import { invalidField } from "../validation";

type NewService = typeof services.$inferInsert;

/** Deployments in these states still need their service's row. */
const unfinishedStatuses = ["queued", "building"] as const;

/**
 * The runner a service names: an explicit id must exist, null means none,
 * and leaving it out picks the oldest registered runner, if there is one.
 */
async function resolveRunner(db: Database, runnerId: string | null | undefined) {
  if (runnerId === null) return null;
  const row = await db.query.runners.findFirst({
    columns: { id: true },
    where: runnerId === undefined ? undefined : eq(runners.id, runnerId),
    orderBy: oldestFirst(runners.createdAt),
  });
  if (runnerId !== undefined && !row) throw invalidField("runnerId", "no such runner");
  return row?.id ?? null;
}

/**
 * Inserts a service. The database settles its host port within the one
 * INSERT: an explicit port through the unique index, so one taken by a
 * concurrent request is refused like any other; a missing one by choosing
 * the lowest free port inside the statement itself.
 */
async function insertService(
  db: Database,
  env: Env,
  values: Omit<NewService, "hostPort">,
  hostPort: number | undefined,
): Promise<ServiceRow> {
  if (hostPort === undefined) {
    const range = hostPortRange(env);
    try {
      const claim = { ...values, hostPort: lowestFreeHostPort(range) };
      const [row] = await db.insert(services).values(claim).returning();
      return row;
    } catch (error) {
      // The subquery found no free port.
      if (isConstraintViolation(error, "NOT NULL", "services.host_port")) {
        throw hostPortsExhausted(range);
      }
      throw error;
    }
  }

  try {
    const [row] = await db
      .insert(services)
      .values({ ...values, hostPort })
      .returning();
    return row;
  } catch (error) {
    if (isConstraintViolation(error, "UNIQUE", "services.host_port")) {
      throw hostPortConflict(hostPort);
    }
    throw error;
  }
}

const sealEnv = (env: Env, variables: Record<string, string>) =>
  seal(JSON.stringify(variables), encryptionKey(env));

const serviceEnvelope = z.object({ service });
const serviceParams = z.object({ serviceId: idParam("svc_4k2v8w0c1x9q7m3z") });
const projectParams = z.object({ projectId: idParam("prj_4k2v8w0c1x9q7m3z") });

const createServiceRoute = createRoute({
  method: "post",
  path: "/projects/{projectId}/services",
  summary: "Create a service",
  description:
    "Without hostPort, the lowest free port of HOST_PORT_MIN..HOST_PORT_MAX is assigned. " +
    "Without runnerId, the oldest registered runner is chosen.",
  tags: ["Services"],
  middleware: [requireAccess("write")] as const,
  request: { params: projectParams, body: jsonBody(createServiceBody) },
  responses: {
    201: jsonResponse(serviceEnvelope, "The new service"),
    ...errorResponses(400, ...authErrors, 404, 409),
  },
});

const listServicesRoute = createRoute({
  method: "get",
  path: "/projects/{projectId}/services",
  summary: "List a project's services",
  tags: ["Services"],
  middleware: [requireAccess("read")] as const,
  request: { params: projectParams },
  responses: {
    200: jsonResponse(z.object({ services: z.array(service) }), "Oldest first"),
    ...errorResponses(...authErrors, 404),
  },
});

const getServiceRoute = createRoute({
  method: "get",
  path: "/services/{serviceId}",
  summary: "Get a service",
  tags: ["Services"],
  middleware: [requireAccess("read")] as const,
  request: { params: serviceParams },
  responses: {
    200: jsonResponse(serviceEnvelope, "The service"),
    ...errorResponses(...authErrors, 404),
  },
});

const updateServiceRoute = createRoute({
  method: "patch",
  path: "/services/{serviceId}",
  summary: "Change a service",
  description:
    "Fields left out stay as they are; `env`, when given, replaces all variables.",
  tags: ["Services"],
  middleware: [requireAccess("write")] as const,
  request: { params: serviceParams, body: jsonBody(updateServiceBody) },
  responses: {
    200: jsonResponse(serviceEnvelope, "The updated service"),
    ...errorResponses(400, ...authErrors, 404, 409),
  },
});

const deleteServiceRoute = createRoute({
  method: "delete",
  path: "/services/{serviceId}",
  summary: "Delete a service",
  description: "Refused with 409 while a deployment of it is queued or building.",
  tags: ["Services"],
  middleware: [requireAccess("write")] as const,
  request: { params: serviceParams },
  responses: {
    204: { description: "Deleted, with its deployment history" },
    ...errorResponses(...authErrors, 404, 409),
  },
});

export const serviceRoutes = newRouter()
  .openapi(createServiceRoute, async (c) => {
    const project = await findProject(c, c.req.valid("param").projectId);
    const { hostPort, runnerId, env, ...fields } = c.req.valid("json");
    const db = database(c.env);

    const values = {
      ...fields,
      id: newId("svc"),
      projectId: project.id,
      runnerId: await resolveRunner(db, runnerId),
      envSealed: await sealEnv(c.env, env),
    };
    const row = await insertService(db, c.env, values, hostPort);
    return c.json({ service: await serviceJson(c.env, row, c.var.apiKey) }, 201);
  })

  .openapi(listServicesRoute, async (c) => {
    const project = await findProject(c, c.req.valid("param").projectId);
    const rows = await database(c.env)
      .select()
      .from(services)
      .where(eq(services.projectId, project.id))
      .orderBy(...oldestFirst(services.createdAt));
    const list = await Promise.all(
      rows.map((row) => serviceJson(c.env, row, c.var.apiKey)),
    );
    return c.json({ services: list }, 200);
  })

  .openapi(getServiceRoute, async (c) => {
    const row = await findService(c, c.req.valid("param").serviceId);
    return c.json({ service: await serviceJson(c.env, row, c.var.apiKey) }, 200);
  })

  .openapi(updateServiceRoute, async (c) => {
    const current = await findService(c, c.req.valid("param").serviceId);
    const { hostPort, runnerId, env, ...fields } = c.req.valid("json");
    const db = database(c.env);

    const changes: Partial<NewService> = { ...fields };
    if (hostPort !== undefined) changes.hostPort = hostPort;
    if (runnerId !== undefined) changes.runnerId = await resolveRunner(db, runnerId);
    if (env !== undefined) changes.envSealed = await sealEnv(c.env, env);
    if (Object.keys(changes).length === 0) {
      return c.json({ service: await serviceJson(c.env, current, c.var.apiKey) }, 200);
    }

    let row: ServiceRow | undefined;
    try {
      [row] = await db
        .update(services)
        .set({ ...changes, updatedAt: new Date().toISOString() })
        .where(eq(services.id, current.id))
        .returning();
    } catch (error) {
      if (isConstraintViolation(error, "UNIQUE", "services.host_port")) {
        throw hostPortConflict(hostPort!);
      }
      throw error;
    }
    // Deleted since the lookup a moment ago.
    if (!row) throw notFound("Service");
    return c.json({ service: await serviceJson(c.env, row, c.var.apiKey) }, 200);
  })

  .openapi(deleteServiceRoute, async (c) => {
    const service = await findService(c, c.req.valid("param").serviceId);
    const { id } = service;
    const db = database(c.env);
    // Every runner that may hold something of the service, read before the
    // cascade deletes the deployments that name them.
    const ran = await db
      .selectDistinct({ runnerId: deployments.runnerId })
      .from(deployments)
      .where(eq(deployments.serviceId, id));
    // One statement, so a deployment queued meanwhile cannot be cascaded away.
    const unfinished = db
      .select()
      .from(deployments)
      .where(
        and(
          eq(deployments.serviceId, id),
          inArray(deployments.status, unfinishedStatuses),
        ),
      );
    const deleted = await db
      .delete(services)
      .where(and(eq(services.id, id), notExists(unfinished)))
      .returning({ id: services.id });
    if (deleted.length === 0) {
      throw conflict(
        "This service has a deployment queued or building; wait for it or abort it first",
      );
    }
    const runnerIds = new Set([
      await runnerIdFor(c.env, service),
      ...ran.map((r) => r.runnerId),
    ]);
    await Promise.all(
      [...runnerIds]
        .filter((runnerId): runnerId is string => runnerId !== null)
        .map((runnerId) => runnerChannel(c.env, runnerId).removeService(id)),
    );
    return c.body(null, 204);
  });
