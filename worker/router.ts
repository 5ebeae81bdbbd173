/**
 * The typed Hono app every resource module builds on. Each module makes its
 * own router with {@link newRouter}; `app.ts` mounts them under `/api`.
 */
import { OpenAPIHono, type Hook } from "@hono/zod-openapi";
import { drizzle } from "drizzle-orm/d1";
import type { Context } from "hono";
import * as tables from "../schema/tables";
import { ApiError, ErrorCode, errorResponse } from "./errors";
import type { AuthenticatedKey } from "./auth";

export type AppEnv = {
  Bindings: Env;
  Variables: { apiKey: AuthenticatedKey };
};

export type AppContext = Context<AppEnv>;

/** A 400 that lists every zod issue, for any request part that fails. */
const validationHook: Hook<unknown, AppEnv, string, unknown> = (result, c) => {
  if (result.success) return;
  const issues = result.error.issues.map((issue) => ({
    path: issue.path.join("."),
    code: issue.code,
    message: issue.message,
  }));
  const summary = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message));
  return errorResponse(
    c,
    new ApiError(
      400,
      ErrorCode.validationFailed,
      `Invalid request: ${summary.join("; ")}`,
      issues,
    ),
  );
};

export function newRouter() {
  return new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
}

/** The drizzle client for this request's D1 binding. */
export function database(env: Env) {
  return drizzle(env.DB, { schema: tables });
}
export type Database = ReturnType<typeof database>;

/** Reads a positive integer setting from the environment, with a default. */
export function numberSetting(env: Env, name: keyof Env, fallback: number): number {
  const value = Number((env as unknown as Record<string, unknown>)[name]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}
