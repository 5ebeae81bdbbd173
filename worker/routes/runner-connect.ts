/**
 * `GET /api/runners/connect`: the runner's control WebSocket. The token is
 * checked here; the socket itself is handed to the runner's RunnerChannel.
 */
import { eq } from "drizzle-orm";
import { runners } from "../../schema/tables";
import { bearerToken } from "../auth";
import { hashSecret } from "../crypto";
import { runnerChannel } from "../deployments";
import { ApiError, ErrorCode } from "../errors";
import { database, newRouter } from "../router";

export const runnerConnectRoutes = newRouter();

runnerConnectRoutes.get("/runners/connect", async (c) => {
  const token = bearerToken(c.req.header("Authorization"));
  if (!token?.startsWith("apr_")) {
    throw new ApiError(401, ErrorCode.unauthorized, "Missing or malformed runner token");
  }
  const runner = await database(c.env).query.runners.findFirst({
    where: eq(runners.tokenHash, await hashSecret(token)),
  });
  if (!runner) throw new ApiError(401, ErrorCode.unauthorized, "Invalid runner token");
  if (c.req.header("Upgrade")?.toLowerCase() !== "websocket") {
    throw new ApiError(
      426,
      ErrorCode.validationFailed,
      "This endpoint speaks WebSocket only",
    );
  }

  const headers = new Headers(c.req.raw.headers);
  headers.set("X-Aeroplane-Runner-Id", runner.id);
  return runnerChannel(c.env, runner.id).fetch(new Request(c.req.raw, { headers }));
});
