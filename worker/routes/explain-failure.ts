/**
 * `POST /api/deployments/:deploymentId/explain-failure`: why a deployment
 * failed and what to do about it, from an AI provider or from the built-in
 * rules.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { errorBody, explainFailureBody, failureExplanation } from "../../schema/api";
import { requireAccess } from "../auth";
import { explainFailure } from "../explain/explain";
import { findDeployment } from "../lookups";
import { authErrors, errorResponses, idParam, jsonResponse } from "../openapi";
import { newRouter } from "../router";

const explainRoute = createRoute({
  method: "post",
  path: "/deployments/{deploymentId}/explain-failure",
  summary: "Explain a failed deployment",
  description:
    "Uses `providerId` (default: the first configured AI provider, else `builtin`, which " +
    "needs no AI) and `model` (default: the provider's). Service environment values and " +
    "tokens are redacted from what is sent. Answers are cached per provider and model.",
  tags: ["Deployments"],
  middleware: [requireAccess("write")] as const,
  request: {
    params: z.object({ deploymentId: idParam("dep_123") }),
    // Optional, so that a bare POST asks the default provider.
    body: {
      required: false,
      content: { "application/json": { schema: explainFailureBody } },
    },
  },
  responses: {
    200: jsonResponse(z.object({ explanation: failureExplanation }), "The explanation"),
    ...errorResponses(400, ...authErrors, 404, 409),
    502: jsonResponse(
      errorBody,
      "The AI provider failed, timed out, or answered nonsense",
    ),
  },
});

export const explainFailureRoutes = newRouter().openapi(explainRoute, async (c) => {
  const found = await findDeployment(c, c.req.valid("param").deploymentId);
  const explanation = await explainFailure(c.env, found, c.req.valid("json") ?? {});
  // Every path, the built-in rules included, answers the published shape.
  return c.json({ explanation: failureExplanation.parse(explanation) }, 200);
});
