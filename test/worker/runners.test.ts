import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hashSecret } from "../../worker/crypto";
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
  scopedKey,
} from "./support";

const absent = "run_doesnotexist0000";

/** Sets what the runner's socket would have recorded. */
async function setLiveness(
  runnerId: string,
  online: boolean,
  heartbeatAgoMs: number | null,
) {
  const at =
    heartbeatAgoMs === null ? null : new Date(Date.now() - heartbeatAgoMs).toISOString();
  await env.DB.prepare(
    "UPDATE runners SET online = ?, last_heartbeat_at = ? WHERE id = ?",
  )
    .bind(online ? 1 : 0, at, runnerId)
    .run();
}

describe("POST /api/runners", () => {
  it("registers a runner and shows its token once, storing only the hash", async () => {
    const res = await api("POST", "/api/runners", {
      key: (await keys()).admin,
      body: { name: "rack-1" },
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      runner: {
        id: expect.stringMatching(/^run_[0-9a-z]{16}$/),
        name: "rack-1",
        online: false,
        lastHeartbeatAt: null,
        version: null,
        capacity: 2,
        createdAt: expect.stringMatching(/^\d{4}-.*\.\d{3}Z$/),
      },
      token: expect.stringMatching(/^apr_[0-9a-z]{40}$/),
    });

    const row = await env.DB.prepare("SELECT * FROM runners WHERE id = ?")
      .bind(res.body.runner.id)
      .first();
    expect(row!.token_hash).toBe(await hashSecret(res.body.token));
    expect(JSON.stringify(row)).not.toContain(res.body.token);
  });

  it("takes an explicit capacity", async () => {
    const { runner } = await createRunner({ capacity: 8 });
    expect(runner.capacity).toBe(8);
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const key = (await keys()).admin;
    const post = (body: unknown) => api("POST", "/api/runners", { key, body });
    expectInvalid(await post({}), "name");
    expectInvalid(await post({ name: "x", capacity: 0 }), "capacity");
    expectInvalid(await post({ name: "x", capacity: 1.5 }), "capacity");
    expectInvalid(await post({ name: "x", token: "mine" }), "");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("POST", "/api/runners", { name: "x" });
  });

  it("refuses write keys with 403", async () => {
    const res = await api("POST", "/api/runners", {
      key: (await keys()).write,
      body: { name: "x" },
    });
    expectError(res, 403, "forbidden");
  });
});

describe("GET /api/runners", () => {
  it("lists runners oldest first", async () => {
    const first = await createRunner();
    const second = await createRunner();
    const res = await api("GET", "/api/runners", { key: (await keys()).read });
    expect(res.status).toBe(200);
    const ids = res.body.runners.map((r: { id: string }) => r.id);
    expect(ids.indexOf(first.runner.id)).toBeGreaterThanOrEqual(0);
    expect(ids.indexOf(first.runner.id)).toBeLessThan(ids.indexOf(second.runner.id));
  });

  it("shows a runner online only while its heartbeats are under 90 seconds old", async () => {
    const fresh = (await createRunner()).runner.id;
    const stale = (await createRunner()).runner.id;
    const closed = (await createRunner()).runner.id;
    await setLiveness(fresh, true, 5_000);
    await setLiveness(stale, true, 91_000);
    await setLiveness(closed, false, 5_000);

    const res = await api("GET", "/api/runners", { key: (await keys()).read });
    const online = Object.fromEntries(
      res.body.runners.map((r: { id: string; online: boolean }) => [r.id, r.online]),
    );
    expect(online).toMatchObject({ [fresh]: true, [stale]: false, [closed]: false });
    const shown = res.body.runners.find((r: { id: string }) => r.id === fresh);
    expect(shown.lastHeartbeatAt).toMatch(/^\d{4}-.*\.\d{3}Z$/);
  });

  it("shows runners to project-scoped keys too, since runners serve every project", async () => {
    const { runner } = await createRunner();
    const { key } = await scopedKey("read");
    const res = await api("GET", "/api/runners", { key });
    expect(res.body.runners.map((r: { id: string }) => r.id)).toContain(runner.id);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", "/api/runners");
  });
});

describe("GET /api/runners/:runnerId", () => {
  it("returns the runner", async () => {
    const { runner } = await createRunner();
    const res = await api("GET", `/api/runners/${runner.id}`, {
      key: (await keys()).read,
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ runner });
  });

  it("answers 404 for an absent runner", async () => {
    const res = await api("GET", `/api/runners/${absent}`, { key: (await keys()).read });
    expectError(res, 404, "not_found");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", `/api/runners/${absent}`);
  });
});

describe("DELETE /api/runners/:runnerId", () => {
  it("removes the runner and leaves its services without one", async () => {
    const { runner } = await createRunner();
    const project = await createProject();
    const service = await createService(project.id, { runnerId: runner.id });
    const key = (await keys()).admin;

    const res = await api("DELETE", `/api/runners/${runner.id}`, { key });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expectError(await api("GET", `/api/runners/${runner.id}`, { key }), 404, "not_found");
    const after = await api("GET", `/api/services/${service.id}`, { key });
    expect(after.body.service.runnerId).toBeNull();
  });

  it("answers 404 for an absent runner", async () => {
    const res = await api("DELETE", `/api/runners/${absent}`, {
      key: (await keys()).admin,
    });
    expectError(res, 404, "not_found");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("DELETE", `/api/runners/${absent}`);
  });

  it("refuses write keys with 403", async () => {
    const { runner } = await createRunner();
    const res = await api("DELETE", `/api/runners/${runner.id}`, {
      key: (await keys()).write,
    });
    expectError(res, 403, "forbidden");
  });
});

it("documents the runner routes in openapi.json", async () => {
  const paths = await documentedPaths();
  expect(Object.keys(paths["/api/runners"])).toEqual(
    expect.arrayContaining(["get", "post"]),
  );
  expect(Object.keys(paths["/api/runners/{runnerId}"])).toEqual(
    expect.arrayContaining(["get", "delete"]),
  );
});
