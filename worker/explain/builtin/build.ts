/**
 * Explains failures between the clone and the first run: a wrong root dir, a
 * missing Dockerfile, and a build that failed or ran out of time.
 */
import type { FailureExplanation } from "../../../schema/api";
import type { FailureContext } from "../context";
import { dockerBuild, patchService, redeploy, shellQuote } from "./commands";
import { buildSteps, errorLine, failureReason, lastOf, matchReason, quote } from "./log";

const MISSING_ROOT_DIR =
  /Root dir(?:ectory)? "([^"]*)" (?:does not exist|not found)|root dir(?:ectory)?\b.*\b(?:does not exist|not found)/i;
const MISSING_DOCKERFILE =
  /No Dockerfile (?:at|found at) "([^"]*)"|Dockerfile\b.*\b(?:not found|does not exist)|Cannot locate specified Dockerfile|unable to evaluate symlinks in Dockerfile path/i;

/** The root dir or the Dockerfile is not where the service settings say. */
export function explainMissingFiles(context: FailureContext): FailureExplanation | null {
  const { settings } = context;
  const rootDir = matchReason(context, MISSING_ROOT_DIR);
  if (rootDir) {
    const dir = rootDir[1] ?? settings.rootDir;
    return {
      summary: `The build could not start: the root directory "${dir}" is not in the repository.`,
      likelyCause:
        `The service's rootDir is "${dir}", but the checked-out commit has no such ` +
        `directory (${quote(rootDir.input!)}). It may be misspelt, renamed, or not committed.`,
      suggestedFix:
        "Set rootDir to the directory that holds the app and its Dockerfile, relative to the " +
        'repository root (use "" for the root itself), and deploy again.',
      commands: [
        "git ls-tree -d --name-only HEAD",
        patchService(settings.serviceId, { rootDir: "" }),
        redeploy(settings.serviceId),
      ],
    };
  }

  const dockerfile = matchReason(context, MISSING_DOCKERFILE);
  if (!dockerfile) return null;
  const inRoot =
    settings.rootDir === "" ? "the repository root" : `rootDir "${settings.rootDir}"`;
  const where = dockerfile[1]
    ? `"${dockerfile[1]}"`
    : `"${settings.dockerfilePath}" in ${inRoot}`;
  return {
    summary: `The build could not start: there is no Dockerfile at ${where}.`,
    likelyCause:
      `dockerfilePath "${settings.dockerfilePath}" is read relative to ${inRoot}, and the ` +
      `commit has no file there (${quote(dockerfile.input!)}). Either the Dockerfile is not ` +
      "committed, it has another name or case (dockerfile, Dockerfile.prod), or rootDir " +
      "points at the wrong directory.",
    suggestedFix:
      "Commit a Dockerfile, or set dockerfilePath (relative to rootDir) and rootDir to " +
      "where it is, and deploy again.",
    commands: [
      "git ls-files | grep -i dockerfile",
      patchService(settings.serviceId, {
        rootDir: "<directory of the Dockerfile>",
        dockerfilePath: "Dockerfile",
      }),
      redeploy(settings.serviceId),
    ],
  };
}

const BUILD_TIMEOUT = /Build timed out after ([\d.]+) ?s/i;
const BUILD_FAILED = /^Build failed\b/i;
const FAILED_COMMAND = [
  /The command '(.+)' returned a non-zero code: (\d+)/,
  /process "(.+)" did not complete successfully: exit code: (\d+)/,
  /executor failed running \[(.+)\]: exit code: (\d+)/,
];
const BASE_IMAGE =
  /pull access denied|manifest (?:for \S+ )?(?:unknown|not found)|repository does not exist|failed to resolve reference|No such image/i;
const MISSING_SOURCE =
  /(?:COPY|ADD) failed|failed to compute cache key|file not found in build context|no source files were specified/i;
const DOCKERFILE_SYNTAX =
  /Dockerfile parse error|unknown instruction|dockerfile.*syntax/i;

