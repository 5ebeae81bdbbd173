import { describe, expect, it } from "vitest";
import {
  api,
  createProject,
  createService,
  documentedPaths,
  expectAuthRequired,
  expectError,
  expectInvalid,
  keys,
  rootKey,
  scopedKey,
} from "./support";

const isoMs = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const absent = "prj_doesnotexist0000";

describe("POST /api/projects", () => {
  it("creates a project and answers 201 with it", async () => {
    const res = await api("POST", "/api/projects", {
      key: (await keys()).write,
      body: { name: "  Storefront  " },
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      project: {
        id: expect.stringMatching(/^prj_[0-9a-z]{16}$/),
        name: "Storefront",
        createdAt: expect.stringMatching(isoMs),
        updatedAt: expect.stringMatching(isoMs),
      },
    });
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const key = (await keys()).write;
    expectInvalid(
      await api("POST", "/api/projects", { key, body: { name: "" } }),
      "name",
    );
    expectInvalid(await api("POST", "/api/projects", { key, body: {} }), "name");
    expectInvalid(await api("POST", "/api/projects", { key }), "name");
  });

  it("answers 400 validation_failed to a body that is not JSON", async () => {
    const res = await api("POST", "/api/projects", {
      key: (await keys()).write,
      rawBody: "{",
    });
    expectError(res, 400, "validation_failed");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("POST", "/api/projects", { name: "x" });
  });

  it("refuses read keys with 403", async () => {
    const res = await api("POST", "/api/projects", {
      key: (await keys()).read,
      body: { name: "x" },
    });
    expectError(res, 403, "forbidden");
  });

  it("refuses project-scoped keys with 403, since they could never see the new project", async () => {
    const { key } = await scopedKey("admin");
    expectError(
      await api("POST", "/api/projects", { key, body: { name: "x" } }),
      403,
      "forbidden",
    );
  });
});

describe("GET /api/projects", () => {
  it("lists every project, oldest first, to an unscoped key", async () => {
    const first = await createProject();
    const second = await createProject();
    const res = await api("GET", "/api/projects", { key: (await keys()).read });
    expect(res.status).toBe(200);
    const ids = res.body.projects.map((p: { id: string }) => p.id);
    expect(ids).toContain(first.id);
    expect(ids.indexOf(first.id)).toBeLessThan(ids.indexOf(second.id));
  });

  it("lists only the projects a scoped key can see", async () => {
    await createProject();
    const { key, projectId } = await scopedKey("read");
    const res = await api("GET", "/api/projects", { key });
    expect(res.status).toBe(200);
    expect(res.body.projects.map((p: { id: string }) => p.id)).toEqual([projectId]);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", "/api/projects");
  });
});

describe("GET /api/projects/:projectId", () => {
  it("returns the project", async () => {
    const project = await createProject();
    const res = await api("GET", `/api/projects/${project.id}`, {
      key: (await keys()).read,
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ project });
  });

  it("answers 404 for an absent project", async () => {
    const res = await api("GET", `/api/projects/${absent}`, { key: (await keys()).read });
    expectError(res, 404, "not_found");
  });

  it("answers 404 for a project outside the key's scope, exactly as for an absent one", async () => {
    const other = await createProject();
    const { key } = await scopedKey("admin");
    const outside = await api("GET", `/api/projects/${other.id}`, { key });
    const missing = await api("GET", `/api/projects/${absent}`, { key });
    expectError(outside, 404, "not_found");
    expect(outside.body).toEqual(missing.body);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", `/api/projects/${absent}`);
  });
});

describe("PATCH /api/projects/:projectId", () => {
  it("renames the project and moves updatedAt", async () => {
    const project = await createProject();
    const res = await api("PATCH", `/api/projects/${project.id}`, {
      key: (await keys()).write,
      body: { name: "Renamed" },
    });
    expect(res.status).toBe(200);
    expect(res.body.project).toMatchObject({ id: project.id, name: "Renamed" });
    expect(res.body.project.createdAt).toBe(project.createdAt);
    expect(res.body.project.updatedAt >= project.updatedAt).toBe(true);
  });

  it("lets a scoped write key rename its own project", async () => {
    const { key, projectId } = await scopedKey("write");
    const res = await api("PATCH", `/api/projects/${projectId}`, {
      key,
      body: { name: "Mine" },
    });
    expect(res.status).toBe(200);
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const project = await createProject();
    const key = (await keys()).write;
    const path = `/api/projects/${project.id}`;
    expectInvalid(await api("PATCH", path, { key, body: { name: 42 } }), "name");
    expectInvalid(
      await api("PATCH", path, { key, body: { name: "x".repeat(101) } }),
      "name",
    );
  });

  it("needs an API key", async () => {
    await expectAuthRequired("PATCH", `/api/projects/${absent}`, { name: "x" });
  });

  it("refuses read keys with 403", async () => {
    const project = await createProject();
    const res = await api("PATCH", `/api/projects/${project.id}`, {
      key: (await keys()).read,
      body: { name: "x" },
    });
    expectError(res, 403, "forbidden");
  });

  it("answers 404 for an absent project and for one outside the key's scope", async () => {
    const other = await createProject();
    const { key } = await scopedKey("write");
    const body = { name: "x" };
    expectError(
      await api("PATCH", `/api/projects/${absent}`, { key, body }),
      404,
      "not_found",
    );
    expectError(
      await api("PATCH", `/api/projects/${other.id}`, { key, body }),
      404,
      "not_found",
    );
  });
});

describe("DELETE /api/projects/:projectId", () => {
  it("deletes an empty project", async () => {
    const project = await createProject();
    const key = (await keys()).write;
    const res = await api("DELETE", `/api/projects/${project.id}`, { key });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expectError(
      await api("GET", `/api/projects/${project.id}`, { key }),
      404,
      "not_found",
    );
  });

  it("refuses with 409 while the project still has services", async () => {
    const project = await createProject();
    await createService(project.id);
    const res = await api("DELETE", `/api/projects/${project.id}`, {
      key: (await keys()).write,
    });
    expectError(res, 409, "conflict");
    expect(res.body.error.message).toMatch(/delete them first/);
    const still = await api("GET", `/api/projects/${project.id}`, {
      key: await rootKey(),
    });
    expect(still.status).toBe(200);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("DELETE", `/api/projects/${absent}`);
  });

  it("refuses read keys with 403", async () => {
    const project = await createProject();
    const res = await api("DELETE", `/api/projects/${project.id}`, {
      key: (await keys()).read,
    });
    expectError(res, 403, "forbidden");
  });

  it("answers 404 for an absent project and for one outside the key's scope", async () => {
    const other = await createProject();
    const { key } = await scopedKey("write");
    expectError(
      await api("DELETE", `/api/projects/${absent}`, { key }),
      404,
      "not_found",
    );
    expectError(
      await api("DELETE", `/api/projects/${other.id}`, { key }),
      404,
      "not_found",
    );
    const still = await api("GET", `/api/projects/${other.id}`, { key: await rootKey() });
    expect(still.status).toBe(200);
  });
});

it("documents the project routes in openapi.json", async () => {
  const paths = await documentedPaths();
  expect(Object.keys(paths["/api/projects"])).toEqual(
    expect.arrayContaining(["get", "post"]),
  );
  expect(Object.keys(paths["/api/projects/{projectId}"])).toEqual(
    expect.arrayContaining(["get", "patch", "delete"]),
  );
});
