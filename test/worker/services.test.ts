import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import {
  api,
  createProject,
  createRunner,
  createService,
  documentedPaths,
  expectAuthRequired,
  expectError,
  expectInvalid,
  keys,
  rootKey,
  scopedKey,
  serviceBody,
} from "./support";

// The wrangler.toml range the tests run with.
const PORT_MIN = 20_000;
const PORT_MAX = 29_999;

const absentService = "svc_doesnotexist0000";
const absentProject = "prj_doesnotexist0000";

/** The lowest free host port, worked out here independently of the Worker. */
async function expectedFreePort(): Promise<number> {
  const { results } = await env.DB.prepare("SELECT host_port FROM services").all<{
    host_port: number;
  }>();
  const used = new Set(results.map((row) => row.host_port));
  let port = PORT_MIN;
  while (used.has(port)) port++;
  return port;
}

/** Writes a deployment row the way the deployment routes would. */
async function addDeployment(serviceId: string, status: string) {
  await env.DB.prepare(
    "INSERT INTO deployments (id, service_id, status, trigger) VALUES (?, ?, ?, 'manual')",
  )
    .bind(`dep_${crypto.randomUUID().slice(0, 16)}`, serviceId, status)
    .run();
}

const createAs = async (key: string, projectId: string, body: unknown) =>
  api("POST", `/api/projects/${projectId}/services`, { key, body });

describe("POST /api/projects/:projectId/services", () => {
  it("creates a service with the documented defaults", async () => {
    const project = await createProject();
    const res = await createAs((await keys()).write, project.id, {
      name: "web",
      repoUrl: "https://git.example.com/acme/web.git",
      internalPort: 3000,
      runnerId: null,
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      service: {
        id: expect.stringMatching(/^svc_[0-9a-z]{16}$/),
        projectId: project.id,
        name: "web",
        repoUrl: "https://git.example.com/acme/web.git",
        branch: "main",
        rootDir: "",
        dockerfilePath: "Dockerfile",
        internalPort: 3000,
        hostPort: expect.any(Number),
        healthCheckPath: "/",
        runnerId: null,
        env: {},
        createdAt: expect.stringMatching(/^\d{4}-.*\.\d{3}Z$/),
        updatedAt: expect.stringMatching(/^\d{4}-.*\.\d{3}Z$/),
      },
    });
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const project = await createProject();
    const key = (await keys()).write;
    const post = (overrides: Record<string, unknown>) =>
      createAs(key, project.id, serviceBody(overrides));

    expectInvalid(await post({ name: "" }), "name");
    expectInvalid(await post({ repoUrl: "ftp://example.com/x" }), "repoUrl");
    expectInvalid(await post({ internalPort: 0 }), "internalPort");
    expectInvalid(await post({ hostPort: 70_000 }), "hostPort");
    expectInvalid(await post({ rootDir: "../etc" }), "rootDir");
    expectInvalid(await post({ healthCheckPath: "health" }), "healthCheckPath");
    expectInvalid(await post({ env: { "1X": "v" } }), "env.1X");
    expectInvalid(await post({ sneaky: true }), "");
    expectInvalid(await createAs(key, project.id, {}), "repoUrl");

    const malformed = await api("POST", `/api/projects/${project.id}/services`, {
      key,
      rawBody: "{]",
    });
    expectError(malformed, 400, "validation_failed");
  });

  it("answers 400 naming runnerId when no such runner is registered", async () => {
    const project = await createProject();
    const res = await createAs(
      (await keys()).write,
      project.id,
      serviceBody({ runnerId: "run_nothere" }),
    );
    expectInvalid(res, "runnerId");
  });

  it("needs an API key", async () => {
    await expectAuthRequired(
      "POST",
      `/api/projects/${absentProject}/services`,
      serviceBody(),
    );
  });

  it("refuses read keys with 403", async () => {
    const project = await createProject();
    const res = await createAs((await keys()).read, project.id, serviceBody());
    expectError(res, 403, "forbidden");
  });

  it("answers 404 for an absent project and for one outside the key's scope", async () => {
    const other = await createProject();
    const { key } = await scopedKey("write");
    expectError(await createAs(key, absentProject, serviceBody()), 404, "not_found");
    expectError(await createAs(key, other.id, serviceBody()), 404, "not_found");
  });
});

