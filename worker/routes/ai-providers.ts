/**
 * AI providers: OpenAI-compatible endpoints that explain failed deployments.
 * Admins configure them; their keys are sealed at rest and never shown.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { aiProvider, providerId, putAiProviderBody } from "../../schema/api";
import { assertUnscoped, requireAccess } from "../auth";
import { notFound } from "../errors";
import {
  deleteProvider,
  getProvider,
  listProviders,
  providerJson,
  putProvider,
} from "../explain/providers";
import { authErrors, errorResponses, jsonBody, jsonResponse } from "../openapi";
import { newRouter } from "../router";

const providerParams = z.object({ providerId });
const tags = ["AI providers"];

const putProviderRoute = createRoute({
  method: "put",
  path: "/ai/providers/{providerId}",
  summary: "Create or replace an AI provider",
  description:
    "Any OpenAI-compatible endpoint, by its base URL; `openai` defaults to OpenAI's own. " +
    "The key is sealed at rest and never shown again.",
  tags,
  middleware: [requireAccess("admin")] as const,
  request: { params: providerParams, body: jsonBody(putAiProviderBody) },
  responses: {
    200: jsonResponse(
      z.object({ provider: aiProvider }),
      "The provider, without its key",
    ),
    ...errorResponses(400, ...authErrors),
  },
});

const listProvidersRoute = createRoute({
  method: "get",
  path: "/ai/providers",
  summary: "List AI providers",
  description: "The first one is the default for explanations.",
  tags,
  middleware: [requireAccess("admin")] as const,
  responses: {
    200: jsonResponse(z.object({ providers: z.array(aiProvider) }), "Oldest first"),
    ...errorResponses(...authErrors),
  },
});

const getProviderRoute = createRoute({
  method: "get",
  path: "/ai/providers/{providerId}",
  summary: "Get an AI provider",
  tags,
  middleware: [requireAccess("admin")] as const,
  request: { params: providerParams },
  responses: {
    200: jsonResponse(
      z.object({ provider: aiProvider }),
      "The provider, without its key",
    ),
    ...errorResponses(400, ...authErrors, 404),
  },
});

const deleteProviderRoute = createRoute({
  method: "delete",
  path: "/ai/providers/{providerId}",
  summary: "Remove an AI provider",
  description: "Its cached explanations go with it.",
  tags,
  middleware: [requireAccess("admin")] as const,
  request: { params: providerParams },
  responses: {
    204: { description: "Removed" },
    ...errorResponses(400, ...authErrors, 404),
  },
});

export const aiProviderRoutes = newRouter()
  .openapi(putProviderRoute, async (c) => {
    assertUnscoped(c.var.apiKey, "AI providers");
    const row = await putProvider(
      c.env,
      c.req.valid("param").providerId,
      c.req.valid("json"),
    );
    return c.json({ provider: providerJson(row) }, 200);
  })

  .openapi(listProvidersRoute, async (c) => {
    const rows = await listProviders(c.env);
    return c.json({ providers: rows.map(providerJson) }, 200);
  })

  .openapi(getProviderRoute, async (c) => {
    const row = await getProvider(c.env, c.req.valid("param").providerId);
    if (!row) throw notFound("AI provider");
    return c.json({ provider: providerJson(row) }, 200);
  })

  .openapi(deleteProviderRoute, async (c) => {
    assertUnscoped(c.var.apiKey, "AI providers");
    if (!(await deleteProvider(c.env, c.req.valid("param").providerId))) {
      throw notFound("AI provider");
    }
    return c.body(null, 204);
  });
