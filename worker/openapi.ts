/**
 * Small builders for `createRoute` declarations, so every route documents its
 * bodies and its error envelopes the same way in `GET /api/openapi.json`.
 */
import { z } from "@hono/zod-openapi";
import { errorBody } from "../schema/api";

const errorDescriptions = {
  400: "The request failed validation; `error.issues` lists every problem",
  401: "No API key, or one that does not exist",
  403: "The API key lacks the access level this route needs",
  404: "Absent, or outside the API key's projects",
  409: "The resource's current state does not allow this",
} as const;

type ErrorStatus = keyof typeof errorDescriptions;
type JsonContent<T extends z.ZodType> = { "application/json": { schema: T } };

/** A JSON request body; always required, so a body-less request is validated too. */
export function jsonBody<T extends z.ZodType>(schema: T) {
  return { required: true, content: { "application/json": { schema } } };
}

/** A JSON response with a description. */
export function jsonResponse<T extends z.ZodType>(schema: T, description: string) {
  return { description, content: { "application/json": { schema } } };
}

/** The error envelope under each of the given statuses. */
export function errorResponses<S extends ErrorStatus>(
  ...statuses: S[]
): { [K in S]: { description: string; content: JsonContent<typeof errorBody> } } {
  const entries = statuses.map((status) => [
    status,
    jsonResponse(errorBody, errorDescriptions[status]),
  ]);
  return Object.fromEntries(entries);
}

/** The errors every route guarded by `requireAccess` can answer with. */
export const authErrors = [401, 403] as const;

/** A path parameter holding a prefixed resource id. */
export const idParam = (example: string) =>
  z.string().min(1).max(100).openapi({ example });