describe("host port assignment", () => {
  it("gives a service without hostPort the lowest free port of the range", async () => {
    const project = await createProject();
    const expected = await expectedFreePort();
    const service = await createService(project.id);
    expect(service.hostPort).toBe(expected);
    expect(service.hostPort).toBeGreaterThanOrEqual(PORT_MIN);
    expect(service.hostPort).toBeLessThanOrEqual(PORT_MAX);
  });

  it("reuses a port freed by a deleted service, and skips ports taken explicitly", async () => {
    const project = await createProject();
    const key = await rootKey();
    const first = await createService(project.id);
    await createService(project.id);
    await api("DELETE", `/api/services/${first.id}`, { key });

    const refill = await createService(project.id);
    expect(refill.hostPort).toBe(first.hostPort);

    const lowest = await expectedFreePort();
    await createService(project.id, { hostPort: lowest });
    const expected = await expectedFreePort();
    expect(expected).not.toBe(lowest);
    expect((await createService(project.id)).hostPort).toBe(expected);
  });

  it("hands out distinct ports to services created at the same moment", async () => {
    const project = await createProject();
    const key = (await keys()).write;
    const created = await Promise.all(
      Array.from({ length: 12 }, () => createAs(key, project.id, serviceBody())),
    );
    expect(created.map((res) => res.status)).toEqual(Array(12).fill(201));
    const ports = created.map((res) => res.body.service.hostPort);
    expect(new Set(ports).size).toBe(12);
  });

  it("answers 409 to an explicit hostPort another service holds", async () => {
    const project = await createProject();
    const taken = await createService(project.id);
    const res = await createAs(
      (await keys()).write,
      project.id,
      serviceBody({ hostPort: taken.hostPort }),
    );
    expectError(res, 409, "conflict");
    expect(res.body.error.message).toContain(String(taken.hostPort));
  });

  it("lets one of many creations racing for an explicit port win, the rest get 409", async () => {
    const project = await createProject();
    const key = (await keys()).write;
    const racing = await Promise.all(
      Array.from({ length: 8 }, () =>
        createAs(key, project.id, serviceBody({ hostPort: 31_000 })),
      ),
    );
    const statuses = racing.map((res) => res.status).sort();
    expect(statuses).toEqual([201, ...Array(7).fill(409)]);
  });

  it("answers 409 when every port of the range is taken", async () => {
    const project = await createProject();
    // Fill every free port of the range straight in D1, then clean up.
    await env.DB.prepare(
      `WITH RECURSIVE p(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM p WHERE n < ?2)
       INSERT INTO services (id, project_id, name, repo_url, branch, root_dir,
         dockerfile_path, internal_port, host_port, health_check_path)
       SELECT 'svc_fill' || n, ?3, 'filler', 'https://x/y', 'main', '', 'Dockerfile',
         80, n, '/'
       FROM p WHERE n NOT IN (SELECT host_port FROM services)`,
    )
      .bind(PORT_MIN, PORT_MAX, project.id)
      .run();
    try {
      const key = (await keys()).write;
      const res = await createAs(key, project.id, serviceBody());
      expectError(res, 409, "conflict");
      expect(res.body.error.message).toContain(`${PORT_MIN} to ${PORT_MAX}`);

      const outside = await createAs(key, project.id, serviceBody({ hostPort: 40_000 }));
      expect(outside.status).toBe(201);
    } finally {
      await env.DB.prepare("DELETE FROM services WHERE project_id = ?")
        .bind(project.id)
        .run();
    }
  });
});

describe("runner choice", () => {
  it("leaves runnerId null when no runner is registered", async () => {
    await env.DB.prepare("DELETE FROM runners").run();
    const project = await createProject();
    const service = await createService(project.id);
    expect(service.runnerId).toBeNull();
  });

  it("picks the oldest registered runner when runnerId is left out", async () => {
    await env.DB.prepare("DELETE FROM runners").run();
    const oldest = await createRunner();
    await createRunner();
    const project = await createProject();
    const service = await createService(project.id);
    expect(service.runnerId).toBe(oldest.runner.id);
  });

  it("keeps an explicit runnerId, and an explicit null", async () => {
    await createRunner();
    const chosen = await createRunner();
    const project = await createProject();
    const named = await createService(project.id, { runnerId: chosen.runner.id });
    expect(named.runnerId).toBe(chosen.runner.id);
    const none = await createService(project.id, { runnerId: null });
    expect(none.runnerId).toBeNull();
  });
});

