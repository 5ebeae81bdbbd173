/**
 * The runner's one way to reach Docker: a small client over dockerode.
 *
 * Everything the runner creates carries `aeroplane.*` labels so that cleanup
 * (and an operator with `docker ps --filter label=aeroplane.managed`) can find
 * it. Statuses that only mean "already done" — 304 on stop, 404 on remove —
 * are treated as success here, once, instead of at every call site.
 */
import Docker from "dockerode";
import { createInterface } from "node:readline";
import { PassThrough, type Readable } from "node:stream";
import { packBuildContext } from "./build-context.js";
import { BuildProgress, type StepImage } from "./build-progress.js";
import { createLogger, errorMessage } from "./logger.js";

const log = createLogger("runner:docker");

export type ContainerRole = "candidate" | "stable";

/** The label keys the runner sets, and reads back to reconcile and clean up. */
export const labelKeys = {
  managed: "aeroplane.managed",
  serviceId: "aeroplane.service-id",
  deploymentId: "aeroplane.deployment-id",
  role: "aeroplane.role",
  /**
   * Which runner made it. Several runners (or test suites) may share one
   * Docker engine; a runner only ever reconciles what carries its own mark.
   */
  runner: "aeroplane.runner",
  /** The commit an image was built from, so a redeploy can report it. */
  commitSha: "aeroplane.commit-sha",
} as const;

/** Who made a container or image beyond its deployment: optional extras. */
export interface LabelExtras {
  /** The runner's mark (see `labelKeys.runner`). */
  runner?: string;
  commitSha?: string;
}

/** The labels every container and image of a deployment carries. */
export function aeroplaneLabels(
  serviceId: string,
  deploymentId: string,
  role: ContainerRole,
  extras: LabelExtras = {},
): Record<string, string> {
  const labels: Record<string, string> = {
    [labelKeys.managed]: "true",
    [labelKeys.serviceId]: serviceId,
    [labelKeys.deploymentId]: deploymentId,
    [labelKeys.role]: role,
  };
  if (extras.runner) labels[labelKeys.runner] = extras.runner;
  if (extras.commitSha) labels[labelKeys.commitSha] = extras.commitSha;
  return labels;
}

export type OutputStream = "stdout" | "stderr";

export interface BuildOptions {
  contextDir: string;
  /** Relative to `contextDir`. */
  dockerfile: string;
  tag: string;
  labels: Record<string, string>;
  /** Receives Docker's build output, one line at a time. */
  onLine(line: string, stream: OutputStream): void;
  /** Receives each finished step's image, also when the build fails or aborts. */
  onStep?(step: StepImage): void;
  signal?: AbortSignal;
}

export interface ContainerSpec {
  name: string;
  image: string;
  env: Record<string, string>;
  labels: Record<string, string>;
  /** Publish `containerPort` on 0.0.0.0:`hostPort`; omitted = not published. */
  publish?: { hostPort: number; containerPort: number };
}

export interface ContainerState {
  id: string;
  name: string;
  /** The image reference the container was created from (its tag). */
  image: string;
  /** The id of that image, `sha256:…`. */
  imageId: string;
  running: boolean;
  exitCode: number;
  /** `unless-stopped` once a live container may outlive the runner; else "no". */
  restartPolicy: string;
  /** Address on the default bridge network; null when not running. */
  ipAddress: string | null;
  /** The host ports it is configured to publish (TCP), running or not. */
  hostPorts: number[];
  labels: Record<string, string>;
}

export interface ContainerSummary {
  id: string;
  names: string[];
  image: string;
  /** The id of the container's image, `sha256:…`. */
  imageId: string;
  state: string;
  /** The host TCP ports it publishes now (only a running container has any). */
  publishedPorts: number[];
  labels: Record<string, string>;
}

export interface ImageSummary {
  id: string;
  tags: string[];
  labels: Record<string, string>;
}

export interface ImageDetails extends ImageSummary {
  /** When it was built, in ms since the epoch (Docker keeps nanoseconds). */
  createdAt: number;
  /** The image it was built on, by the classic builder; null for pulled ones. */
  parentId: string | null;
}

/** A build the daemon ran and reported as failed; `message` is Docker's text. */
export class BuildFailedError extends Error {
  override name = "BuildFailedError";
}

