import { createExecutionContext, env, waitOnExecutionContext } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { createApp } from "../../worker/app";
import { hashSecret } from "../../worker/crypto";
import { api, documentedPaths, expectError, expectInvalid } from "./support";

// This file bootstraps the installation itself and never uses rootKey().

const bootstrap = (body: unknown) => api("POST", "/api/bootstrap", { body });

describe("POST /api/bootstrap", () => {
  it("answers 401 to a wrong token", async () => {
    expectError(await bootstrap({ token: "guess" }), 401, "unauthorized");
    expectError(
      await bootstrap({ token: `${env.BOOTSTRAP_TOKEN}x` }),
      401,
      "unauthorized",
    );
  });

  it("answers 401 to every token when no BOOTSTRAP_TOKEN secret is set", async () => {
    const unset = { ...env, BOOTSTRAP_TOKEN: undefined } as unknown as Env;
    const ctx = createExecutionContext();
    const res = await createApp().fetch(
      new Request("http://aeroplane.test/api/bootstrap", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: "anything" }),
      }),
      unset,
      ctx,
    );
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: "unauthorized" } });
  });

  it("answers 400 listing the issues of a bad body", async () => {
    expectInvalid(await bootstrap({}), "token");
    expectInvalid(await bootstrap({ token: "" }), "token");
    expectInvalid(await bootstrap({ token: env.BOOTSTRAP_TOKEN, name: "" }), "name");
    const malformed = await api("POST", "/api/bootstrap", { rawBody: "not json" });
    expectError(malformed, 400, "validation_failed");
  });

  it("mints exactly one admin key even when two requests race, then answers 409", async () => {
    const token = env.BOOTSTRAP_TOKEN;
    const racing = await Promise.all([
      bootstrap({ token, name: "first" }),
      bootstrap({ token, name: "second" }),
    ]);
    const statuses = racing.map((res) => res.status).sort();
    expect(statuses).toEqual([201, 409]);
    const won = racing.find((res) => res.status === 201)!;
    expect(won.body).toEqual({
      apiKey: {
        id: expect.stringMatching(/^key_/),
        name: expect.stringMatching(/^(first|second)$/),
        access: "admin",
        projectIds: null,
        createdAt: expect.stringMatching(/Z$/),
        lastUsedAt: null,
      },
      secret: expect.stringMatching(/^ap_[0-9a-z]{40}$/),
    });

    // The secret works as an admin key, and only its hash is stored.
    const listed = await api("GET", "/api/keys", { key: won.body.secret });
    expect(listed.status).toBe(200);
    expect(listed.body.apiKeys.map((k: { id: string }) => k.id)).toEqual([
      won.body.apiKey.id,
    ]);
    const stored = await env.DB.prepare("SELECT * FROM api_keys").all();
    expect(stored.results).toHaveLength(1);
    expect(stored.results[0].secret_hash).toBe(await hashSecret(won.body.secret));
    expect(JSON.stringify(stored.results)).not.toContain(won.body.secret);

    const again = await bootstrap({ token });
    expectError(again, 409, "conflict");
    // A wrong token still learns nothing about whether bootstrap happened.
    expectError(await bootstrap({ token: "guess" }), 401, "unauthorized");
  });
});

it("documents the bootstrap route in openapi.json as needing no API key", async () => {
  const paths = await documentedPaths();
  expect(paths["/api/bootstrap"].post).toMatchObject({ security: [] });
});
