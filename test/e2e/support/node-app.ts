/**
 * Apps for end-to-end tests to deploy: Dockerfiles that run a script with
 * the host's node (the test host reaches no container registry), and a tiny
 * HTTP server that answers every request the same way.
 */
import { HOST_NODE_IMAGE } from "../../../scripts/host-node-image";

/**
 * A Dockerfile that copies `script` into /app and runs it with node and
 * `nodeFlags`. `run` adds a RUN step after the copy; `cmd` replaces the CMD.
 */
export function nodeDockerfile({
  script = "server.js",
  nodeFlags = [],
  run = "",
  cmd = "",
}: { script?: string; nodeFlags?: string[]; run?: string; cmd?: string } = {}): string {
  return [
    `FROM ${HOST_NODE_IMAGE}`,
    "WORKDIR /app",
    `COPY ${script} .`,
    ...(run ? [run] : []),
    cmd || `CMD ${JSON.stringify(["node", ...nodeFlags, script])}`,
  ].join("\n");
}

/**
 * An app that answers every request with `reply` on port 3000. `run` adds a
 * RUN step; `cmd` replaces the command. Unless `slowStop`, the app exits on
 * SIGTERM: node as PID 1 would otherwise ignore it, and every swap would wait
 * out the stop timeout.
 */
export function nodeApp(
  reply: string,
  {
    run = "",
    cmd = "",
    slowStop = false,
  }: { run?: string; cmd?: string; slowStop?: boolean } = {},
): Record<string, string> {
  const onTerm = slowStop ? "" : 'process.on("SIGTERM", () => process.exit(0));\n';
  return {
    Dockerfile: nodeDockerfile({ run, cmd }),
    "server.js":
      onTerm +
      `require("http").createServer((q, s) => s.end(${JSON.stringify(reply)}))` +
      `.listen(3000, () => console.log("listening on 3000"));\n`,
  };
}

/** A RUN step in exec form that runs `script` with node (there is no shell). */
export function runNode(script: string): string {
  return `RUN ["node", "-e", ${JSON.stringify(script)}]`;
}
