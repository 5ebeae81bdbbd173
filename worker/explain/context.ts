/**
 * What an explanation is made from: the failed deployment's service
 * settings, its failure reason and its log. Everything else in this folder
 * works on this plain value, so rules and prompts are testable without D1.
 */
import type { LogLine } from "../../schema/api";
import { deploymentLog } from "../deployments";
import { serviceEnv, type DeploymentRow, type ServiceRow } from "../lookups";

/** The settings a failure is usually about; none of them is a secret. */
export type ServiceSettings = {
  serviceId: string;
  repoUrl: string;
  branch: string;
  rootDir: string;
  dockerfilePath: string;
  internalPort: number;
  healthCheckPath: string;
};

export type LogEntry = Pick<LogLine, "id" | "line" | "stream">;

export type FailureContext = {
  deploymentId: string;
  commitSha: string | null;
  settings: ServiceSettings;
  /** The reason the deployment recorded; the log's last line says the same. */
  failureReason: string | null;
  /** The whole log, oldest first. */
  lines: LogEntry[];
};

/** Everything a failed deployment left behind, plus its service's secrets. */
export async function loadFailureContext(
  env: Env,
  deployment: DeploymentRow,
  service: ServiceRow,
): Promise<{ context: FailureContext; secrets: Record<string, string> }> {
  // TODO(perf): the log object can only read forwards, so this reads the
  // whole log to get at its tail; add a "last N lines" read to it once logs
  // of tens of thousands of lines make explanations slow.
  const [lines, secrets] = await Promise.all([
    deploymentLog(env, deployment.id).read(0),
    serviceEnv(env, service),
  ]);
  const context: FailureContext = {
    deploymentId: deployment.id,
    commitSha: deployment.commitSha,
    settings: {
      serviceId: service.id,
      repoUrl: service.repoUrl,
      branch: service.branch,
      rootDir: service.rootDir,
      dockerfilePath: service.dockerfilePath,
      internalPort: service.internalPort,
      healthCheckPath: service.healthCheckPath,
    },
    failureReason: deployment.failureReason,
    lines: lines.map(({ id, line, stream }) => ({ id, line, stream })),
  };
  return { context, secrets };
}
