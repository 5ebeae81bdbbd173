/**
 * Is the service's host port free for its next `-stable` container?
 *
 * Docker only finds out at the swap, when it binds the port — after a full
 * clone, build and health check. Asking first lets a deployment fail in a
 * second and say who holds the port.
 */
import net from "node:net";
import type { DockerClient } from "./docker.js";
import { containerNames } from "./swap.js";

/**
 * Who holds `hostPort` other than the service's own live (or parked)
 * container: a container's name, "another process", or null when the port
 * is free or the service itself holds it.
 */
export async function hostPortHolder(
  docker: DockerClient,
  serviceId: string,
  hostPort: number,
): Promise<string | null> {
  const { stable, previous } = containerNames(serviceId, "");
  for (const name of [stable, previous]) {
    const own = await docker.inspect(name);
    // The swap stops it before the new one binds the port.
    if (own?.running && own.hostPorts.includes(hostPort)) return null;
  }

  // With Docker's userland proxy off, a published port holds no socket the
  // bind below would run into, yet Docker still refuses to publish it twice.
  const publisher = (await docker.listContainers({})).find(
    (container) =>
      container.state === "running" && container.publishedPorts.includes(hostPort),
  );
  if (publisher) return publisher.names[0] ?? publisher.id.slice(0, 12);

  return (await canBind(hostPort)) ? null : "another process";
}

/**
 * Whether a listening socket could bind 0.0.0.0:`port`, where Docker
 * publishes. Only "in use" counts as no: a port this user may not bind
 * (below 1024) can still be Docker's to bind.
 */
function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", (error: NodeJS.ErrnoException) =>
      resolve(error.code !== "EADDRINUSE"),
    );
    server.listen({ port, host: "0.0.0.0", exclusive: true }, () =>
      server.close(() => resolve(true)),
    );
  });
}
