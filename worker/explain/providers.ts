/**
 * The AI providers admins configure: stored with their key sealed, shown
 * without it, and chosen for an explanation when a request names none.
 */
import type { z } from "@hono/zod-openapi";
import { eq } from "drizzle-orm";
import {
  BUILTIN_PROVIDER_ID,
  type aiProvider,
  type putAiProviderBody,
} from "../../schema/api";
import { aiProviders, failureExplanations } from "../../schema/tables";
import { seal, unseal } from "../crypto";
import { encryptionKey } from "../lookups";
import { database } from "../router";
import { isoTime } from "../serializers";
import { oldestFirst } from "../sql";
import { invalidField } from "../validation";

export type ProviderRow = typeof aiProviders.$inferSelect;

/** The one provider id that comes with a base URL of its own. */
export const PRESET_BASE_URLS: Record<string, string> = {
  openai: "https://api.openai.com/v1",
};

/** A provider as admins see it: everything but the key. */
export function providerJson(row: ProviderRow): z.infer<typeof aiProvider> {
  return {
    id: row.id,
    baseURL: row.baseURL,
    defaultModel: row.defaultModel,
    hasApiKey: true,
    createdAt: isoTime(row.createdAt),
    updatedAt: isoTime(row.updatedAt),
  };
}

/**
 * Creates or replaces provider `id`. A new base URL may serve other models
 * under the same names, so the explanations cached for it are dropped.
 */
export async function putProvider(
  env: Env,
  id: string,
  body: z.infer<typeof putAiProviderBody>,
): Promise<ProviderRow> {
  if (id === BUILTIN_PROVIDER_ID) {
    throw invalidField(
      "providerId",
      `"${BUILTIN_PROVIDER_ID}" is reserved for the rules that need no AI`,
    );
  }
  const baseURL = (body.baseURL ?? PRESET_BASE_URLS[id])?.replace(/\/+$/, "");
  if (!baseURL) {
    throw invalidField("baseURL", `is required for "${id}"; only "openai" has a preset`);
  }
  const db = database(env);
  const previous = await db.query.aiProviders.findFirst({
    where: eq(aiProviders.id, id),
  });
  const values = {
    baseURL,
    apiKeySealed: await seal(body.apiKey, encryptionKey(env)),
    defaultModel: body.defaultModel,
  };
  const [row] = await db
    .insert(aiProviders)
    .values({ id, ...values })
    .onConflictDoUpdate({
      target: aiProviders.id,
      set: { ...values, updatedAt: new Date().toISOString() },
    })
    .returning();
  if (previous && previous.baseURL !== baseURL) {
    await db.delete(failureExplanations).where(eq(failureExplanations.providerId, id));
  }
  return row;
}

/** Every provider, oldest first: the first is the default for explanations. */
export async function listProviders(env: Env): Promise<ProviderRow[]> {
  return database(env)
    .select()
    .from(aiProviders)
    .orderBy(...oldestFirst(aiProviders.createdAt));
}

/** One provider by id, or undefined. */
export async function getProvider(
  env: Env,
  id: string,
): Promise<ProviderRow | undefined> {
  return database(env).query.aiProviders.findFirst({ where: eq(aiProviders.id, id) });
}

/** Removes a provider and, by cascade, what it explained. False if absent. */
export async function deleteProvider(env: Env, id: string): Promise<boolean> {
  const deleted = await database(env)
    .delete(aiProviders)
    .where(eq(aiProviders.id, id))
    .returning({ id: aiProviders.id });
  return deleted.length > 0;
}

export type ChosenProvider = { kind: "builtin" } | { kind: "ai"; row: ProviderRow };

/**
 * The provider an explanation uses: the one asked for, else the first one
 * configured, else `builtin`, which always works.
 */
export async function chooseProvider(
  env: Env,
  providerId?: string,
): Promise<ChosenProvider> {
  if (providerId === BUILTIN_PROVIDER_ID) return { kind: "builtin" };
  if (providerId === undefined) {
    const [first] = await listProviders(env);
    return first ? { kind: "ai", row: first } : { kind: "builtin" };
  }
  const row = await getProvider(env, providerId);
  if (!row) {
    throw invalidField(
      "providerId",
      `no AI provider "${providerId}" is configured; use "${BUILTIN_PROVIDER_ID}" or ` +
        `configure it with PUT /api/ai/providers/${providerId}`,
    );
  }
  return { kind: "ai", row };
}

/** The provider's API key, unsealed for one call. */
export const providerKey = (env: Env, row: ProviderRow) =>
  unseal(row.apiKeySealed, encryptionKey(env));
