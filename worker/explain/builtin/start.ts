/**
 * Explains failures once the image was built: the app could not start, was
 * killed for memory, crashed, answered the health check with an error, or
 * never answered on its port.
 */
import type { FailureExplanation } from "../../../schema/api";
import type { FailureContext } from "../context";
import { dockerBuild, patchService, redeploy, shellQuote } from "./commands";
import { appOutput, errorLine, failureReason, matchReason, quote } from "./log";
import { announcedPorts, exposedPorts, loopbackOnly } from "./ports";

const EXITED = /\bexited (?:with )?(?:exit )?code (-?\d+)/i;
const OOM = /OOMKilled|out of memory|\bOOM\b|heap limit/i;
const START_FAILED = /Could not start (?:the candidate container|\S+): (.+)/i;

/** The app was killed for memory: SIGKILL's 137, or an out-of-memory error. */
export function explainOutOfMemory(context: FailureContext): FailureExplanation | null {
  const exited = matchReason(context, EXITED);
  if (!exited) return null;
  const code = exited[1];
  const output = appOutput(context);
  const oomLine = output.find((line) => OOM.test(line)) ?? null;
  if (code !== "137" && !oomLine && !OOM.test(failureReason(context))) return null;

  const last = oomLine ?? errorLine(output);
  const words = last ? ` Its last words: ${quote(last)}.` : "";
  return {
    summary: `The app ran out of memory during its health check and was stopped (exit code ${code}).`,
    likelyCause:
      code === "137"
        ? "Exit code 137 means the process received SIGKILL; on a deploy that is almost " +
          "always the kernel's OOM killer stopping an app that used more memory than the " +
          `runner's host could give it.${words}`
        : `The app used more memory than it may and aborted with exit code ${code}.${words}`,
    suggestedFix:
      "Lower the app's memory use at start (for Node, cap the heap with NODE_OPTIONS=" +
      "--max-old-space-size=<MiB> below the memory available), avoid loading large data at " +
      "boot, or give the runner's host more memory; then deploy again.",
    commands: [
      "free -m",
      'dmesg | grep -iE "killed process|out of memory"',
      "docker stats",
    ],
  };
}

/** What common exit codes say by themselves. */
const EXIT_MEANINGS: Record<string, string> = {
  "0": "the main process finished normally instead of staying up as a server",
  "126": "the command the image runs exists but cannot be executed",
  "127": "the command the image runs was not found in the image",
  "139": "the process crashed with a segmentation fault",
  "143": "the process was stopped with SIGTERM",
};

/** What some well-known error lines mean. */
const ERROR_HINTS: [RegExp, (m: RegExpMatchArray) => string][] = [
  [
    /Cannot find module '([^']+)'/,
    (m) =>
      `the module "${m[1]}" is missing from the image: dependencies were not installed, or a COPY left the file out`,
  ],
  [
    /No module named '?([\w.]+)/,
    (m) => `the Python module "${m[1]}" is not installed in the image`,
  ],
  [/exec format error/i, () => "the image was built for another CPU architecture"],
  [
    /\b(?:is not set|must be set|is required|missing (?:required )?(?:env|environment)|undefined (?:env|environment))/i,
    () => "an environment variable the app needs is not set on the service",
  ],
  [/EADDRINUSE|address already in use/i, () => "the app tried to open a port twice"],
  [
    /EACCES|permission denied/i,
    () => "the app lacks a permission it needs (a file, or a port below 1024)",
  ],
];

/** The app exited before it passed the health check. */
export function explainCrash(context: FailureContext): FailureExplanation | null {
  const { settings } = context;
  const exited = matchReason(context, EXITED);
  const startFailed = matchReason(context, START_FAILED);
  if (!exited && !startFailed) return null;
  const build = testBuild(context);

  if (!exited && startFailed) {
    const error = startFailed[1];
    const missing = /executable file not found|no such file or directory/i.test(error);
    return {
      summary: "Docker could not start the app's container.",
      likelyCause: missing
        ? `The image's CMD or ENTRYPOINT names a program that is not in the image (${quote(error)}).`
        : `Docker refused to start the container (${quote(error)}).`,
      suggestedFix: missing
        ? "Fix the CMD/ENTRYPOINT in the Dockerfile so it runs a program the image contains."
        : "Fix what Docker reports, then deploy again.",
      commands: [`${build} && docker run --rm app-test`],
    };
  }

  const code = exited![1];
  const output = appOutput(context);
  const error = errorLine(output) ?? output.at(-1) ?? null;
  const hint = error ? lookupHint(error) : null;
  const meaning = EXIT_MEANINGS[code];
  const said = error ? ` Its error: ${quote(error)}.` : " It wrote no output.";
  return {
    summary: `The app crashed on start: it exited with code ${code} during the health check.`,
    likelyCause:
      `The container's main process ended with exit code ${code}` +
      `${meaning ? ` (${meaning})` : ""}.${said}${hint ? ` This means ${hint}.` : ""}`,
    suggestedFix:
      code === "0"
        ? "Make the image's CMD start the server in the foreground (for example " +
          '["node", "server.js"]), not a script that exits.'
        : "Run the image locally with the service's environment to reproduce the crash, fix " +
          "the error it prints, and deploy again.",
    commands: [`${build} && docker run --rm -e PORT=${settings.internalPort} app-test`],
  };
}

/** Builds the service's image locally as `app-test`. */
const testBuild = ({ settings }: FailureContext) =>
  dockerBuild(settings.rootDir, settings.dockerfilePath, "app-test");