export interface DockerClient {
  /** Resolves when the engine answers; rejects with why it does not. */
  ping(): Promise<void>;
  buildImage(options: BuildOptions): Promise<void>;
  /** Creates and starts a container; returns its id. */
  createAndStart(spec: ContainerSpec): Promise<string>;
  start(nameOrId: string): Promise<void>;
  /** null when there is no such container. */
  inspect(nameOrId: string): Promise<ContainerState | null>;
  stop(nameOrId: string, timeoutSeconds?: number): Promise<void>;
  /** Force-removes a container; absent is fine. True when one was removed. */
  remove(nameOrId: string): Promise<boolean>;
  rename(nameOrId: string, newName: string): Promise<void>;
  /** Lets a container outlive the runner and reboots: restart `unless-stopped`. */
  keepRunning(nameOrId: string): Promise<void>;
  /** null when there is no such image. */
  inspectImage(tagOrId: string): Promise<ImageDetails | null>;
  /**
   * Removes an image by tag or id (a tag of an image with several only loses
   * that tag); absent is fine. True when one was removed. Docker also deletes
   * the untagged parents nothing else needs unless `prune` is false.
   */
  removeImage(tagOrId: string, options?: { prune?: boolean }): Promise<boolean>;
  /** Every container (running or not) carrying all of `labels`. */
  listContainers(labels: Record<string, string>): Promise<ContainerSummary[]>;
  listImages(labels: Record<string, string>): Promise<ImageSummary[]>;
  /** The last `lines` lines a container wrote, stdout and stderr merged. */
  logsTail(nameOrId: string, lines: number): Promise<string[]>;
  /**
   * Follows a container's output: its last `tail` lines, then new ones as it
   * writes them, stdout and stderr apart, each with Docker's timestamp.
   * Resolves when the log ends (the container stopped) or `signal` aborts.
   */
  followLogs(
    nameOrId: string,
    options: { tail: number; signal: AbortSignal; onLine: (line: LogLine) => void },
  ): Promise<void>;
}

/** One line of a container's output. */
export interface LogLine {
  line: string;
  stream: "stdout" | "stderr";
  /** When Docker received it, ISO 8601. */
  at: string;
}

/** A Docker API call failed; `status` is its HTTP status (409: a conflict). */
export class DockerError extends Error {
  override name = "DockerError";

  constructor(
    message: string,
    readonly status: number | undefined,
  ) {
    super(message);
  }
}

/** The HTTP status of a dockerode error, if it carries one. */
function statusOf(error: unknown): number | undefined {
  const status = (error as { statusCode?: unknown } | null)?.statusCode;
  return typeof status === "number" ? status : undefined;
}

/** Docker's own message without dockerode's "(HTTP code 404) …" prefix. */
function dockerMessage(error: unknown): string {
  const json = (error as { json?: { message?: unknown } } | null)?.json;
  if (typeof json?.message === "string") return json.message;
  return errorMessage(error);
}

function labelFilter(labels: Record<string, string>): string {
  const label = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return JSON.stringify({ label });
}

/**
 * Connects to the Docker engine at `socketPath`, or wherever DOCKER_HOST
 * points (dockerode's default: /var/run/docker.sock).
 */
