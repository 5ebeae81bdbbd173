/**
 * Helpers for tests that drive the API over HTTP, the way a client would.
 *
 * D1 state is isolated per test file but shared by the tests within one, so
 * helpers create fresh resources with unique names instead of assuming an
 * empty database, and the admin key is bootstrapped once per file.
 */
import { env, SELF } from "cloudflare:test";
import { expect } from "vitest";

export type Access = "read" | "write" | "admin";

export type ApiResponse = { status: number; body: any; headers: Headers };

type RequestOptions = {
  key?: string;
  /** Sent as JSON. */
  body?: unknown;
  /** Sent as is, with a JSON content type, for malformed bodies. */
  rawBody?: string;
};

/** One API request; the body is parsed as JSON when there is one. */
export async function api(
  method: string,
  path: string,
  { key, body, rawBody }: RequestOptions = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = {};
  if (key) headers.Authorization = `Bearer ${key}`;
  const payload = rawBody ?? (body === undefined ? undefined : JSON.stringify(body));
  if (payload !== undefined) headers["Content-Type"] = "application/json";

  const res = await SELF.fetch(`http://aeroplane.test${path}`, {
    method,
    headers,
    body: payload,
  });
  const text = await res.text();
  return {
    status: res.status,
    body: text ? JSON.parse(text) : null,
    headers: res.headers,
  };
}

let rootKeyPromise: Promise<string> | undefined;

/**
 * The file's first admin key, minted through `POST /api/bootstrap` on first
 * use. Files that test bootstrap itself must not call this.
 */
export function rootKey(): Promise<string> {
  rootKeyPromise ??= api("POST", "/api/bootstrap", {
    body: { token: env.BOOTSTRAP_TOKEN, name: "test root" },
  }).then((res) => {
    if (res.status !== 201)
      throw new Error(`bootstrap failed: ${JSON.stringify(res.body)}`);
    return res.body.secret as string;
  });
  return rootKeyPromise;
}

let sequence = 0;

/** A name no other resource in this file has. */
export const uniqueName = (prefix: string) => `${prefix}-${++sequence}`;

/** Mints a key through the API; `projectIds` null means every project. */
export async function mintKey(access: Access, projectIds: string[] | null = null) {
  const res = await api("POST", "/api/keys", {
    key: await rootKey(),
    body: { name: uniqueName(`${access} key`), access, projectIds },
  });
  expect(res.status).toBe(201);
  return res.body.secret as string;
}

/** One key of each level for every project, made once per file. */
let keysPromise: Promise<Record<Access, string>> | undefined;
export function keys(): Promise<Record<Access, string>> {
  keysPromise ??= (async () => ({
    read: await mintKey("read"),
    write: await mintKey("write"),
    admin: await mintKey("admin"),
  }))();
  return keysPromise;
}

/** A key of the given level scoped to a project of its own, and that project's id. */
export async function scopedKey(access: Access) {
  const project = await createProject();
  return { key: await mintKey(access, [project.id]), projectId: project.id as string };
}

export async function createProject(name = uniqueName("project")) {
  const res = await api("POST", "/api/projects", {
    key: await rootKey(),
    body: { name },
  });
  expect(res.status).toBe(201);
  return res.body.project;
}

/** The smallest valid service body, with `overrides` on top. */
export const serviceBody = (overrides: Record<string, unknown> = {}) => ({
  name: uniqueName("web"),
  repoUrl: "https://git.example.com/acme/web.git",
  internalPort: 3000,
  ...overrides,
});

export async function createService(
  projectId: string,
  overrides: Record<string, unknown> = {},
) {
  const res = await api("POST", `/api/projects/${projectId}/services`, {
    key: await rootKey(),
    body: serviceBody(overrides),
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.service;
}

export async function createRunner(overrides: Record<string, unknown> = {}) {
  const res = await api("POST", "/api/runners", {
    key: await rootKey(),
    body: { name: uniqueName("runner"), ...overrides },
  });
  expect(res.status).toBe(201);
  return res.body as { runner: any; token: string };
}

/** Asserts the error envelope's status and code. */
export function expectError(res: ApiResponse, status: number, code: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error.code).toBe(code);
  expect(typeof res.body.error.message).toBe("string");
}

/** Asserts a 400 whose issues name `field` (a dotted path such as `env.1X`). */
export function expectInvalid(res: ApiResponse, field: string) {
  expectError(res, 400, "validation_failed");
  const paths = (res.body.error.issues ?? []).map(
    (issue: { path: string }) => issue.path,
  );
  expect(paths).toContain(field);
}

/** A well-formed API key that was never issued. */
export const unknownKey = `ap_${"0".repeat(40)}`;

/** Asserts that a route answers 401 without a key and with one never issued. */
export async function expectAuthRequired(method: string, path: string, body?: unknown) {
  expectError(await api(method, path, { body }), 401, "unauthorized");
  expectError(await api(method, path, { body, key: unknownKey }), 401, "unauthorized");
}

/** The paths `GET /api/openapi.json` documents, with their methods. */
export async function documentedPaths(): Promise<
  Record<string, Record<string, unknown>>
> {
  const res = await api("GET", "/api/openapi.json");
  expect(res.status).toBe(200);
  return res.body.paths;
}