function lookupHint(line: string): string | null {
  for (const [pattern, hint] of ERROR_HINTS) {
    const match = line.match(pattern);
    if (match) return hint(match);
  }
  return null;
}

const HEALTH_STATUS =
  /Health check failed:.*?GET (\S+).*?\b(?:answered|returned|responded)(?: with)?(?: HTTP| status)? (\d{3})\b/i;
const HEALTH_STATUS_LOOSE = /health[ -]?check\b.*?\b(?:HTTP|status) (\d{3})\b/i;

/** The app answered, but the health-check path did not give a 2xx or 3xx. */
export function explainHealthStatus(context: FailureContext): FailureExplanation | null {
  const { settings } = context;
  const strict = matchReason(context, HEALTH_STATUS);
  const loose = strict ? null : matchReason(context, HEALTH_STATUS_LOOSE);
  if (!strict && !loose) return null;
  const path = strict?.[1] ?? settings.healthCheckPath;
  const status = Number(strict?.[2] ?? loose![1]);
  const evidence = quote((strict ?? loose)!.input!);

  const summary =
    `The app is up and answers on port ${settings.internalPort}, but its health check ` +
    `GET ${path} answered HTTP ${status}.`;
  const tryIt =
    `${testBuild(context)} && ` +
    `docker run --rm -d -p ${settings.internalPort}:${settings.internalPort} app-test && ` +
    `curl -i http://127.0.0.1:${settings.internalPort}${path}`;
  if (status === 404) {
    return {
      summary,
      likelyCause:
        `The app has no route at the health-check path "${path}" (${evidence}); Aeroplane ` +
        "needs an answer from 200 to 399 there before it switches traffic.",
      suggestedFix:
        `Set healthCheckPath to a route the app serves (such as "/"), or add a route at ` +
        `"${path}" that answers 200; then deploy again.`,
      commands: [
        patchService(settings.serviceId, { healthCheckPath: "/" }),
        redeploy(settings.serviceId),
        tryIt,
      ],
    };
  }
  const why =
    status >= 500
      ? "the app fails while handling it; its output shows the error"
      : status === 401 || status === 403
        ? "the path requires authentication, which the health check cannot give"
        : "the app does not treat this path as a plain page it serves";
  return {
    summary,
    likelyCause: `GET ${path} answered HTTP ${status} (${evidence}): ${why}.`,
    suggestedFix:
      "Point healthCheckPath at a public route that answers 200 without needing a database " +
      "or a login, or fix the error that route hits.",
    commands: [patchService(settings.serviceId, { healthCheckPath: "/" }), tryIt],
  };
}

const NO_ANSWER =
  /did not answer(?: HTTP)? on port (\d+)|no answer on port (\d+)|did not answer|not answer HTTP/i;

/** The app never answered on internalPort: another port, loopback only, or too slow. */
export function explainNoAnswer(context: FailureContext): FailureExplanation | null {
  const match = matchReason(context, NO_ANSWER);
  if (!match) return null;
  const { settings } = context;
  const port = settings.internalPort;
  const output = appOutput(context);
  const announced = announcedPorts(output);
  const evidence = quote(failureReason(context));
  const fixPort = (actual: number) => [
    patchService(settings.serviceId, { internalPort: actual }),
    redeploy(settings.serviceId),
  ];

  const other = announced.find((p) => p.port !== port);
  if (other && !announced.some((p) => p.port === port)) {
    return {
      summary:
        `The app started but never answered on port ${port}: it listens on port ` +
        `${other.port}.`,
      likelyCause:
        `The app listens on port ${other.port} (${quote(other.line)}) while the service's ` +
        `internalPort is ${port}, so the health check found nothing there (${evidence}).`,
      suggestedFix:
        `Set the service's internalPort to ${other.port}, or make the app listen on ${port} ` +
        `(for example by reading the PORT environment variable).`,
      commands: fixPort(other.port),
    };
  }

  const loopback = loopbackOnly(output, port);
  if (loopback) {
    return {
      summary: `The app listens on port ${port}, but only inside its own container.`,
      likelyCause:
        `The app binds to the loopback address (${quote(loopback)}), which the health check ` +
        `cannot reach from outside the container (${evidence}).`,
      suggestedFix: `Make the app listen on 0.0.0.0:${port} (all interfaces) instead of 127.0.0.1.`,
      commands: [],
    };
  }

  const exposed = exposedPorts(context).find((p) => p !== port);
  if (exposed !== undefined && announced.length === 0) {
    return {
      summary: `The app never answered on port ${port}; its Dockerfile exposes port ${exposed}.`,
      likelyCause:
        `The Dockerfile declares EXPOSE ${exposed} while the service's internalPort is ` +
        `${port}: the app most likely listens on ${exposed} (${evidence}).`,
      suggestedFix: `Set internalPort to ${exposed}, or make the app listen on ${port}.`,
      commands: fixPort(exposed),
    };
  }

  return {
    summary: `The app started but did not answer HTTP on port ${port} in time.`,
    likelyCause:
      `Nothing answered GET ${settings.healthCheckPath} on port ${port} (${evidence}). ` +
      "The app listens on another port, binds to 127.0.0.1 only, or needs longer to start " +
      "than the health check allows.",
    suggestedFix:
      `Make sure the app listens on 0.0.0.0:${port} (or set internalPort to its port) and ` +
      "logs a line when it is ready; if it is just slow, raise HEALTH_CHECK_TIMEOUT_MS.",
    commands: [
      `${testBuild(context)} && docker run --rm -p ${port}:${port} -e PORT=${port} app-test`,
      `curl -i http://127.0.0.1:${port}${shellQuote(settings.healthCheckPath)}`,
    ],
  };
}
