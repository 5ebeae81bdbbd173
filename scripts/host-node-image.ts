/**
 * Builds a base image from this machine's own `node` binary and the shared
 * libraries it links, FROM scratch. It lets the example app and the tests
 * build with no container registry; a real app would use `FROM node:22-alpine`.
 */
import { execFileSync } from "node:child_process";
import Docker from "dockerode";
import { createReadStream, statSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { pack, type Pack } from "tar-stream";

export const HOST_NODE_IMAGE = "aeroplane/host-node:local";

const DOCKERFILE = `FROM scratch
COPY . /
ENV PATH=/usr/local/bin:/usr/bin:/bin
CMD ["node"]
`;

/** The node binary and every library `ldd` says it loads, as absolute paths. */
function nodeFiles(): string[] {
  const ldd = execFileSync("ldd", [process.execPath], { encoding: "utf8" });
  const libraries = [...ldd.matchAll(/(\/\S+)\s+\(0x/g)].map((m) => m[1]);
  return [process.execPath, ...new Set(libraries)];
}

/** Builds {@link HOST_NODE_IMAGE} unless it exists already. */
export async function ensureHostNodeImage(docker = new Docker()): Promise<string> {
  try {
    await docker.getImage(HOST_NODE_IMAGE).inspect();
    return HOST_NODE_IMAGE;
  } catch {
    // Not built yet.
  }
  const context = pack();
  void writeContext(context, nodeFiles());
  const stream = await docker.buildImage(context as unknown as NodeJS.ReadableStream, {
    t: HOST_NODE_IMAGE,
    labels: { "aeroplane.managed": "true", "aeroplane.role": "base" },
  });
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (error, events) => {
      const failed = (events ?? []).find((e: { error?: string }) => e.error);
      if (error || failed) reject(error ?? new Error(failed.error));
      else resolve();
    });
  });
  return HOST_NODE_IMAGE;
}

/** Streams the build context: the files at their own paths, and a Dockerfile. */
async function writeContext(tar: Pack, files: string[]): Promise<void> {
  try {
    tar.entry({ name: "Dockerfile" }, DOCKERFILE);
    tar.entry({ name: "tmp", type: "directory", mode: 0o1777 });
    for (const file of files) {
      const { size, mode } = statSync(file);
      await pipeline(
        createReadStream(file),
        tar.entry({ name: file.slice(1), size, mode }),
      );
    }
    // Put node on PATH wherever this machine keeps it.
    if (process.execPath !== "/usr/local/bin/node") {
      tar.entry({
        name: "usr/local/bin/node",
        type: "symlink",
        linkname: process.execPath,
      });
    }
    tar.finalize();
  } catch (error) {
    tar.destroy(error as Error);
  }
}
