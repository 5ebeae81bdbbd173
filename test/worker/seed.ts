/** Rows written straight to D1, for tests that are about something else. */
import { env } from "cloudflare:test";
import { drizzle } from "drizzle-orm/d1";
import { apiKeys, projects, runners, services } from "../../schema/tables";
import { hashSecret } from "../../worker/crypto";

const db = () => drizzle(env.DB);
let counter = 0;
const unique = (prefix: string) => `${prefix}_t${Date.now().toString(36)}${counter++}`;

export async function seedKey(
  access: "read" | "write" | "admin",
  projectIds: string[] | null = null,
): Promise<string> {
  const secret = unique("ap_secret");
  await db()
    .insert(apiKeys)
    .values({
      id: unique("key"),
      name: `${access} key`,
      secretHash: await hashSecret(secret),
      access,
      projectIds,
    });
  return secret;
}

export async function seedRunner(): Promise<{ id: string; token: string }> {
  const id = unique("run");
  const token = unique("apr_token");
  await db()
    .insert(runners)
    .values({ id, name: "test runner", tokenHash: await hashSecret(token) });
  return { id, token };
}

let nextPort = 21000;

export async function seedService(
  runnerId: string | null,
): Promise<{ projectId: string; serviceId: string }> {
  const projectId = unique("prj");
  const serviceId = unique("svc");
  await db().insert(projects).values({ id: projectId, name: "test project" });
  await db().insert(services).values({
    id: serviceId,
    projectId,
    name: "web",
    repoUrl: "git://127.0.0.1/app.git",
    branch: "main",
    rootDir: "",
    dockerfilePath: "Dockerfile",
    internalPort: 3000,
    hostPort: nextPort++,
    healthCheckPath: "/",
    runnerId,
  });
  return { projectId, serviceId };
}
