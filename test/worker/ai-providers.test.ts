import { env } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { unseal } from "../../worker/crypto";
import {
  api,
  documentedPaths,
  expectAuthRequired,
  expectError,
  expectInvalid,
  keys,
  scopedKey,
} from "./support";

const providerShape = (id: string, baseURL: string, defaultModel: string) => ({
  id,
  baseURL,
  defaultModel,
  hasApiKey: true,
  createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
  updatedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
});

async function put(id: string, body: unknown) {
  return api("PUT", `/api/ai/providers/${id}`, { key: (await keys()).admin, body });
}

describe("PUT /api/ai/providers/:providerId", () => {
  it("presets OpenAI's base URL for `openai` and never echoes the key", async () => {
    const res = await put("openai", {
      apiKey: "sk-test-openai-0123456789",
      defaultModel: "gpt-5-mini",
    });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      provider: providerShape("openai", "https://api.openai.com/v1", "gpt-5-mini"),
    });
    expect(JSON.stringify(res.body)).not.toContain("sk-test-openai");
  });

  it("takes any OpenAI-compatible endpoint by base URL, http or https", async () => {
    const ollama = await put("ollama", {
      baseURL: "http://127.0.0.1:11434/v1/",
      apiKey: "ollama",
      defaultModel: "llama3.2",
    });
    expect(ollama.status).toBe(200);
    // A trailing slash would double up in front of /chat/completions.
    expect(ollama.body.provider).toEqual(
      providerShape("ollama", "http://127.0.0.1:11434/v1", "llama3.2"),
    );

    const workersAi = await put("workers-ai", {
      baseURL: "https://api.cloudflare.com/client/v4/accounts/abc/ai/v1",
      apiKey: "cf-token-0123456789",
      defaultModel: "@cf/meta/llama-3.1-8b-instruct",
    });
    expect(workersAi.status).toBe(200);
  });

  it("seals the key at rest", async () => {
    await put("groq", {
      baseURL: "https://api.groq.com/openai/v1",
      apiKey: "gsk_sealed_key_0123456789",
      defaultModel: "llama-3.3-70b-versatile",
    });
    const row = await env.DB.prepare(
      "SELECT * FROM ai_providers WHERE id = 'groq'",
    ).first();
    expect(JSON.stringify(row)).not.toContain("gsk_sealed_key");
    expect(await unseal(row!.api_key_sealed as string, env.ENCRYPTION_KEY)).toBe(
      "gsk_sealed_key_0123456789",
    );
  });

  it("replaces a provider: the new key and model, the same creation time", async () => {
    const first = await put("openrouter", {
      baseURL: "https://openrouter.ai/api/v1",
      apiKey: "sk-or-first-0123456789",
      defaultModel: "openai/gpt-4o-mini",
    });
    const second = await put("openrouter", {
      baseURL: "https://openrouter.ai/api/v1",
      apiKey: "sk-or-second-0123456789",
      defaultModel: "anthropic/claude-3.5-haiku",
    });
    expect(second.status).toBe(200);
    expect(second.body.provider.defaultModel).toBe("anthropic/claude-3.5-haiku");
    expect(second.body.provider.createdAt).toBe(first.body.provider.createdAt);
    const row = await env.DB.prepare(
      "SELECT api_key_sealed FROM ai_providers WHERE id = 'openrouter'",
    ).first<{ api_key_sealed: string }>();
    expect(await unseal(row!.api_key_sealed, env.ENCRYPTION_KEY)).toBe(
      "sk-or-second-0123456789",
    );
  });

  it("requires a base URL for every provider but openai", async () => {
    expectInvalid(await put("groq2", { apiKey: "k", defaultModel: "m" }), "baseURL");
  });

  it("refuses to configure the reserved `builtin`", async () => {
    const res = await put("builtin", {
      baseURL: "https://x.test/v1",
      apiKey: "k",
      defaultModel: "m",
    });
    expectInvalid(res, "providerId");
  });

  it("validates the base URL, the key, the model and the id", async () => {
    const valid = { baseURL: "https://x.test/v1", apiKey: "k", defaultModel: "m" };
    expectInvalid(await put("x", { ...valid, baseURL: "ftp://x.test/v1" }), "baseURL");
    expectInvalid(await put("x", { ...valid, baseURL: "not a url" }), "baseURL");
    expectInvalid(
      await put("x", { ...valid, baseURL: "https://u:p@x.test/v1" }),
      "baseURL",
    );
    expectInvalid(await put("x", { ...valid, apiKey: "" }), "apiKey");
    expectInvalid(
      await put("x", { baseURL: valid.baseURL, defaultModel: "m" }),
      "apiKey",
    );
    expectInvalid(await put("x", { ...valid, defaultModel: " " }), "defaultModel");
    expectInvalid(await put("x", { ...valid, extra: true }), "");
    expectInvalid(await put("Not_Valid!", valid), "providerId");
    expectError(
      await api("PUT", "/api/ai/providers/x", {
        key: (await keys()).admin,
        rawBody: "{",
      }),
      400,
      "validation_failed",
    );
  });
});

