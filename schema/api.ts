/**
 * Request and response bodies of the HTTP API. These zod schemas validate
 * requests and generate `GET /api/openapi.json`; response shapes here are the
 * published contract.
 */
import { z } from "@hono/zod-openapi";
import { deploymentStatuses, deploymentTriggers } from "./tables";

export const errorBody = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      issues: z.array(z.unknown()).optional(),
    }),
  })
  .openapi("Error");

const name = z.string().trim().min(1).max(100);
const port = z.number().int().min(1).max(65535);
/** A path inside the repository: relative, with no `..` segment. */
const repoPath = z
  .string()
  .max(500)
  .refine((p) => !p.startsWith("/") && !p.split("/").includes(".."), {
    message: "must be a relative path inside the repository",
  });
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "not a valid variable name");

// ── Projects ────────────────────────────────────────────────────────────────

export const project = z
  .object({
    id: z.string(),
    name: z.string(),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Project");
export const createProjectBody = z.object({ name }).strict();
export const updateProjectBody = z.object({ name }).strict();

// ── Services ────────────────────────────────────────────────────────────────

export const service = z
  .object({
    id: z.string(),
    projectId: z.string(),
    name: z.string(),
    repoUrl: z.string(),
    branch: z.string(),
    rootDir: z.string(),
    dockerfilePath: z.string(),
    internalPort: z.number(),
    hostPort: z.number(),
    healthCheckPath: z.string(),
    runnerId: z.string().nullable(),
    /** Values are shown to admin keys only; others see the names. */
    env: z.record(z.string(), z.string()),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("Service");

const serviceFields = {
  name,
  repoUrl: z
    .string()
    .min(1)
    .max(2000)
    .refine((u) => /^(https?|git|ssh|file):\/\//.test(u) || /^[\w.-]+@[\w.-]+:/.test(u), {
      // file:// is refused by runners unless started with --allow-file-repos.
      message: "must be an http(s), git, ssh or file repository URL",
    })
    // A host (or user) starting with "-" would read as an option to ssh.
    .refine((u) => !/^(\w+:\/\/)?([^/@]*@)?-/.test(u), {
      message: "the host must not start with '-'",
    })
    .refine((u) => !/[\s\x00-\x1f]/.test(u), { message: "must not contain spaces" }),
  branch: z
    .string()
    .min(1)
    .max(255)
    .regex(/^[^\s~^:?*[\\\x00-\x1f]+$/, "not a valid branch name")
    .refine((b) => !b.startsWith("-"), { message: "must not start with '-'" }),
  rootDir: repoPath,
  dockerfilePath: repoPath.refine((p) => p.length > 0, { message: "must not be empty" }),
  internalPort: port,
  hostPort: port,
  healthCheckPath: z
    .string()
    .max(500)
    .regex(
      /^\/[^\s\x00-\x1f]*$/,
      "must start with / and hold no spaces or control characters",
    ),
  runnerId: z.string().nullable(),
  env: z
    .record(envName, z.string().max(32_768))
    .refine((env) => Object.keys(env).length <= 200, { message: "at most 200 variables" })
    .refine((env) => JSON.stringify(env).length <= 64 * 1024, {
      message: "at most 64 KiB of variables in all",
    }),
};

export const createServiceBody = z
  .object({
    ...serviceFields,
    branch: serviceFields.branch.default("main"),
    rootDir: serviceFields.rootDir.default(""),
    dockerfilePath: serviceFields.dockerfilePath.default("Dockerfile"),
    healthCheckPath: serviceFields.healthCheckPath.default("/"),
    hostPort: serviceFields.hostPort.optional(),
    runnerId: serviceFields.runnerId.optional(),
    env: serviceFields.env.default({}),
  })
  .strict();
export const updateServiceBody = z.object(serviceFields).partial().strict();

// ── Deployments ─────────────────────────────────────────────────────────────

export const deployment = z
  .object({
    id: z.string(),
    serviceId: z.string(),
    commitSha: z.string().nullable(),
    status: z.enum(deploymentStatuses),
    trigger: z.enum(deploymentTriggers),
    imageTag: z.string().nullable(),
    containerName: z.string().nullable(),
    startedAt: z.string().nullable(),
    finishedAt: z.string().nullable(),
    createdAt: z.string(),
  })
  .openapi("Deployment");
export type Deployment = z.infer<typeof deployment>;

export const createDeploymentBody = z
  .object({
    /** Deploy this commit instead of the head of the service's branch. */
    commitSha: z
      .string()
      .regex(/^[0-9a-f]{4,40}$/, "must be a hex commit id")
      .optional(),
  })
  .strict();

export const logLine = z
  .object({
    id: z.number().int(),
    deploymentId: z.string(),
    line: z.string(),
    stream: z.enum(["stdout", "stderr"]),
    createdAt: z.string(),
  })
  .openapi("LogLine");
export type LogLine = z.infer<typeof logLine>;

// ── Runners and keys ────────────────────────────────────────────────────────

export const runner = z
  .object({
    id: z.string(),
    name: z.string(),
    online: z.boolean(),
    lastHeartbeatAt: z.string().nullable(),
    version: z.string().nullable(),
    capacity: z.number(),
    createdAt: z.string(),
  })
  .openapi("Runner");
export const createRunnerBody = z
  .object({ name, capacity: z.number().int().min(1).max(64).default(2) })
  .strict();

export const accessLevels = ["read", "write", "admin"] as const;
export type AccessLevel = (typeof accessLevels)[number];

export const apiKey = z
  .object({
    id: z.string(),
    name: z.string(),
    access: z.enum(accessLevels),
    projectIds: z.array(z.string()).nullable(),
    createdAt: z.string(),
    lastUsedAt: z.string().nullable(),
  })
  .openapi("ApiKey");
export const createApiKeyBody = z
  .object({
    name,
    access: z.enum(accessLevels),
    projectIds: z.array(z.string()).min(1).max(100).nullable().default(null),
  })
  .strict();
export const bootstrapBody = z
  .object({ token: z.string().min(1), name: name.optional() })
  .strict();

// ── AI providers and failure explanations ───────────────────────────────────

/** The provider that needs no AI: it matches the log against known failures. */
export const BUILTIN_PROVIDER_ID = "builtin";

export const providerId = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]{0,62}$/, "must be lowercase letters, digits, - or _")
  .openapi({ example: "openai" });

const model = z.string().trim().min(1).max(200);

export const aiProvider = z
  .object({
    id: z.string(),
    baseURL: z.string(),
    defaultModel: z.string(),
    /** Always true: the key is required, sealed at rest and never shown. */
    hasApiKey: z.literal(true),
    createdAt: z.string(),
    updatedAt: z.string(),
  })
  .openapi("AiProvider");

export const putAiProviderBody = z
  .object({
    /** Optional for `openai` only, which defaults to OpenAI's own endpoint. */
    baseURL: z
      .url({ protocol: /^https?$/, error: "must be an http(s) URL" })
      .max(2000)
      .refine((u) => !/^[a-z]+:\/\/[^/]*@/i.test(u), {
        message: "must not contain credentials; send the key as apiKey",
      })
      .optional(),
    apiKey: z.string().min(1).max(4096),
    defaultModel: model,
  })
  .strict();

export const explainFailureBody = z
  .object({ providerId: providerId.optional(), model: model.optional() })
  .strict();

export const failureExplanation = z
  .object({
    summary: z.string().trim().min(1).max(2000),
    likelyCause: z.string().trim().min(1).max(2000),
    suggestedFix: z.string().trim().min(1).max(4000),
    commands: z.array(z.string().trim().min(1).max(1000)).max(20),
  })
  .openapi("FailureExplanation");
export type FailureExplanation = z.infer<typeof failureExplanation>;
