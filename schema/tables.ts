/**
 * D1 tables: the single source of truth for the control plane's metadata.
 * Log lines do not live here; each deployment's Durable Object keeps them.
 */
import { sql } from "drizzle-orm";
import {
  index,
  integer,
  primaryKey,
  sqliteTable,
  text,
  uniqueIndex,
} from "drizzle-orm/sqlite-core";

/** ISO 8601 UTC with milliseconds, as SQLite writes it. */
const now = sql`(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))`;

export const apiKeys = sqliteTable("api_keys", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  /** SHA-256 of the secret, hex. The secret itself is never stored. */
  secretHash: text("secret_hash").notNull().unique(),
  access: text("access", { enum: ["read", "write", "admin"] }).notNull(),
  /** JSON array of project ids, or null for every project. */
  projectIds: text("project_ids", { mode: "json" }).$type<string[] | null>(),
  createdAt: text("created_at").notNull().default(now),
  lastUsedAt: text("last_used_at"),
});

/** One-time facts about the installation, such as "bootstrapped". */
export const installation = sqliteTable("installation", {
  key: text("key").primaryKey(),
  value: text("value").notNull(),
  createdAt: text("created_at").notNull().default(now),
});

export const projects = sqliteTable("projects", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  createdAt: text("created_at").notNull().default(now),
  updatedAt: text("updated_at").notNull().default(now),
});

export const runners = sqliteTable("runners", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  tokenHash: text("token_hash").notNull().unique(),
  capacity: integer("capacity").notNull().default(2),
  version: text("version"),
  online: integer("online", { mode: "boolean" }).notNull().default(false),
  lastHeartbeatAt: text("last_heartbeat_at"),
  createdAt: text("created_at").notNull().default(now),
});

export const services = sqliteTable(
  "services",
  {
    id: text("id").primaryKey(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id, { onDelete: "cascade" }),
    name: text("name").notNull(),
    repoUrl: text("repo_url").notNull(),
    branch: text("branch").notNull(),
    rootDir: text("root_dir").notNull(),
    dockerfilePath: text("dockerfile_path").notNull(),
    internalPort: integer("internal_port").notNull(),
    hostPort: integer("host_port").notNull().unique(),
    healthCheckPath: text("health_check_path").notNull(),
    runnerId: text("runner_id").references(() => runners.id, { onDelete: "set null" }),
    /** AES-GCM sealed JSON object of environment variables. */
    envSealed: text("env_sealed"),
    createdAt: text("created_at").notNull().default(now),
    updatedAt: text("updated_at").notNull().default(now),
  },
  (table) => [index("services_project_idx").on(table.projectId)],
);

export const deploymentStatuses = [
  "queued",
  "building",
  "running",
  "failed",
  "aborted",
  "superseded",
] as const;

export const deploymentTriggers = ["manual", "push", "hook", "redeploy"] as const;

export const deployments = sqliteTable(
  "deployments",
  {
    id: text("id").primaryKey(),
    serviceId: text("service_id")
      .notNull()
      .references(() => services.id, { onDelete: "cascade" }),
    commitSha: text("commit_sha"),
    status: text("status", { enum: deploymentStatuses }).notNull(),
    trigger: text("trigger", { enum: deploymentTriggers }).notNull(),
    imageTag: text("image_tag"),
    containerName: text("container_name"),
    startedAt: text("started_at"),
    finishedAt: text("finished_at"),
    createdAt: text("created_at").notNull().default(now),
    /** The runner holding the lease while the deployment builds. */
    runnerId: text("runner_id"),
    leaseId: text("lease_id"),
    /** Why it failed, for people and for explain-failure. */
    failureReason: text("failure_reason"),
  },
  (table) => [
    index("deployments_service_created_idx").on(table.serviceId, table.createdAt),
    index("deployments_status_idx").on(table.status),
    // A second building row for one service is a bug the database refuses.
    uniqueIndex("deployments_one_building_per_service")
      .on(table.serviceId)
      .where(sql`status = 'building'`),
  ],
);

/**
 * OpenAI-compatible endpoints that explain failed deployments. The id is the
 * admin's own name for the endpoint ("openai", "groq", "ollama", …).
 */
export const aiProviders = sqliteTable("ai_providers", {
  id: text("id").primaryKey(),
  baseURL: text("base_url").notNull(),
  /** AES-GCM sealed API key; it is never shown again. */
  apiKeySealed: text("api_key_sealed").notNull(),
  defaultModel: text("default_model").notNull(),
  createdAt: text("created_at").notNull().default(now),
  updatedAt: text("updated_at").notNull().default(now),
});

/**
 * Explanations a provider gave, one per deployment, provider and model, so
 * asking again costs nothing. A failed deployment's log no longer changes.
 */
export const failureExplanations = sqliteTable(
  "failure_explanations",
  {
    deploymentId: text("deployment_id")
      .notNull()
      .references(() => deployments.id, { onDelete: "cascade" }),
    providerId: text("provider_id")
      .notNull()
      .references(() => aiProviders.id, { onDelete: "cascade" }),
    model: text("model").notNull(),
    /** The validated explanation JSON, exactly as it is answered. */
    explanation: text("explanation").notNull(),
    createdAt: text("created_at").notNull().default(now),
  },
  (table) => [
    primaryKey({ columns: [table.deploymentId, table.providerId, table.model] }),
  ],
);
