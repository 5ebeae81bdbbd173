/**
 * The one error type handlers throw, and the one handler that turns every
 * error into the `{"error": {...}}` envelope.
 */
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";

export const ErrorCode = {
  validationFailed: "validation_failed",
  unauthorized: "unauthorized",
  forbidden: "forbidden",
  notFound: "not_found",
  conflict: "conflict",
  rateLimited: "rate_limited",
  upstreamFailed: "upstream_failed",
  internal: "internal_error",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** A failure the client can act on: it carries its status and code. */
export class ApiError extends Error {
  constructor(
    readonly status: ContentfulStatusCode,
    readonly code: ErrorCode,
    message: string,
    readonly issues?: unknown[],
  ) {
    super(message);
    this.name = "ApiError";
  }
}

export const notFound = (what: string) =>
  new ApiError(404, ErrorCode.notFound, `${what} not found`);

export const conflict = (message: string) =>
  new ApiError(409, ErrorCode.conflict, message);

export function errorResponse(c: Context, error: ApiError) {
  const body = {
    error: {
      code: error.code,
      message: error.message,
      ...(error.issues ? { issues: error.issues } : {}),
    },
  };
  return c.json(body, error.status);
}

/**
 * Client mistakes are answered as they are; anything else is logged in full
 * and answered with a generic 500 that reveals nothing of the internals.
 */
export function handleError(error: Error, c: Context) {
  if (error instanceof ApiError) return errorResponse(c, error);
  if (error instanceof HTTPException && error.status < 500) {
    // Hono's own validators throw these, e.g. for a body that is not JSON.
    const code =
      error.status === 401 ? ErrorCode.unauthorized : ErrorCode.validationFailed;
    return errorResponse(c, new ApiError(error.status, code, error.message));
  }
  console.error(`Worker:${c.req.method} ${c.req.path}`, error);
  return errorResponse(c, new ApiError(500, ErrorCode.internal, "Internal error"));
}
