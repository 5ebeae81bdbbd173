/**
 * The `builtin` provider: explains a failed deployment with no AI at all, by
 * matching its failure reason and log against the failures deployments
 * commonly hit. Pure: the same context always gets the same explanation.
 */
import type { FailureExplanation } from "../../../schema/api";
import type { FailureContext } from "../context";
import { explainBuild, explainMissingFiles } from "./build";
import { explainClone } from "./clone";
import { redeploy, showLogs } from "./commands";
import { appOutput, errorLine, failureReason, matchReason, quote } from "./log";
import {
  explainCrash,
  explainHealthStatus,
  explainNoAnswer,
  explainOutOfMemory,
} from "./start";

type Rule = (context: FailureContext) => FailureExplanation | null;

/**
 * In pipeline order. Each rule recognises its failure from the reason, which
 * names the step that failed, so an earlier rule never claims a later
 * step's failure.
 */
const RULES: Rule[] = [
  explainRunnerLost,
  explainClone,
  explainMissingFiles,
  explainBuild,
  explainOutOfMemory,
  explainCrash,
  explainHealthStatus,
  explainNoAnswer,
];

/** Explains `context` with the first rule that recognises it, else generically. */
export function explainWithRules(context: FailureContext): FailureExplanation {
  for (const rule of RULES) {
    const explanation = rule(context);
    if (explanation) return explanation;
  }
  return genericExplanation(context);
}

function explainRunnerLost(context: FailureContext): FailureExplanation | null {
  if (!matchReason(context, /runner lost|no heartbeat/i)) return null;
  return {
    summary: "The runner stopped responding while it deployed, so the deployment failed.",
    likelyCause:
      "The runner sent no heartbeat within its lease: its process stopped or crashed, its " +
      `host restarted, or it lost its connection to Aeroplane (${quote(failureReason(context))}).`,
    suggestedFix:
      "Check that the runner is running and online (GET /api/runners), look at its own log " +
      "on its host, then deploy again.",
    commands: [
      'curl "$AEROPLANE_URL/api/runners" -H "Authorization: Bearer $AEROPLANE_API_KEY"',
      redeploy(context.settings.serviceId),
    ],
  };
}

function genericExplanation(context: FailureContext): FailureExplanation {
  const reason = failureReason(context);
  const lines = context.lines.map((l) => l.line);
  const error =
    errorLine(appOutput(context)) ?? errorLine(lines.filter((l) => l !== reason));
  return {
    summary: reason
      ? `The deployment failed: ${shorten(reason.replace(/^Deployment failed:\s*/i, ""))}`
      : "The deployment failed.",
    likelyCause:
      "Aeroplane's built-in rules do not recognise this failure." +
      (error ? ` The most telling line in the log is ${quote(error)}.` : ""),
    suggestedFix:
      "Read the log around the failure to find its cause, or configure an AI provider " +
      "(PUT /api/ai/providers/openai) and ask again for a deeper explanation.",
    commands: [showLogs(context.deploymentId)],
  };
}

const shorten = (text: string) => (text.length > 500 ? `${text.slice(0, 500)}…` : text);
