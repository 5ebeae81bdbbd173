/**
 * The chat messages that ask a model to explain a failed deployment. The
 * user message carries the service settings, the failure reason and the
 * relevant part of the log, with every secret replaced.
 */
import type { FailureContext } from "./context";
import { formatEntry, logExcerpt } from "./excerpt";
import { createRedactor } from "./redact";

export type ChatMessage = { role: "system" | "user"; content: string };

/** What the model is told about Aeroplane and about the answer it must give. */
export const SYSTEM_PROMPT = `You explain why a deployment on Aeroplane failed.

How Aeroplane deploys a service: a runner on the user's Docker host clones the
service's branch (or a given commit) of repoUrl, builds an image with Docker's
classic builder using dockerfilePath, which is relative to rootDir (the build
context), starts a candidate container with the service's environment, and
health-checks it with GET healthCheckPath on internalPort over Docker's bridge
network, so the app must listen on 0.0.0.0:internalPort and answer HTTP 200-399.
Only then does the container replace the live one. The log holds Aeroplane's own
lines, git's and Docker's output, and the app's last output lines if it failed
the health check or exited. Values shown as [redacted] or [redacted:NAME] are
secrets; never guess them. Service settings are changed with
PATCH /api/services/{serviceId}, e.g. {"internalPort": 8080}.

Answer with one JSON object and nothing else, with exactly these keys:
{"summary": "one sentence: what failed",
 "likelyCause": "the most likely root cause, citing the log line that shows it",
 "suggestedFix": "what to change, concretely",
 "commands": ["shell commands that help check or fix it; [] if none"]}`;

/** The messages for `context`; `secrets` are the service's environment. */
export function buildMessages(
  context: FailureContext,
  secrets: Record<string, string>,
): ChatMessage[] {
  const { settings } = context;
  const excerpt = logExcerpt(context.lines);
  const shown: [string, string | number][] = [
    ["serviceId", settings.serviceId],
    ["repoUrl", settings.repoUrl],
    ["branch", settings.branch],
    ["commit", context.commitSha ?? "(head of the branch)"],
    ["rootDir", settings.rootDir === "" ? "(repository root)" : settings.rootDir],
    ["dockerfilePath", settings.dockerfilePath],
    ["internalPort", settings.internalPort],
    ["healthCheckPath", settings.healthCheckPath],
  ];
  const sections = [
    "Service settings:",
    ...shown.map(([name, value]) => `- ${name}: ${value}`),
    "",
    `Failure reason: ${context.failureReason ?? "(none recorded)"}`,
    "",
    `Deployment log (${context.lines.length} lines; ${excerpt.omitted} omitted):`,
  ];
  if (excerpt.earlier.length > 0) {
    sections.push(
      "Earlier lines that look like errors:",
      ...excerpt.earlier.map(formatEntry),
    );
    sections.push(`Last ${excerpt.tail.length} lines:`);
  }
  sections.push(...excerpt.tail.map(formatEntry));

  // A value equal to a setting is no secret (any reader sees the settings),
  // and hiding it would hide the very port or path the failure is about.
  // Not repoUrl: it may carry a token, which the patterns still catch.
  const visible = new Set([
    String(settings.internalPort),
    settings.branch,
    settings.rootDir,
    settings.dockerfilePath,
    settings.healthCheckPath,
  ]);
  const hidden = Object.fromEntries(
    Object.entries(secrets).filter(([, value]) => !visible.has(value)),
  );
  const redact = createRedactor(hidden);
  return [
    { role: "system", content: SYSTEM_PROMPT },
    { role: "user", content: redact(sections.join("\n")) },
  ];
}
