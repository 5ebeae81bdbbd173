/** Wires the resource routers into one app. Nothing else lives here. */
import { errorResponse, handleError, notFound } from "./errors";
import { newRouter } from "./router";
import { aiProviderRoutes } from "./routes/ai-providers";
import { bootstrapRoutes } from "./routes/bootstrap";
import { apiKeyRoutes } from "./routes/api-keys";
import { deploymentRoutes } from "./routes/deployments";
import { explainFailureRoutes } from "./routes/explain-failure";
import { projectRoutes } from "./routes/projects";
import { runnerConnectRoutes } from "./routes/runner-connect";
import { runnerRoutes } from "./routes/runners";
import { runtimeLogRoutes } from "./routes/runtime-logs";
import { serviceRoutes } from "./routes/services";

export function createApp() {
  const app = newRouter();
  app.onError(handleError);
  app.notFound((c) => errorResponse(c, notFound("Route")));

  app.get("/", (c) => c.json({ name: "aeroplane", openapi: "/api/openapi.json" }));
  app.get("/healthz", (c) => c.json({ ok: true }));

  app.route("/api", bootstrapRoutes);
  app.route("/api", apiKeyRoutes);
  app.route("/api", projectRoutes);
  app.route("/api", serviceRoutes);
  app.route("/api", deploymentRoutes);
  app.route("/api", runtimeLogRoutes);
  app.route("/api", explainFailureRoutes);
  // Before runnerRoutes, whose /runners/{runnerId} would also match "connect".
  app.route("/api", runnerConnectRoutes);
  app.route("/api", runnerRoutes);
  app.route("/api", aiProviderRoutes);

  app.openAPIRegistry.registerComponent("securitySchemes", "apiKey", {
    type: "http",
    scheme: "bearer",
    description: "An `ap_…` API key",
  });
  app.doc31("/api/openapi.json", {
    openapi: "3.1.0",
    info: { title: "Aeroplane API", version: "1.0.0" },
    security: [{ apiKey: [] }],
  });
  return app;
}