describe("environment variables", () => {
  it("are sealed at rest", async () => {
    const project = await createProject();
    const service = await createService(project.id, {
      env: { DATABASE_URL: "postgres://s3cret" },
    });
    const row = await env.DB.prepare("SELECT env_sealed FROM services WHERE id = ?")
      .bind(service.id)
      .first<{ env_sealed: string }>();
    expect(row!.env_sealed).toMatch(/^v1\./);
    expect(row!.env_sealed).not.toContain("s3cret");
  });

  it("are shown in clear to admin keys and redacted for write and read keys", async () => {
    const project = await createProject();
    const { admin, write, read } = await keys();
    const variables = { DATABASE_URL: "postgres://s3cret", PORT: "3000" };
    const redacted = { DATABASE_URL: "[redacted]", PORT: "[redacted]" };

    const created = await createAs(write, project.id, serviceBody({ env: variables }));
    expect(created.body.service.env).toEqual(redacted);
    const path = `/api/services/${created.body.service.id}`;
    const list = `/api/projects/${project.id}/services`;

    expect((await api("GET", path, { key: admin })).body.service.env).toEqual(variables);
    expect((await api("GET", list, { key: admin })).body.services[0].env).toEqual(
      variables,
    );
    for (const key of [write, read]) {
      const one = await api("GET", path, { key });
      expect(one.body.service.env).toEqual(redacted);
      expect(JSON.stringify(one.body)).not.toContain("s3cret");
      const many = await api("GET", list, { key });
      expect(many.body.services[0].env).toEqual(redacted);
    }
    const patched = await api("PATCH", path, { key: write, body: { name: "renamed" } });
    expect(patched.body.service.env).toEqual(redacted);
  });
});

describe("GET /api/projects/:projectId/services", () => {
  it("lists the project's services, oldest first", async () => {
    const project = await createProject();
    const elsewhere = await createProject();
    const first = await createService(project.id);
    const second = await createService(project.id);
    await createService(elsewhere.id);
    const res = await api("GET", `/api/projects/${project.id}/services`, {
      key: (await keys()).read,
    });
    expect(res.status).toBe(200);
    expect(res.body.services.map((s: { id: string }) => s.id)).toEqual([
      first.id,
      second.id,
    ]);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", `/api/projects/${absentProject}/services`);
  });

  it("answers 404 for an absent project and for one outside the key's scope", async () => {
    const other = await createProject();
    await createService(other.id);
    const { key } = await scopedKey("read");
    const list = (id: string) => api("GET", `/api/projects/${id}/services`, { key });
    expectError(await list(absentProject), 404, "not_found");
    expectError(await list(other.id), 404, "not_found");
  });
});

describe("GET /api/services/:serviceId", () => {
  it("returns the service", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const res = await api("GET", `/api/services/${service.id}`, { key: await rootKey() });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ service });
  });

  it("lets a scoped key see the services of its own project", async () => {
    const { key, projectId } = await scopedKey("read");
    const service = await createService(projectId);
    expect((await api("GET", `/api/services/${service.id}`, { key })).status).toBe(200);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", `/api/services/${absentService}`);
  });

  it("answers 404 for an absent service and for one outside the key's scope", async () => {
    const other = await createProject();
    const service = await createService(other.id);
    const { key } = await scopedKey("admin");
    const outside = await api("GET", `/api/services/${service.id}`, { key });
    const missing = await api("GET", `/api/services/${absentService}`, { key });
    expectError(outside, 404, "not_found");
    expect(outside.body).toEqual(missing.body);
  });
});

