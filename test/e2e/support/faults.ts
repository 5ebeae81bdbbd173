/**
 * What the fault tests share beyond deploying: a server that hangs a clone,
 * overlap counting, and a watch that records every status a service's
 * deployments were seen in, so a test can prove what never happened (two
 * builds at once, a status flipping back) from observations alone.
 */
import net from "node:net";
import { serviceDeployments, TERMINAL, type Deployment } from "./deployments";
import type { TestSystem } from "./system";
import { sleep } from "./wait";

/** The largest number of intervals that share one instant (ends are exclusive). */
export function maxOverlap(intervals: Array<[number, number]>): number {
  const edges = intervals.flatMap(([start, end]) => [
    [start, 1],
    [end, -1],
  ]);
  // At one instant an end comes before a start: [a, b) and [b, c) do not overlap.
  edges.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let open = 0;
  let most = 0;
  for (const [, delta] of edges) {
    open += delta;
    most = Math.max(most, open);
  }
  return most;
}

/**
 * A TCP server that accepts connections and never says a word: a git://
 * clone from it hangs until it is killed.
 */
export async function silentServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** One poll's view of one deployment: its status between `sentAt` and `receivedAt`. */
export type Observation = { status: string; sentAt: number; receivedAt: number };

/**
 * Polls the deployment lists of some services and records what it saw.
 *
 * One list is one SQL query, so two deployments of a service seen `building`
 * in one answer were building together. Across services the answers are not
 * one snapshot; but a deployment seen building in two answers was building
 * for the whole time between them (it never returns to `building`), which
 * gives intervals that are certain and can be compared.
 */
export class StatusWatch {
  readonly seen = new Map<string, Observation[]>();
  /** Answers that listed more than one deployment of a service as building. */
  readonly doubleBuilds: Array<{ serviceId: string; ids: string[] }> = [];
  readonly errors: unknown[] = [];
  rounds = 0;
  #stopped = false;
  #loop: Promise<void>;

  constructor(
    readonly system: TestSystem,
    readonly serviceIds: string[],
    readonly intervalMs = 100,
  ) {
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#loop;
  }

  /** The distinct statuses a deployment went through, in the order seen. */
  path(deploymentId: string): string[] {
    const statuses: string[] = [];
    for (const { status } of this.seen.get(deploymentId) ?? []) {
      if (statuses.at(-1) !== status) statuses.push(status);
    }
    return statuses;
  }

  /** Deployments whose observed statuses were not a forward-only path. */
  flips(): Array<{ id: string; path: string[] }> {
    const order = ["queued", "building", "terminal"];
    const rank = (s: string) => order.indexOf(TERMINAL.has(s) ? "terminal" : s);
    const flips: Array<{ id: string; path: string[] }> = [];
    for (const id of this.seen.keys()) {
      const path = this.path(id);
      const terminals = path.filter((s) => TERMINAL.has(s));
      const backwards = path.some((s, i) => i > 0 && rank(s) < rank(path[i - 1]));
      // running → superseded is the one change allowed between final states.
      const finalOk =
        terminals.length <= 1 ||
        (terminals.length === 2 &&
          terminals[0] === "running" &&
          terminals[1] === "superseded");
      if (backwards || !finalOk) flips.push({ id, path });
    }
    return flips;
  }

  /** [first answer seen building received, last answer seen building sent]. */
  certainBuildingIntervals(): Array<[number, number]> {
    const intervals: Array<[number, number]> = [];
    for (const observations of this.seen.values()) {
      const building = observations.filter((o) => o.status === "building");
      if (building.length < 2) continue;
      const start = building[0].receivedAt;
      const end = building[building.length - 1].sentAt;
      if (end > start) intervals.push([start, end]);
    }
    return intervals;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      await Promise.all(
        this.serviceIds.map((serviceId) =>
          this.#poll(serviceId).catch((error) => this.errors.push(error)),
        ),
      );
      this.rounds += 1;
      await sleep(this.intervalMs);
    }
  }

  /** Records one answer for every deployment of the service. */
  async #poll(serviceId: string): Promise<void> {
    const sentAt = Date.now();
    const deployments = await serviceDeployments(this.system, serviceId);
    const receivedAt = Date.now();
    const building: string[] = [];
    for (const d of deployments) {
      const list = this.seen.get(d.id) ?? [];
      list.push({ status: d.status, sentAt, receivedAt });
      this.seen.set(d.id, list);
      if (d.status === "building") building.push(d.id);
    }
    if (building.length > 1) this.doubleBuilds.push({ serviceId, ids: building });
  }
}

/** The [startedAt, finishedAt] of deployments that started, in epoch ms. */
export function recordedIntervals(deployments: Deployment[]): Array<[number, number]> {
  return deployments
    .filter((d) => d.startedAt !== null)
    .map((d) => [
      Date.parse(d.startedAt!),
      Date.parse(d.finishedAt ?? new Date().toISOString()),
    ]);
}
