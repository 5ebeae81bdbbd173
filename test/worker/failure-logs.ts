/**
 * Logs of failed deployments as the runner writes them, one per kind of
 * failure, for the explain-failure tests. Each is the log's lines and the
 * failure reason, which the runner also writes as the last line.
 */
export type Line = [text: string, stream: "stdout" | "stderr"];
export type FailureLog = { reason: string; lines: Line[] };

const out = (text: string): Line => [text, "stdout"];
const err = (text: string): Line => [text, "stderr"];

const cloned = [
  out("Deployment queued (trigger: manual)"),
  out("Cloning git://127.0.0.1:9418/app.git at main"),
  err("Cloning into '/tmp/aeroplane-x/repo'..."),
  out("Checked out 3f2a9c1d5e7b8a0f1c2d3e4f5a6b7c8d9e0f1a2b"),
];

const built = [
  ...cloned,
  out("Building image aeroplane-svc_web-dep_1 from Dockerfile"),
  out("Step 1/4 : FROM aeroplane-host-node:20"),
  out(" ---> 2b1c0a9f8e7d"),
  out("Step 2/4 : WORKDIR /app"),
  out(" ---> Using cache"),
  out("Step 3/4 : COPY server.js ."),
  out(" ---> 9a8b7c6d5e4f"),
  out('Step 4/4 : CMD ["node", "server.js"]'),
  out("Successfully built 9a8b7c6d5e4f"),
  out("Successfully tagged aeroplane-svc_web-dep_1:latest"),
  out("Built image aeroplane-svc_web-dep_1"),
  out("Starting candidate container aeroplane-svc_web-dep_1"),
  out("Health check: GET / on port 3000, up to 60 s"),
];

/** The app's output, then the reason, after a failed health check. */
function afterStart(output: string[], reason: string): FailureLog {
  const header = output.length
    ? [out(`Last ${output.length} lines of output from aeroplane-svc_web-dep_1:`)]
    : [out("aeroplane-svc_web-dep_1 wrote no output")];
  return { reason, lines: [...built, ...header, ...output.map(out), err(reason)] };
}

const noAnswer =
  "The app did not answer HTTP on port 3000 within 60 s (last attempt: ECONNREFUSED)";

export const failureLogs = {
  portMismatch: afterStart(
    ["> app@1.0.0 start", "Server listening on port 8080"],
    noAnswer,
  ),
  portMismatchUrl: afterStart(["Ready on http://0.0.0.0:5173"], noAnswer),
  portMismatchBare: afterStart(["listening on :9000"], noAnswer),
  rightPortOtherServices: afterStart(
    ["Connecting to postgres on port 5432", "listening on 3000"],
    noAnswer,
  ),
  loopback: afterStart(["Server running at http://127.0.0.1:3000/"], noAnswer),
  silentNoAnswer: afterStart([], noAnswer),
  crash: afterStart(
    [
      "node:internal/modules/cjs/loader:1228",
      "  throw err;",
      "  ^",
      "Error: Cannot find module 'express'",
      "Require stack:",
      "- /app/server.js",
      "    at Module._resolveFilename (node:internal/modules/cjs/loader:1225:15)",
      "  code: 'MODULE_NOT_FOUND',",
      "Node.js v20.19.5",
    ],
    "The app exited with code 1 during the health check",
  ),
  oom: afterStart(
    ["Loading the model into memory", "Allocated 2048 MiB"],
    "The app exited with code 137 during the health check",
  ),
  missingDockerfile: {
    reason: 'No Dockerfile at "Dockerfile" in the repository',
    lines: [...cloned, err('No Dockerfile at "Dockerfile" in the repository')],
  },
  wrongRootDir: {
    reason: 'Root directory "web" does not exist in the repository',
    lines: [...cloned, err('Root directory "web" does not exist in the repository')],
  },
  buildStep: {
    reason: "Build failed: The command '/bin/sh -c npm ci' returned a non-zero code: 1",
    lines: [
      ...cloned,
      out("Building image aeroplane-svc_web-dep_1 from Dockerfile"),
      out("Step 1/5 : FROM aeroplane-host-node:20"),
      out(" ---> 2b1c0a9f8e7d"),
      out("Step 2/5 : COPY package.json ."),
      out(" ---> 1c2d3e4f5a6b"),
      out("Step 3/5 : RUN npm ci"),
      out(" ---> Running in 0a1b2c3d4e5f"),
      err("npm ERR! code EUSAGE"),
      err(
        "npm ERR! The `npm ci` command can only install with an existing package-lock.json",
      ),
      err(
        "npm ERR! A complete log of this run can be found in: /root/.npm/_logs/debug.log",
      ),
      err("Build failed: The command '/bin/sh -c npm ci' returned a non-zero code: 1"),
    ],
  },
  cloneMissingBranch: {
    reason: "Clone failed: Remote branch nope not found in upstream origin",
    lines: [
      out("Deployment queued (trigger: manual)"),
      out("Cloning git://127.0.0.1:9418/app.git at nope"),
      err("Cloning into '/tmp/aeroplane-x/repo'..."),
      err("warning: Could not find remote branch nope to clone."),
      err("fatal: Remote branch nope not found in upstream origin"),
      err("Clone failed: Remote branch nope not found in upstream origin"),
    ],
  },
  cloneMissingCommit: {
    reason: "Commit deadbee not found in git://127.0.0.1:9418/app.git (branch main)",
    lines: [
      out("Cloning git://127.0.0.1:9418/app.git at commit deadbee of main"),
      err("Commit deadbee not found in git://127.0.0.1:9418/app.git (branch main)"),
    ],
  },
  cloneAuth: {
    reason:
      "Clone failed: could not read Username for 'https://github.com': terminal prompts disabled",
    lines: [
      out("Cloning https://github.com/acme/private.git at main"),
      err("Cloning into '/tmp/aeroplane-x/repo'..."),
      err(
        "fatal: could not read Username for 'https://github.com': terminal prompts disabled",
      ),
      err(
        "Clone failed: could not read Username for 'https://github.com': terminal prompts disabled",
      ),
    ],
  },
  cloneUnreachable: {
    reason: "Clone failed: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused",
    lines: [
      out("Cloning git://127.0.0.1:1/app.git at main"),
      err("Cloning into '/tmp/aeroplane-x/repo'..."),
      err("fatal: unable to connect to 127.0.0.1:"),
      err("127.0.0.1[0: 127.0.0.1]: errno=Connection refused"),
      err("Clone failed: 127.0.0.1[0: 127.0.0.1]: errno=Connection refused"),
    ],
  },
  health404: {
    reason:
      "Health check failed: GET /healthz on port 3000 answered HTTP 404 (expected 200–399) for 60 s",
    lines: [
      ...built,
      out("Last 1 lines of output from aeroplane-svc_web-dep_1:"),
      out("listening on 3000"),
      err(
        "Health check failed: GET /healthz on port 3000 answered HTTP 404 (expected 200–399) for 60 s",
      ),
    ],
  },
  unknown: {
    reason: "Deployment failed: the flux capacitor overheated",
    lines: [...cloned, err("Deployment failed: the flux capacitor overheated")],
  },
} satisfies Record<string, FailureLog>;