/** A build that failed at a step, or that ran out of time. */
export function explainBuild(context: FailureContext): FailureExplanation | null {
  const { settings } = context;
  const reason = failureReason(context);
  const build = dockerBuild(settings.rootDir, settings.dockerfilePath);

  const timeout = matchReason(context, BUILD_TIMEOUT);
  if (timeout) {
    const step = lastOf(buildSteps(context), () => true);
    const at = step
      ? ` during step ${step.number}/${step.total} (${step.instruction})`
      : "";
    return {
      summary: `The build ran out of time after ${timeout[1]} s${at}.`,
      likelyCause:
        "The image takes longer to build than the runner allows: a slow dependency install, " +
        "a large download, or a step that waits for input and never ends.",
      suggestedFix:
        "Make the slow step faster (a lock file, fewer dependencies, a smaller base image) or " +
        "raise BUILD_TIMEOUT_MS on the control plane; check that no step waits for a prompt.",
      commands: [`time ${build}`],
    };
  }

  const failedCommand = FAILED_COMMAND.map((p) => matchReason(context, p)).find(
    (m) => m !== null,
  );
  if (!BUILD_FAILED.test(reason) && !failedCommand) return null;

  const steps = buildSteps(context);
  const step = lastOf(steps, () => true);
  const stepName = step
    ? `step ${step.number}/${step.total} (${step.instruction})`
    : "a step";
  const output = context.lines
    .slice(step ? step.index + 1 : 0)
    .map((l) => l.line)
    .filter((line) => line !== reason && !FAILED_COMMAND.some((p) => p.test(line)));
  const error = errorLine(output);
  const said = error ? ` It printed ${quote(error)}.` : "";

  if (BASE_IMAGE.test(reason) || (step && /^FROM\b/i.test(step.instruction) && error)) {
    const image = step?.instruction.match(/^FROM\s+(?:--\S+\s+)*(\S+)/i)?.[1];
    return {
      summary: `The build failed: the base image${image ? ` ${image}` : ""} could not be pulled.`,
      likelyCause:
        `Docker on the runner's host cannot get the image the Dockerfile starts FROM ` +
        `(${quote(reason)}): the name or tag is wrong, the registry needs a login, or the ` +
        "host cannot reach the registry.",
      suggestedFix:
        "Fix the FROM line, or pull (or build) the image on the runner's host, logging in to " +
        "the registry if it is private.",
      commands: image ? [`docker pull ${shellQuote(image)}`, build] : [build],
    };
  }

  if (DOCKERFILE_SYNTAX.test(reason)) {
    return {
      summary: "The build failed: Docker could not read the Dockerfile.",
      likelyCause: `The Dockerfile has a syntax error (${quote(reason)}).`,
      suggestedFix: "Fix the line Docker names, then deploy again.",
      commands: [build],
    };
  }

  if (MISSING_SOURCE.test(reason) || (error && MISSING_SOURCE.test(error))) {
    const buildContext =
      settings.rootDir === "" ? "the repository root" : `"${settings.rootDir}"`;
    return {
      summary: `The build failed at ${stepName}: a file it copies is missing.`,
      likelyCause:
        `The file is not in the build context, which is ${buildContext} (${quote(error ?? reason)}). ` +
        "It may not be committed, live outside rootDir, or be excluded by .dockerignore.",
      suggestedFix:
        "Commit the file, or fix the path in the COPY line (paths are relative to rootDir), " +
        "or remove it from .dockerignore.",
      commands: ["git ls-files", "cat .dockerignore", build],
    };
  }

  const command = failedCommand?.[1].replace(/^\/bin\/sh -c /, "");
  const code = failedCommand?.[2];
  const memory = error && /out of memory|heap limit|Killed\b/i.test(error);
  const cause = command
    ? `At ${stepName}, the command \`${command}\` exited with code ${code}.${said}`
    : `The build stopped at ${stepName} (${quote(reason)}).${said}`;
  return {
    summary: `The build failed at ${stepName}.`,
    likelyCause: memory
      ? `${cause} The build ran out of memory on the runner's host.`
      : cause,
    suggestedFix: memory
      ? "Give the build more memory (a larger host, or NODE_OPTIONS=--max-old-space-size for " +
        "Node builds), or make the step use less."
      : "Run the same build from a clean checkout to see the whole error and fix it. Usual " +
        "causes: a missing or outdated lock file, a dependency that needs tools the base image " +
        "lacks, or files the step needs that are copied only later.",
    commands: command ? [build, command] : [build],
  };
}
