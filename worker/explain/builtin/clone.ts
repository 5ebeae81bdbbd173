/** Explains a clone that failed: a missing branch or commit, auth, or the network. */
import type { FailureExplanation } from "../../../schema/api";
import type { FailureContext } from "../context";
import { patchService, redeploy, shellQuote, withoutCredentials } from "./commands";
import { failureReason, findLast, quote } from "./log";

const CLONE_FAILED =
  /^Clone failed\b|^Commit \S+ not found\b|^(?:fatal|error): .*\b(?:remote|repository|clone)\b/i;

const MISSING_BRANCH =
  /Remote branch (\S+) not found|Could not find remote branch (\S+)|couldn't find remote ref (?:refs\/heads\/)?(\S+)/i;
const MISSING_COMMIT =
  /^Commit \S+ not found\b|not our ref|reference is not a tree|invalid reference|unable to read tree|bad object|did not match any|upload-pack: not our ref/i;
const TRANSPORT_REFUSED = /transport '(\w+)' not allowed/i;
const AUTH_FAILED = new RegExp(
  [
    "Authentication failed",
    "could not read (?:Username|Password)",
    "terminal prompts disabled",
    String.raw`Permission denied \(publickey`,
    "HTTP Basic: Access denied",
    "Repository not found",
    "returned error: 40[13]",
    "403 Forbidden",
    "Host key verification failed",
    "access denied",
  ].join("|"),
  "i",
);
const UNREACHABLE =
  /Could not resolve host|unable to look up|unable to connect|Connection refused|Connection timed out|timed out|Network is unreachable|No route to host|Could not read from remote repository/i;

/** A clone failure, or null when the clone went through. */
export function explainClone(context: FailureContext): FailureExplanation | null {
  const reason = failureReason(context);
  const cloneFailed =
    CLONE_FAILED.test(reason) ||
    (!context.lines.some((l) => /^Checked out\b/.test(l.line)) &&
      context.lines.some((l) => /^Cloning\b/.test(l.line)) &&
      findLast(context, /^fatal: /) !== null);
  if (!cloneFailed) return null;

  const { settings } = context;
  const url = withoutCredentials(settings.repoUrl);
  const lsRemote = `git ls-remote --heads ${shellQuote(url)}`;
  const evidence = quote(reason);

  const transport = findLast(context, TRANSPORT_REFUSED);
  if (transport) {
    return {
      summary: "The runner refused to clone the repository over its URL's protocol.",
      likelyCause:
        `Runners clone only over https, http, ssh and git; the repository URL uses ` +
        `"${transport[1]}" (${evidence}).`,
      suggestedFix:
        "Serve the repository from a git host and point the service's repoUrl at its " +
        "https or ssh URL.",
      commands: [
        patchService(settings.serviceId, {
          repoUrl: "https://git.example.com/acme/web.git",
        }),
      ],
    };
  }

  const branch = findLast(context, MISSING_BRANCH);
  if (branch) {
    const name = branch[1] ?? branch[2] ?? branch[3] ?? settings.branch;
    return {
      summary: `The clone failed: the branch "${name}" does not exist in the repository.`,
      likelyCause:
        `The service deploys branch "${name}", but ${url} has no branch of that ` +
        `name (${evidence}). It may be misspelt, not pushed yet, or the default branch may ` +
        `be called something else (main or master).`,
      suggestedFix:
        "List the repository's branches, then either push the branch or set the service's " +
        "branch to one that exists, and deploy again.",
      commands: [
        lsRemote,
        `git push origin HEAD:${shellQuote(settings.branch)}`,
        patchService(settings.serviceId, { branch: "main" }),
        redeploy(settings.serviceId),
      ],
    };
  }

  if (context.commitSha && findLast(context, MISSING_COMMIT)) {
    return {
      summary: `The clone failed: commit ${context.commitSha} was not found.`,
      likelyCause:
        `The deployment asked for commit ${context.commitSha} of branch "${settings.branch}", ` +
        `which the repository does not have (${evidence}): it may not be pushed, or it ` +
        "may belong to another branch.",
      suggestedFix:
        "Push the commit to the service's branch, or deploy a commit that is on it.",
      commands: [
        `git branch -r --contains ${shellQuote(context.commitSha)}`,
        `git push origin HEAD:${shellQuote(settings.branch)}`,
      ],
    };
  }

  if (findLast(context, AUTH_FAILED)) {
    const ssh = /^(?:ssh:\/\/|[\w.-]+@[\w.-]+:)/.test(settings.repoUrl);
    return {
      summary: "The clone failed: the git host refused access to the repository.",
      likelyCause:
        `The repository is private (or the URL is wrong) and the runner has no credentials ` +
        `that the host accepts (${evidence}).`,
      suggestedFix: ssh
        ? "Add the runner host's SSH public key as a read-only deploy key of the repository, " +
          "and make sure the host key of the git server is in the runner's known_hosts."
        : "Put an access token with read access to the repository into the service's " +
          "repoUrl (https://<user>:<token>@host/owner/repo.git), or make the repository public.",
      commands: /^https?:\/\//.test(url)
        ? [
            lsRemote,
            patchService(settings.serviceId, {
              repoUrl: url.replace(/^(https?:\/\/)/, "$1<user>:<token>@"),
            }),
          ]
        : [lsRemote],
    };
  }

  if (findLast(context, UNREACHABLE)) {
    return {
      summary: "The clone failed: the runner could not reach the git server.",
      likelyCause:
        `The runner's host could not connect to the host in ${url} (${evidence}): the name ` +
        "does not resolve there, the server is down, or a firewall blocks the port.",
      suggestedFix:
        "Check the repository URL for typos, and check from the runner's host that the git " +
        "server is reachable; then deploy again.",
      commands: [lsRemote, redeploy(settings.serviceId)],
    };
  }

  return {
    summary: "The clone of the repository failed.",
    likelyCause: `git stopped with ${evidence}.`,
    suggestedFix:
      "Run the same clone on the runner's host to see the full error, and fix the repository " +
      "URL or branch accordingly.",
    commands: [
      `git clone --depth=1 --branch=${shellQuote(settings.branch)} ${shellQuote(url)}`,
    ],
  };
}
