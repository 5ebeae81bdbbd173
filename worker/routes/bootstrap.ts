/**
 * `POST /api/bootstrap`: trades the installation's one-time BOOTSTRAP_TOKEN
 * secret for the first admin API key. Works once per installation.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { apiKey, bootstrapBody } from "../../schema/api";
import { apiKeys, installation } from "../../schema/tables";
import { hashSecret, timingSafeEqual } from "../crypto";
import { isConstraintViolation } from "../sql";
import { ApiError, conflict, ErrorCode } from "../errors";
import { newId, newSecret } from "../ids";
import { errorResponses, jsonBody, jsonResponse } from "../openapi";
import { database, newRouter } from "../router";
import { apiKeyJson } from "../serializers";

/** The `installation` row whose presence means the first key was minted. */
const BOOTSTRAPPED = "bootstrapped";

const bootstrapRoute = createRoute({
  method: "post",
  path: "/bootstrap",
  summary: "Mint the first admin API key",
  description:
    "Exchanges the BOOTSTRAP_TOKEN secret for an admin key, once. The secret in the " +
    "response is shown only here.",
  tags: ["API keys"],
  security: [],
  request: { body: jsonBody(bootstrapBody) },
  responses: {
    201: jsonResponse(z.object({ apiKey, secret: z.string() }), "The first admin key"),
    ...errorResponses(400, 401, 409),
  },
});

export const bootstrapRoutes = newRouter().openapi(bootstrapRoute, async (c) => {
  const { token, name } = c.req.valid("json");
  const expected = (c.env as { BOOTSTRAP_TOKEN?: string }).BOOTSTRAP_TOKEN;
  // Without a configured secret nothing can match. Comparing hashes keeps
  // even the token's length from showing in the timing.
  const matches =
    !!expected && timingSafeEqual(await hashSecret(token), await hashSecret(expected));
  if (!matches) {
    throw new ApiError(401, ErrorCode.unauthorized, "Invalid bootstrap token");
  }

  const secret = newSecret("ap");
  const db = database(c.env);
  const key = {
    id: newId("key"),
    name: name ?? "Bootstrap admin",
    secretHash: await hashSecret(secret),
    access: "admin" as const,
    projectIds: null,
  };
  try {
    // One batch is one transaction: the marker's primary key lets exactly one
    // of any number of racing requests through, and its key with it.
    const [, [row]] = await db.batch([
      db.insert(installation).values({ key: BOOTSTRAPPED, value: key.id }),
      db.insert(apiKeys).values(key).returning(),
    ]);
    return c.json({ apiKey: apiKeyJson(row), secret }, 201);
  } catch (error) {
    if (isConstraintViolation(error, "UNIQUE", "installation.key")) {
      throw conflict("This installation is already bootstrapped; ask an admin for a key");
    }
    throw error;
  }
});
