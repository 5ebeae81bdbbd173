/**
 * Explaining a failed deployment, from the request's choice of provider and
 * model to a validated explanation: the rules for `builtin`, else the cache,
 * else one call to the provider whose answer is then cached.
 */
import type { FailureExplanation } from "../../schema/api";
import { conflict } from "../errors";
import type { DeploymentRow, ServiceRow } from "../lookups";
import { numberSetting } from "../router";
import { askProvider } from "./ask-provider";
import { explainWithRules } from "./builtin";
import { cachedExplanation, storeExplanation } from "./cache";
import { loadFailureContext } from "./context";
import { buildMessages } from "./prompt";
import { chooseProvider, providerKey } from "./providers";

/** How long one provider call may take when AI_TIMEOUT_MS is not set. */
export const DEFAULT_AI_TIMEOUT_MS = 20_000;

/** The bound on one provider call. */
export const aiTimeoutMs = (env: Env) =>
  numberSetting(env, "AI_TIMEOUT_MS", DEFAULT_AI_TIMEOUT_MS);

/**
 * Explains a failed deployment with the provider and model `request` names,
 * or the defaults. 409 unless the deployment failed; 400 for a provider that
 * is not configured; 502 when the provider fails.
 */
export async function explainFailure(
  env: Env,
  { deployment, service }: { deployment: DeploymentRow; service: ServiceRow },
  request: { providerId?: string; model?: string },
): Promise<FailureExplanation> {
  if (deployment.status !== "failed") {
    throw conflict(
      `Deployment is ${deployment.status}; only failed deployments can be explained`,
    );
  }
  const provider = await chooseProvider(env, request.providerId);
  if (provider.kind === "builtin") {
    // No cache: the rules cost nothing, and a newer version may know more.
    const { context } = await loadFailureContext(env, deployment, service);
    return explainWithRules(context);
  }

  const { row } = provider;
  const key = {
    deploymentId: deployment.id,
    providerId: row.id,
    model: request.model ?? row.defaultModel,
  };
  const cached = await cachedExplanation(env, key);
  if (cached) return cached;

  const { context, secrets } = await loadFailureContext(env, deployment, service);
  const explanation = await askProvider({
    providerId: row.id,
    baseURL: row.baseURL,
    apiKey: await providerKey(env, row),
    model: key.model,
    messages: buildMessages(context, secrets),
    timeoutMs: aiTimeoutMs(env),
  });
  // The answer is good whether or not it could be kept, e.g. when the
  // provider was removed meanwhile and its cache rows with it.
  await storeExplanation(env, key, explanation).catch((error) =>
    console.warn("explain:storeExplanation", error),
  );
  return explanation;
}