describe("GET /api/ai/providers", () => {
  it("lists providers oldest first with no key in sight", async () => {
    await put("list-a", {
      baseURL: "https://a.test/v1",
      apiKey: "sk-list-a-0123456789",
      defaultModel: "a",
    });
    await put("list-b", {
      baseURL: "https://b.test/v1",
      apiKey: "sk-list-b-0123456789",
      defaultModel: "b",
    });
    const res = await api("GET", "/api/ai/providers", { key: (await keys()).admin });
    expect(res.status).toBe(200);
    const ids = res.body.providers.map((p: { id: string }) => p.id);
    expect(ids.indexOf("list-a")).toBeLessThan(ids.indexOf("list-b"));
    expect(res.body.providers.find((p: { id: string }) => p.id === "list-b")).toEqual(
      providerShape("list-b", "https://b.test/v1", "b"),
    );
    const text = JSON.stringify(res.body);
    expect(text).not.toContain("sk-list");
    expect(text).not.toMatch(/"apiKey"|sealed/i);
  });

  it("shows one provider, and 404 for one never configured", async () => {
    await put("one", {
      baseURL: "https://one.test/v1",
      apiKey: "sk-one-0123456789",
      defaultModel: "m1",
    });
    const admin = (await keys()).admin;
    const res = await api("GET", "/api/ai/providers/one", { key: admin });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({
      provider: providerShape("one", "https://one.test/v1", "m1"),
    });
    expectError(
      await api("GET", "/api/ai/providers/never", { key: admin }),
      404,
      "not_found",
    );
  });
});

describe("DELETE /api/ai/providers/:providerId", () => {
  it("removes a provider; a second delete is a 404", async () => {
    await put("doomed", {
      baseURL: "https://d.test/v1",
      apiKey: "k-doomed",
      defaultModel: "m",
    });
    const admin = (await keys()).admin;
    const res = await api("DELETE", "/api/ai/providers/doomed", { key: admin });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expectError(
      await api("GET", "/api/ai/providers/doomed", { key: admin }),
      404,
      "not_found",
    );
    expectError(
      await api("DELETE", "/api/ai/providers/doomed", { key: admin }),
      404,
      "not_found",
    );
  });
});

describe("who may manage AI providers", () => {
  const body = { baseURL: "https://p.test/v1", apiKey: "k", defaultModel: "m" };

  it("answers 401 without a key or with one never issued", async () => {
    await expectAuthRequired("PUT", "/api/ai/providers/p", body);
    await expectAuthRequired("GET", "/api/ai/providers");
    await expectAuthRequired("GET", "/api/ai/providers/p");
    await expectAuthRequired("DELETE", "/api/ai/providers/p");
  });

  it("answers 403 to read and write keys", async () => {
    const { read, write } = await keys();
    for (const key of [read, write]) {
      expectError(
        await api("PUT", "/api/ai/providers/p", { key, body }),
        403,
        "forbidden",
      );
      expectError(await api("GET", "/api/ai/providers", { key }), 403, "forbidden");
      expectError(await api("GET", "/api/ai/providers/p", { key }), 403, "forbidden");
      expectError(await api("DELETE", "/api/ai/providers/p", { key }), 403, "forbidden");
    }
  });

  it("lets a project-scoped admin look, but not change what every project shares", async () => {
    await put("shared", body);
    const { key } = await scopedKey("admin");
    expect((await api("GET", "/api/ai/providers/shared", { key })).status).toBe(200);
    expectError(
      await api("PUT", "/api/ai/providers/shared", { key, body }),
      403,
      "forbidden",
    );
    expectError(
      await api("DELETE", "/api/ai/providers/shared", { key }),
      403,
      "forbidden",
    );
  });

  it("documents the routes", async () => {
    const paths = await documentedPaths();
    expect(Object.keys(paths["/api/ai/providers"])).toEqual(["get"]);
    expect(Object.keys(paths["/api/ai/providers/{providerId}"]).sort()).toEqual([
      "delete",
      "get",
      "put",
    ]);
  });
});