export function createDockerClient(options: { socketPath?: string } = {}): DockerClient {
  const docker = options.socketPath
    ? new Docker({ socketPath: options.socketPath })
    : new Docker();

  /** Runs `action`; false when it failed with one of `statuses` (nothing to do). */
  async function ignoring(
    statuses: number[],
    action: () => Promise<unknown>,
  ): Promise<boolean> {
    try {
      await action();
      return true;
    } catch (error) {
      const status = statusOf(error);
      if (!statuses.includes(status ?? 0))
        throw new DockerError(dockerMessage(error), status);
      return false;
    }
  }

  return {
    async ping() {
      try {
        // A wedged daemon accepts the connection and never answers. dockerode
        // takes an abortSignal here; @types/dockerode does not know it yet.
        const ping = docker.ping.bind(docker) as (options: object) => Promise<unknown>;
        await ping({ abortSignal: AbortSignal.timeout(5_000) });
      } catch (error) {
        throw new Error(explainUnreachable(error, options.socketPath));
      }
    },

    buildImage: (options) => buildImage(docker, options),

    async createAndStart(spec) {
      const port = spec.publish && `${spec.publish.containerPort}/tcp`;
      log.info("Starting container…", { name: spec.name, image: spec.image });
      const container = await docker
        .createContainer({
          name: spec.name,
          Image: spec.image,
          Env: Object.entries(spec.env).map(([key, value]) => `${key}=${value}`),
          Labels: spec.labels,
          ExposedPorts: port ? { [port]: {} } : undefined,
          HostConfig: {
            PortBindings: port
              ? {
                  [port]: [
                    { HostIp: "0.0.0.0", HostPort: String(spec.publish!.hostPort) },
                  ],
                }
              : undefined,
          },
        })
        .catch((error) => {
          throw new Error(dockerMessage(error));
        });
      try {
        await container.start();
      } catch (error) {
        // A container that never started (port taken, bad entrypoint) is
        // only debris; remove it so the name is free for the next attempt.
        await ignoring([404, 409], () => container.remove({ force: true }));
        throw new Error(dockerMessage(error));
      }
      log.info(`Started container ${container.id}`, { name: spec.name });
      return container.id;
    },

    async start(nameOrId) {
      log.info("Starting container…", { name: nameOrId });
      // 304: already running.
      await ignoring([304], () => docker.getContainer(nameOrId).start());
      log.info(`Started container ${nameOrId}`);
    },

    async inspect(nameOrId) {
      let info: Docker.ContainerInspectInfo;
      try {
        info = await docker.getContainer(nameOrId).inspect();
      } catch (error) {
        if (statusOf(error) === 404) return null;
        throw new Error(dockerMessage(error));
      }
      const networks = info.NetworkSettings.Networks ?? {};
      const network = networks.bridge ?? Object.values(networks)[0];
      const ipAddress = network?.IPAddress || null;
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ""),
        image: info.Config.Image,
        imageId: info.Image,
        running: info.State.Running,
        exitCode: info.State.ExitCode,
        restartPolicy: info.HostConfig.RestartPolicy?.Name || "no",
        ipAddress: info.State.Running ? ipAddress : null,
        hostPorts: tcpHostPorts(info.HostConfig.PortBindings),
        labels: info.Config.Labels ?? {},
      };
    },

    async stop(nameOrId, timeoutSeconds = 10) {
      log.debug("Stopping container…", { name: nameOrId });
      // 304: already stopped; 404: already gone.
      await ignoring([304, 404], () =>
        docker.getContainer(nameOrId).stop({ t: timeoutSeconds }),
      );
    },

    async remove(nameOrId) {
      log.debug("Removing container…", { name: nameOrId });
      // 404: already gone; 409: a removal is already in progress.
      return ignoring([404, 409], () =>
        docker.getContainer(nameOrId).remove({ force: true, v: true }),
      );
    },

    async rename(nameOrId, newName) {
      log.debug("Renaming container…", { name: nameOrId, to: newName });
      await ignoring([], () => docker.getContainer(nameOrId).rename({ name: newName }));
    },

    async keepRunning(nameOrId) {
      log.debug("Setting restart policy unless-stopped…", { name: nameOrId });
      await ignoring([], () =>
        docker
          .getContainer(nameOrId)
          .update({ RestartPolicy: { Name: "unless-stopped" } }),
      );
    },

    async inspectImage(tagOrId) {
      let info: Docker.ImageInspectInfo;
      try {
        info = await docker.getImage(tagOrId).inspect();
      } catch (error) {
        if (statusOf(error) === 404) return null;
        throw new Error(dockerMessage(error));
      }
      return {
        id: info.Id,
        tags: (info.RepoTags ?? []).filter((tag) => tag !== "<none>:<none>"),
        labels: info.Config?.Labels ?? {},
        createdAt: Date.parse(info.Created),
        parentId: info.Parent || null,
      };
    },

    async removeImage(tagOrId, { prune = true } = {}) {
      log.debug("Removing image…", { image: tagOrId });
      return ignoring([404], () => docker.getImage(tagOrId).remove({ noprune: !prune }));
    },

    async listContainers(labels) {
      const list = await docker.listContainers({
        all: true,
        filters: labelFilter(labels),
      });
      return list.map((item) => ({
        id: item.Id,
        names: item.Names.map((name) => name.replace(/^\//, "")),
        image: item.Image,
        imageId: item.ImageID,
        state: item.State,
        publishedPorts: [
          ...new Set(
            (item.Ports ?? [])
              .filter((port) => port.Type === "tcp" && port.PublicPort)
              .map((port) => port.PublicPort),
          ),
        ],
        labels: item.Labels ?? {},
      }));
    },

    async listImages(labels) {
      const list = await docker.listImages({ filters: labelFilter(labels) });
      return list.map((item) => ({
        id: item.Id,
        tags: item.RepoTags ?? [],
        labels: item.Labels ?? {},
      }));
    },

    async logsTail(nameOrId, lines) {
      const output = await docker
        .getContainer(nameOrId)
        .logs({ stdout: true, stderr: true, follow: false, tail: lines });
      return splitLines(demultiplex(output)).slice(-lines);
    },

    async followLogs(nameOrId, { tail, signal, onLine }) {
      const output = (await docker.getContainer(nameOrId).logs({
        stdout: true,
        stderr: true,
        follow: true,
        timestamps: true,
        tail,
        abortSignal: signal,
      })) as unknown as Readable;
      const streams = { stdout: new PassThrough(), stderr: new PassThrough() };
      docker.modem.demuxStream(output, streams.stdout, streams.stderr);
      output.on("end", () => {
        streams.stdout.end();
        streams.stderr.end();
      });
      output.on("error", () => {
        streams.stdout.end();
        streams.stderr.end();
      });
      await Promise.all(
        (["stdout", "stderr"] as const).map(async (stream) => {
          for await (const raw of createInterface({
            input: streams[stream],
            crlfDelay: Infinity,
          })) {
            // "2026-06-10T08:47:00.123456789Z the line": Docker's timestamp first.
            const space = raw.indexOf(" ");
            const stamp = new Date(raw.slice(0, space));
            const at = Number.isNaN(stamp.getTime()) ? new Date() : stamp;
            onLine({ line: raw.slice(space + 1), stream, at: at.toISOString() });
          }
        }),
      );
    },
  };
}

