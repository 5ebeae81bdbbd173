/**
 * Finding a resource on behalf of an API key. Anything outside the key's
 * projects is reported exactly like something that does not exist.
 */
import { eq } from "drizzle-orm";
import { deployments, projects, services } from "../schema/tables";
import { assertProjectVisible } from "./auth";
import { unseal } from "./crypto";
import { notFound } from "./errors";
import { database, type AppContext } from "./router";

export type ProjectRow = typeof projects.$inferSelect;
export type ServiceRow = typeof services.$inferSelect;
export type DeploymentRow = typeof deployments.$inferSelect;

export async function findProject(c: AppContext, projectId: string): Promise<ProjectRow> {
  assertProjectVisible(c.var.apiKey, projectId, "Project");
  const row = await database(c.env).query.projects.findFirst({
    where: eq(projects.id, projectId),
  });
  if (!row) throw notFound("Project");
  return row;
}

export async function findService(c: AppContext, serviceId: string): Promise<ServiceRow> {
  const row = await database(c.env).query.services.findFirst({
    where: eq(services.id, serviceId),
  });
  if (!row) throw notFound("Service");
  assertProjectVisible(c.var.apiKey, row.projectId, "Service");
  return row;
}

export async function findDeployment(
  c: AppContext,
  deploymentId: string,
): Promise<{ deployment: DeploymentRow; service: ServiceRow }> {
  const [row] = await database(c.env)
    .select({ deployment: deployments, service: services })
    .from(deployments)
    .innerJoin(services, eq(services.id, deployments.serviceId))
    .where(eq(deployments.id, deploymentId))
    .limit(1);
  if (!row) throw notFound("Deployment");
  assertProjectVisible(c.var.apiKey, row.service.projectId, "Deployment");
  return row;
}

/** The secret that seals values at rest; refuses to run without one. */
export function encryptionKey(env: Env): string {
  const key = env.ENCRYPTION_KEY;
  if (!key)
    throw new Error(
      "ENCRYPTION_KEY is not set: run `wrangler secret put ENCRYPTION_KEY`",
    );
  return key;
}

/** A service's environment variables, decrypted. */
export async function serviceEnv(
  env: Env,
  row: ServiceRow,
): Promise<Record<string, string>> {
  if (!row.envSealed) return {};
  return JSON.parse(await unseal(row.envSealed, encryptionKey(env)));
}