describe("PATCH /api/services/:serviceId", () => {
  it("changes only the given fields and moves updatedAt", async () => {
    const project = await createProject();
    const service = await createService(project.id, { env: { A: "1" } });
    const res = await api("PATCH", `/api/services/${service.id}`, {
      key: await rootKey(),
      body: { branch: "release", internalPort: 8080, env: { B: "2" } },
    });
    expect(res.status).toBe(200);
    expect(res.body.service).toEqual({
      ...service,
      branch: "release",
      internalPort: 8080,
      env: { B: "2" },
      updatedAt: expect.any(String),
    });
    expect(res.body.service.updatedAt >= service.updatedAt).toBe(true);
  });

  it("returns the service unchanged for an empty body", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const res = await api("PATCH", `/api/services/${service.id}`, {
      key: await rootKey(),
      body: {},
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ service });
  });

  it("moves the service to a free host port, and keeps its own port without conflict", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const key = (await keys()).write;
    const path = `/api/services/${service.id}`;
    const own = await api("PATCH", path, { key, body: { hostPort: service.hostPort } });
    expect(own.status).toBe(200);
    const moved = await api("PATCH", path, { key, body: { hostPort: 32_000 } });
    expect(moved.body.service.hostPort).toBe(32_000);
  });

  it("answers 409 to a host port another service holds", async () => {
    const project = await createProject();
    const holder = await createService(project.id);
    const mover = await createService(project.id);
    const res = await api("PATCH", `/api/services/${mover.id}`, {
      key: (await keys()).write,
      body: { hostPort: holder.hostPort },
    });
    expectError(res, 409, "conflict");
  });

  it("lets one of many services racing for a port win, the rest get 409", async () => {
    const project = await createProject();
    const movers = [];
    for (let i = 0; i < 8; i++) movers.push(await createService(project.id));
    const key = (await keys()).write;
    const body = { hostPort: 33_000 };
    const racing = await Promise.all(
      movers.map((s) => api("PATCH", `/api/services/${s.id}`, { key, body })),
    );
    const statuses = racing.map((res) => res.status).sort();
    expect(statuses).toEqual([200, ...Array(7).fill(409)]);
  });

  it("assigns, checks and clears the runner", async () => {
    const project = await createProject();
    const service = await createService(project.id, { runnerId: null });
    const { runner } = await createRunner();
    const key = (await keys()).write;
    const path = `/api/services/${service.id}`;

    const assigned = await api("PATCH", path, { key, body: { runnerId: runner.id } });
    expect(assigned.body.service.runnerId).toBe(runner.id);
    expectInvalid(
      await api("PATCH", path, { key, body: { runnerId: "run_nothere" } }),
      "runnerId",
    );
    const cleared = await api("PATCH", path, { key, body: { runnerId: null } });
    expect(cleared.body.service.runnerId).toBeNull();
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const key = (await keys()).write;
    const patch = (body: unknown) =>
      api("PATCH", `/api/services/${service.id}`, { key, body });
    expectInvalid(await patch({ internalPort: "80" }), "internalPort");
    expectInvalid(await patch({ branch: "a b" }), "branch");
    expectInvalid(await patch({ dockerfilePath: "" }), "dockerfilePath");
    expectInvalid(await patch({ projectId: "prj_x" }), "");
    const malformed = await api("PATCH", `/api/services/${service.id}`, {
      key,
      rawBody: "[",
    });
    expectError(malformed, 400, "validation_failed");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("PATCH", `/api/services/${absentService}`, { name: "x" });
  });

  it("refuses read keys with 403", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const res = await api("PATCH", `/api/services/${service.id}`, {
      key: (await keys()).read,
      body: { name: "x" },
    });
    expectError(res, 403, "forbidden");
  });

  it("answers 404 for an absent service and for one outside the key's scope", async () => {
    const other = await createProject();
    const service = await createService(other.id);
    const { key } = await scopedKey("write");
    const body = { name: "x" };
    const patch = (id: string) => api("PATCH", `/api/services/${id}`, { key, body });
    expectError(await patch(absentService), 404, "not_found");
    expectError(await patch(service.id), 404, "not_found");
  });
});

describe("DELETE /api/services/:serviceId", () => {
  it("deletes the service, its finished deployments with it", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    await addDeployment(service.id, "running");
    await addDeployment(service.id, "failed");
    const key = (await keys()).write;

    const res = await api("DELETE", `/api/services/${service.id}`, { key });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expectError(
      await api("GET", `/api/services/${service.id}`, { key }),
      404,
      "not_found",
    );
    const left = await env.DB.prepare(
      "SELECT count(*) AS n FROM deployments WHERE service_id = ?",
    )
      .bind(service.id)
      .first<{ n: number }>();
    expect(left!.n).toBe(0);
  });

  it.each(["queued", "building"])(
    "refuses with 409 while a deployment is %s",
    async (status) => {
      const project = await createProject();
      const service = await createService(project.id);
      await addDeployment(service.id, status);
      const key = (await keys()).write;
      expectError(
        await api("DELETE", `/api/services/${service.id}`, { key }),
        409,
        "conflict",
      );
      expect((await api("GET", `/api/services/${service.id}`, { key })).status).toBe(200);
    },
  );

  it("needs an API key", async () => {
    await expectAuthRequired("DELETE", `/api/services/${absentService}`);
  });

  it("refuses read keys with 403", async () => {
    const project = await createProject();
    const service = await createService(project.id);
    const res = await api("DELETE", `/api/services/${service.id}`, {
      key: (await keys()).read,
    });
    expectError(res, 403, "forbidden");
  });

  it("answers 404 for an absent service and for one outside the key's scope", async () => {
    const other = await createProject();
    const service = await createService(other.id);
    const { key } = await scopedKey("write");
    expectError(
      await api("DELETE", `/api/services/${absentService}`, { key }),
      404,
      "not_found",
    );
    expectError(
      await api("DELETE", `/api/services/${service.id}`, { key }),
      404,
      "not_found",
    );
    const still = await api("GET", `/api/services/${service.id}`, {
      key: await rootKey(),
    });
    expect(still.status).toBe(200);
  });
});

it("documents the service routes in openapi.json", async () => {
  const paths = await documentedPaths();
  expect(Object.keys(paths["/api/projects/{projectId}/services"])).toEqual(
    expect.arrayContaining(["get", "post"]),
  );
  expect(Object.keys(paths["/api/services/{serviceId}"])).toEqual(
    expect.arrayContaining(["get", "patch", "delete"]),
  );
});
