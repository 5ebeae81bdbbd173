/**
 * `GET /api/services/:serviceId/runtime-logs/stream`: the live container's
 * output as Server-Sent Events, relayed from the service's runner.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { requireAccess } from "../auth";
import { runnerChannel, runnerIdFor } from "../deployments";
import { findService } from "../lookups";
import { authErrors, errorResponses, idParam } from "../openapi";
import { newRouter } from "../router";
import { relayUntilHangUp, SseHub } from "../sse";

export const runtimeLogRoutes = newRouter();

runtimeLogRoutes.openapi(
  createRoute({
    method: "get",
    path: "/services/{serviceId}/runtime-logs/stream",
    middleware: [requireAccess("read")] as const,
    request: {
      params: z.object({ serviceId: idParam("svc_web") }),
      query: z.object({ tail: z.coerce.number().int().min(0).max(10_000).default(200) }),
    },
    responses: {
      200: {
        description: "Server-Sent Events: snapshot, log, status, ping",
        content: { "text/event-stream": { schema: z.string() } },
      },
      ...errorResponses(400, ...authErrors, 404),
    },
  }),
  async (c) => {
    const service = await findService(c, c.req.valid("param").serviceId);
    const runnerId = await runnerIdFor(c.env, service);
    if (!runnerId) {
      const status = { ok: false, reason: "no runner is registered for this service" };
      return new SseHub(60_000).open([{ event: "status", data: status }], true);
    }
    const url = new URL("https://runner/runtime-logs");
    url.searchParams.set("serviceId", service.id);
    url.searchParams.set("tail", String(c.req.valid("query").tail));
    const res = await runnerChannel(c.env, runnerId).fetch(new Request(url));
    return relayUntilHangUp(res, c.req.raw.signal);
  },
);
