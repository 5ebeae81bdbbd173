/**
 * Fault: the control plane itself (`wrangler dev`, state persisted on disk)
 * is stopped with SIGTERM in the middle of a build and started again on the
 * same port. The runner must reconnect and finish the deployment, and an SSE
 * client that reconnects with Last-Event-ID must end up with every log line
 * exactly once, in order, as GET /logs has them.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import {
  answer,
  deploy,
  deployment,
  logLines,
  type LogLine,
} from "./support/deployments";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { readEvents, type SseEvent } from "./support/sse";
import { TestSystem } from "./support/system";
import { waitFor } from "./support/wait";

/** The build prints a numbered line every 80 ms for about 12 s. */
const LINES = 150;
const PRINT_SLOWLY = [
  "let i = 0;",
  "const tick = setInterval(() => {",
  "  console.log('step ' + ++i);",
  `  if (i >= ${LINES}) clearInterval(tick);`,
  "}, 80);",
].join(" ");

let system: TestSystem;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start();
  const runner = await system.registerRunner("restart");
  system.startRunner(runner.token);
  repo = await servedRepository("restart");
  await repo.commit(
    nodeApp("survived a restart", { run: runNode(PRINT_SLOWLY) }),
    "a build that takes a while",
  );
  ({ serviceId, hostPort } = await system.createService(
    { name: "steady", repoUrl: repo.url, runnerId: runner.id },
    { projectName: "restart" },
  ));
});

afterAll(async () => {
  await system?.stop();
  await repo?.stop();
});

/** Reads a stream into `events` until it ends or breaks; says how it ended. */
async function collect(
  stream: AsyncGenerator<SseEvent>,
  events: SseEvent[],
): Promise<"ended" | "broken"> {
  try {
    for await (const event of stream) events.push(event);
    return "ended";
  } catch {
    return "broken";
  }
}

/** The log lines an SSE client received, in the order it received them. */
function receivedLines(events: SseEvent[]): LogLine[] {
  return events.flatMap((event) => {
    if (event.event === "snapshot") return JSON.parse(event.data) as LogLine[];
    if (event.event === "log") return [JSON.parse(event.data) as LogLine];
    return [];
  });
}

describe("restarting the control plane mid-build", () => {
  it("finishes the deployment, and a client resuming with Last-Event-ID misses and repeats nothing", async () => {
    const id = await deploy(system, serviceId);
    const url = `${system.url}/api/deployments/${id}/stream`;

    // The first client reads until the control plane goes away under it.
    const before: SseEvent[] = [];
    const first = collect(readEvents(url, system.adminKey), before);
    await waitFor(
      "20 numbered lines on the stream",
      () => receivedLines(before).filter((l) => /^step \d+$/.test(l.line)).length >= 20,
      60_000,
      20,
    );
    await system.stopControlPlane("SIGTERM");
    await first;
    const numberedBefore = receivedLines(before).filter((l) => /^step \d+$/.test(l.line));
    // It really was mid-build: most of the build's lines were still to come.
    expect(numberedBefore.length).toBeLessThan(LINES / 2);

    await system.startControlPlane();

    // The client resumes from the id of the last event it got.
    const lastEventId = Number(before.filter((e) => e.id).at(-1)!.id);
    expect(lastEventId).toBeGreaterThan(0);
    const after: SseEvent[] = [];
    const second = await collect(
      readEvents(url, system.adminKey, {
        lastEventId,
        signal: AbortSignal.timeout(120_000),
      }),
      after,
    );
    expect(second).toBe("ended");
    const statuses = after
      .filter((e) => e.event === "status")
      .map((e) => JSON.parse(e.data).status);
    expect(statuses.at(-1)).toBe("running");

    expect((await deployment(system, id)).status).toBe("running");
    expect(await answer(hostPort)).toBe("survived a restart");

    // Every line exactly once across both connections, in order, as stored.
    const stored = await logLines(system, id);
    const received = [...receivedLines(before), ...receivedLines(after)];
    expect(received.map((l) => l.id)).toEqual(stored.map((l) => l.id));
    expect(received).toEqual(stored);
    const numbered = stored.map((l) => l.line).filter((l) => /^step \d+$/.test(l));
    expect(numbered).toEqual(Array.from({ length: LINES }, (_, i) => `step ${i + 1}`));
    // Every live line carried its own id as the event id.
    for (const event of [...before, ...after].filter((e) => e.event === "log")) {
      expect(Number(event.id)).toBe(JSON.parse(event.data).id);
    }

    // The query-string form resumes at the same place.
    const byQuery: SseEvent[] = [];
    await collect(
      readEvents(`${url}?lastEventId=${lastEventId}`, system.adminKey),
      byQuery,
    );
    expect(receivedLines(byQuery)).toEqual(stored.filter((l) => l.id > lastEventId));
  });
});
