/**
 * Projects: named groups of services, and the unit of API key scope.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { and, eq, inArray, notExists } from "drizzle-orm";
import { createProjectBody, project, updateProjectBody } from "../../schema/api";
import { projects, services } from "../../schema/tables";
import { requireAccess } from "../auth";
import { ApiError, conflict, ErrorCode, notFound } from "../errors";
import { newId } from "../ids";
import { findProject } from "../lookups";
import { authErrors, errorResponses, idParam, jsonBody, jsonResponse } from "../openapi";
import { database, newRouter } from "../router";
import { projectJson } from "../serializers";
import { oldestFirst } from "../sql";

const projectEnvelope = z.object({ project });
const projectParams = z.object({ projectId: idParam("prj_4k2v8w0c1x9q7m3z") });

const createProjectRoute = createRoute({
  method: "post",
  path: "/projects",
  summary: "Create a project",
  description:
    "Needs a key that is not scoped to projects, since it could never see the new one.",
  tags: ["Projects"],
  middleware: [requireAccess("write")] as const,
  request: { body: jsonBody(createProjectBody) },
  responses: {
    201: jsonResponse(projectEnvelope, "The new project"),
    ...errorResponses(400, ...authErrors),
  },
});

const listProjectsRoute = createRoute({
  method: "get",
  path: "/projects",
  summary: "List the projects the key can see",
  tags: ["Projects"],
  middleware: [requireAccess("read")] as const,
  responses: {
    200: jsonResponse(z.object({ projects: z.array(project) }), "Oldest first"),
    ...errorResponses(...authErrors),
  },
});

const getProjectRoute = createRoute({
  method: "get",
  path: "/projects/{projectId}",
  summary: "Get a project",
  tags: ["Projects"],
  middleware: [requireAccess("read")] as const,
  request: { params: projectParams },
  responses: {
    200: jsonResponse(projectEnvelope, "The project"),
    ...errorResponses(...authErrors, 404),
  },
});

const updateProjectRoute = createRoute({
  method: "patch",
  path: "/projects/{projectId}",
  summary: "Rename a project",
  tags: ["Projects"],
  middleware: [requireAccess("write")] as const,
  request: { params: projectParams, body: jsonBody(updateProjectBody) },
  responses: {
    200: jsonResponse(projectEnvelope, "The updated project"),
    ...errorResponses(400, ...authErrors, 404),
  },
});

const deleteProjectRoute = createRoute({
  method: "delete",
  path: "/projects/{projectId}",
  summary: "Delete a project",
  description: "Refused with 409 while the project still has services.",
  tags: ["Projects"],
  middleware: [requireAccess("write")] as const,
  request: { params: projectParams },
  responses: {
    204: { description: "Deleted" },
    ...errorResponses(...authErrors, 404, 409),
  },
});

export const projectRoutes = newRouter()
  .openapi(createProjectRoute, async (c) => {
    if (c.var.apiKey.projectIds !== null) {
      throw new ApiError(
        403,
        ErrorCode.forbidden,
        "A project-scoped key cannot create projects, as it could not see them",
      );
    }
    const { name } = c.req.valid("json");
    const [row] = await database(c.env)
      .insert(projects)
      .values({ id: newId("prj"), name })
      .returning();
    return c.json({ project: projectJson(row) }, 201);
  })

  .openapi(listProjectsRoute, async (c) => {
    const scope = c.var.apiKey.projectIds;
    const rows = await database(c.env)
      .select()
      .from(projects)
      .where(scope === null ? undefined : inArray(projects.id, scope))
      .orderBy(...oldestFirst(projects.createdAt));
    return c.json({ projects: rows.map(projectJson) }, 200);
  })

  .openapi(getProjectRoute, async (c) => {
    const row = await findProject(c, c.req.valid("param").projectId);
    return c.json({ project: projectJson(row) }, 200);
  })

  .openapi(updateProjectRoute, async (c) => {
    const { id } = await findProject(c, c.req.valid("param").projectId);
    const { name } = c.req.valid("json");
    const [row] = await database(c.env)
      .update(projects)
      .set({ name, updatedAt: new Date().toISOString() })
      .where(eq(projects.id, id))
      .returning();
    // Deleted since the lookup a moment ago.
    if (!row) throw notFound("Project");
    return c.json({ project: projectJson(row) }, 200);
  })

  .openapi(deleteProjectRoute, async (c) => {
    const { id } = await findProject(c, c.req.valid("param").projectId);
    const db = database(c.env);
    // One statement, so a service created meanwhile cannot be cascaded away.
    const deleted = await db
      .delete(projects)
      .where(
        and(
          eq(projects.id, id),
          notExists(db.select().from(services).where(eq(services.projectId, id))),
        ),
      )
      .returning({ id: projects.id });
    if (deleted.length === 0) {
      throw conflict("This project still has services; delete them first");
    }
    return c.body(null, 204);
  });