/** The host ports of `{"3000/tcp": [{HostPort: "20000"}]}`-shaped bindings. */
function tcpHostPorts(bindings: unknown): number[] {
  const ports = new Set<number>();
  const entries = Object.entries((bindings ?? {}) as Record<string, unknown>);
  for (const [containerPort, hosts] of entries) {
    if (!containerPort.endsWith("/tcp") || !Array.isArray(hosts)) continue;
    for (const host of hosts as { HostPort?: string }[]) {
      const port = Number(host?.HostPort);
      if (Number.isInteger(port) && port > 0) ports.add(port);
    }
  }
  return [...ports];
}

/** Why Docker cannot be reached, and what the operator can do about it. */
function explainUnreachable(error: unknown, socketPath: string | undefined): string {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const where = socketPath ?? process.env.DOCKER_HOST ?? "/var/run/docker.sock";
  if (code === "EACCES") {
    return (
      `Docker is not reachable: permission denied on ${where}. Run the runner as a ` +
      `user in the docker group, or fix the socket's permissions`
    );
  }
  if (code === "ENOENT" || code === "ECONNREFUSED") {
    return (
      `Docker is not reachable at ${where} (${code}). Start the Docker daemon ` +
      `(e.g. sudo systemctl start docker), or pass --docker-socket with its socket path`
    );
  }
  return (
    `Docker is not reachable at ${where}: ${dockerMessage(error)}. Check that dockerd ` +
    `is running and that ${where} is readable by the runner`
  );
}

/**
 * Docker multiplexes a non-TTY container's stdout and stderr into frames of
 * an 8-byte header (stream, 0, 0, 0, big-endian size) and the payload.
 */
function demultiplex(output: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= output.length) {
    const size = output.readUInt32BE(offset + 4);
    parts.push(output.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString("utf8");
}

function splitLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .filter((line, index, all) => line !== "" || index < all.length - 1);
}

async function buildImage(docker: Docker, options: BuildOptions): Promise<void> {
  const { signal } = options;
  signal?.throwIfAborted();
  const context = await packBuildContext(options.contextDir, options.dockerfile);
  log.info("Building image…", { tag: options.tag });

  let response: Readable;
  try {
    // tar-fs packs into a streamx stream: pipeable like a Node stream, but
    // typed apart from one.
    const tarStream = context as unknown as NodeJS.ReadableStream;
    response = (await docker.buildImage(tarStream, {
      t: options.tag,
      dockerfile: options.dockerfile,
      labels: options.labels,
      // Remove intermediate containers even when a step fails.
      rm: true,
      forcerm: true,
      abortSignal: signal,
    })) as unknown as Readable;
  } catch (error) {
    context.destroy();
    signal?.throwIfAborted();
    throw new Error(dockerMessage(error));
  }

  // Closing the connection is what makes the classic builder stop the
  // running step; destroy the response as soon as the caller aborts.
  const onAbort = () => response.destroy(signal?.reason as Error);
  signal?.addEventListener("abort", onAbort, { once: true });

  const progress = new BuildProgress(options.onLine, options.onStep);
  response.setEncoding("utf8");

  try {
    for await (const chunk of response) progress.push(chunk as string);
  } catch (error) {
    progress.abandon();
    signal?.throwIfAborted();
    throw new Error(
      `Lost the connection to Docker during the build: ${errorMessage(error)}`,
    );
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
  const failure = progress.end();
  signal?.throwIfAborted();
  if (failure !== null) throw new BuildFailedError(failure);
  log.info("Built image", { tag: options.tag });
}
