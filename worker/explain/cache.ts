/**
 * Explanations already paid for, one per deployment, provider and model. A
 * failed deployment's log is final, so an answer stays right; asking again
 * returns it without calling the provider.
 */
import { and, eq } from "drizzle-orm";
import { failureExplanation, type FailureExplanation } from "../../schema/api";
import { failureExplanations } from "../../schema/tables";
import { database } from "../router";

export type CacheKey = { deploymentId: string; providerId: string; model: string };

const matching = (key: CacheKey) =>
  and(
    eq(failureExplanations.deploymentId, key.deploymentId),
    eq(failureExplanations.providerId, key.providerId),
    eq(failureExplanations.model, key.model),
  );

/** The cached explanation, or null. One that no longer parses counts as absent. */
export async function cachedExplanation(
  env: Env,
  key: CacheKey,
): Promise<FailureExplanation | null> {
  const row = await database(env).query.failureExplanations.findFirst({
    where: matching(key),
  });
  if (!row) return null;
  try {
    const parsed = failureExplanation.safeParse(JSON.parse(row.explanation));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

/**
 * Stores `explanation` under `key`. Two requests that raced to the provider
 * both get their answer; the later one replaces the earlier in the cache.
 */
export async function storeExplanation(
  env: Env,
  key: CacheKey,
  explanation: FailureExplanation,
): Promise<void> {
  const text = JSON.stringify(explanation);
  await database(env)
    .insert(failureExplanations)
    .values({ ...key, explanation: text })
    .onConflictDoUpdate({
      target: [
        failureExplanations.deploymentId,
        failureExplanations.providerId,
        failureExplanations.model,
      ],
      set: { explanation: text, createdAt: new Date().toISOString() },
    });
}
