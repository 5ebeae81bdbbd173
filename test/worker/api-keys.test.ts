import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { hashSecret } from "../../worker/crypto";
import {
  api,
  createProject,
  documentedPaths,
  expectAuthRequired,
  expectError,
  expectInvalid,
  keys,
  mintKey,
  rootKey,
  scopedKey,
} from "./support";

const keyIds = (res: { body: { apiKeys: { id: string }[] } }) =>
  res.body.apiKeys.map((k) => k.id);

/** The id of the key behind `secret`, read from the database. */
async function idOf(secret: string): Promise<string> {
  const row = await env.DB.prepare("SELECT id FROM api_keys WHERE secret_hash = ?")
    .bind(await hashSecret(secret))
    .first<{ id: string }>();
  return row!.id;
}

describe("POST /api/keys", () => {
  it("creates a key whose secret is shown once and carries the chosen access", async () => {
    const project = await createProject();
    const res = await api("POST", "/api/keys", {
      key: (await keys()).admin,
      body: { name: "CI", access: "read", projectIds: [project.id] },
    });
    expect(res.status).toBe(201);
    expect(res.body).toEqual({
      apiKey: {
        id: expect.stringMatching(/^key_/),
        name: "CI",
        access: "read",
        projectIds: [project.id],
        createdAt: expect.stringMatching(/^\d{4}-.*\.\d{3}Z$/),
        lastUsedAt: null,
      },
      secret: expect.stringMatching(/^ap_[0-9a-z]{40}$/),
    });

    const { secret } = res.body;
    const seen = await api("GET", `/api/projects/${project.id}`, { key: secret });
    expect(seen.status).toBe(200);
    const write = await api("PATCH", `/api/projects/${project.id}`, {
      key: secret,
      body: { name: "nope" },
    });
    expectError(write, 403, "forbidden");
  });

  it("answers 400 listing the issues of a bad body", async () => {
    const key = (await keys()).admin;
    const post = (body: unknown) => api("POST", "/api/keys", { key, body });
    expectInvalid(await post({ access: "read" }), "name");
    expectInvalid(await post({ name: "x", access: "owner" }), "access");
    expectInvalid(
      await post({ name: "x", access: "read", projectIds: [] }),
      "projectIds",
    );
    expectError(
      await api("POST", "/api/keys", { key, rawBody: '{"name": "x",' }),
      400,
      "validation_failed",
    );
  });

  it("answers 400 naming a project id that does not exist", async () => {
    const project = await createProject();
    const res = await api("POST", "/api/keys", {
      key: (await keys()).admin,
      body: { name: "x", access: "read", projectIds: [project.id, "prj_nothere"] },
    });
    expectInvalid(res, "projectIds.1");
  });

  it("needs an API key", async () => {
    await expectAuthRequired("POST", "/api/keys", { name: "x", access: "read" });
  });

  it("refuses write keys with 403", async () => {
    const res = await api("POST", "/api/keys", {
      key: (await keys()).write,
      body: { name: "x", access: "read" },
    });
    expectError(res, 403, "forbidden");
  });

  it("lets a project-scoped admin mint keys only within its own projects", async () => {
    const other = await createProject();
    const { key, projectId } = await scopedKey("admin");
    const post = (projectIds: string[] | null) =>
      api("POST", "/api/keys", { key, body: { name: "x", access: "admin", projectIds } });

    expect((await post([projectId])).status).toBe(201);
    expectError(await post(null), 403, "forbidden");
    expectError(await post([other.id]), 403, "forbidden");
    expectError(await post([projectId, other.id]), 403, "forbidden");
  });
});

describe("GET /api/keys", () => {
  it("lists keys oldest first, without secrets or hashes", async () => {
    const secret = await mintKey("read");
    const res = await api("GET", "/api/keys", { key: (await keys()).admin });
    expect(res.status).toBe(200);
    const ids = keyIds(res);
    expect(ids).toContain(await idOf(secret));
    expect(ids).toContain(await idOf(await rootKey()));
    expect(ids.indexOf(await idOf(await rootKey()))).toBe(0);
    for (const listed of res.body.apiKeys) {
      expect(Object.keys(listed).sort()).toEqual(
        ["access", "createdAt", "id", "lastUsedAt", "name", "projectIds"].sort(),
      );
    }
    expect(JSON.stringify(res.body)).not.toContain(secret);
  });

  it("shows a project-scoped admin only the keys within its projects", async () => {
    const { key, projectId } = await scopedKey("admin");
    const sameScope = await mintKey("read", [projectId]);
    const everywhere = await mintKey("read");
    const res = await api("GET", "/api/keys", { key });
    expect(res.status).toBe(200);
    const ids = keyIds(res);
    expect(ids).toEqual([await idOf(key), await idOf(sameScope)]);
    expect(ids).not.toContain(await idOf(everywhere));
  });

  it("needs an API key", async () => {
    await expectAuthRequired("GET", "/api/keys");
  });

  it("refuses write keys with 403", async () => {
    expectError(
      await api("GET", "/api/keys", { key: (await keys()).write }),
      403,
      "forbidden",
    );
  });
});

describe("DELETE /api/keys/:keyId", () => {
  it("revokes a key, which stops working at once", async () => {
    const secret = await mintKey("read");
    expect((await api("GET", "/api/projects", { key: secret })).status).toBe(200);

    const res = await api("DELETE", `/api/keys/${await idOf(secret)}`, {
      key: (await keys()).admin,
    });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expectError(await api("GET", "/api/projects", { key: secret }), 401, "unauthorized");
  });

  it("answers 404 for an unknown key", async () => {
    const res = await api("DELETE", "/api/keys/key_doesnotexist000", {
      key: (await keys()).admin,
    });
    expectError(res, 404, "not_found");
  });

  it("answers 404 to a project-scoped admin for keys outside its projects", async () => {
    const { key } = await scopedKey("admin");
    const everywhere = await mintKey("read");
    const res = await api("DELETE", `/api/keys/${await idOf(everywhere)}`, { key });
    expectError(res, 404, "not_found");
    expect((await api("GET", "/api/projects", { key: everywhere })).status).toBe(200);
  });

  it("needs an API key", async () => {
    await expectAuthRequired("DELETE", "/api/keys/key_doesnotexist000");
  });

  it("refuses write keys with 403", async () => {
    const secret = await mintKey("read");
    const res = await api("DELETE", `/api/keys/${await idOf(secret)}`, {
      key: (await keys()).write,
    });
    expectError(res, 403, "forbidden");
  });
});

it("documents the API key routes in openapi.json", async () => {
  const paths = await documentedPaths();
  expect(Object.keys(paths["/api/keys"])).toEqual(
    expect.arrayContaining(["get", "post"]),
  );
  expect(Object.keys(paths["/api/keys/{keyId}"])).toEqual(["delete"]);
});
