/** The Worker's entry: the HTTP app and the Durable Object classes. */
import { createApp } from "./app";

export { DeploymentLog } from "./objects/deployment-log";
export { RunnerChannel } from "./objects/runner-channel";

const app = createApp();

/**
 * A client that says `Content-Type: application/json` but sends no body
 * (many HTTP libraries do) means "no body", not malformed JSON: routes whose
 * body is optional then take their defaults, and the others still answer 400.
 */
function withoutEmptyJsonBody(request: Request): Request {
  const empty = request.body === null || request.headers.get("Content-Length") === "0";
  if (!empty || !request.headers.get("Content-Type")?.includes("json")) return request;
  const headers = new Headers(request.headers);
  headers.delete("Content-Type");
  return new Request(request, { headers });
}

export default {
  fetch: (request, env, ctx) => app.fetch(withoutEmptyJsonBody(request), env, ctx),
} satisfies ExportedHandler<Env>;
