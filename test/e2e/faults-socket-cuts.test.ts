/**
 * Fault: the runner's control socket is cut again and again in the middle of
 * a build that streams 20,000 lines. The runner talks to the real Worker
 * through a TCP proxy that resets every live connection on demand; the
 * stored log must still hold every line exactly once, in order.
 */
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureHostNodeImage } from "../../scripts/host-node-image";
import { answer, deploy, deployment, logLines, waitForLine } from "./support/deployments";
import { servedRepository, type ServedRepository } from "./support/git-server";
import { nodeApp, runNode } from "./support/node-app";
import { TestSystem } from "./support/system";
import { TcpProxy } from "./support/tcp-proxy";
import { sleep } from "./support/wait";

const LINES = 20_000;
const CUTS = 5;
/** A cut comes each time this many more numbered lines are stored. */
const LINES_BETWEEN_CUTS = 2_500;
/**
 * The build prints its lines 500 at a time every 300 ms, about 12 s in all,
 * so the cuts (and the reconnects' backoff) fall inside the stream rather
 * than after it.
 */
const PRINT_LINES = [
  "let i = 0;",
  "const tick = setInterval(() => {",
  `  for (let k = 0; k < 500 && i < ${LINES}; k++) console.log('line ' + ++i);`,
  `  if (i >= ${LINES}) clearInterval(tick);`,
  "}, 300);",
].join(" ");

let system: TestSystem;
let proxy: TcpProxy;
let repo: ServedRepository;
let serviceId: string;
let hostPort: number;

beforeAll(async () => {
  await ensureHostNodeImage(new Docker());
  system = await TestSystem.start();
  proxy = await TcpProxy.start({ port: system.controlPlane.options.port });
  const runner = await system.registerRunner("socket-cuts");
  system.startRunner(runner.token, [], {}, { url: proxy.url });

  repo = await servedRepository("socket-cuts");
  await repo.commit(
    nodeApp("cuts survived", {
      run: runNode(PRINT_LINES),
    }),
    "a build that prints 20,000 numbered lines",
  );
  ({ serviceId, hostPort } = await system.createService(
    { name: "loud", repoUrl: repo.url, runnerId: runner.id },
    { projectName: "socket-cuts" },
  ));
  await proxy.waitForConnections(1);
});

afterAll(async () => {
  await system?.stop();
  await proxy?.close();
  await repo?.stop();
});

/** What is wrong with a sequence of numbered lines, if anything. */
function numberedLineProblems(lines: string[]) {
  const numbers = lines.map((line) => Number(line.slice("line ".length)));
  const counts = new Map<number, number>();
  for (const n of numbers) counts.set(n, (counts.get(n) ?? 0) + 1);
  const missing: number[] = [];
  for (let n = 1; n <= LINES; n++) if (!counts.has(n)) missing.push(n);
  return {
    count: numbers.length,
    duplicated: [...counts]
      .filter(([, c]) => c > 1)
      .map(([n]) => n)
      .slice(0, 20),
    missing: missing.slice(0, 20),
    firstOutOfOrder: numbers.findIndex((n, i) => i > 0 && n <= numbers[i - 1]),
  };
}

describe("a runner whose socket is cut 5 times mid-build", () => {
  it("stores every one of 20,000 lines exactly once, in order, and goes live", async () => {
    const id = await deploy(system, serviceId);
    await waitForLine(system, id, /^Building image /, 60_000);

    // Cut each time another stretch of lines has been stored, and note
    // where the deployment and the stored log stood at that moment.
    const cuts: Array<{ at: number; status: string; storedLines: number; cut: number }> =
      [];
    let lastId = 0;
    let stored = 0;
    let storedAtLastCut = 0;
    const deadline = Date.now() + 90_000;
    while (cuts.length < CUTS) {
      expect(Date.now(), `cut ${cuts.length + 1} never came`).toBeLessThan(deadline);
      const { logs } = await system.ok(
        "GET",
        `/api/deployments/${id}/logs?after=${lastId}`,
      );
      lastId = logs.at(-1)?.id ?? lastId;
      stored += logs.filter((l: { line: string }) => /^line \d+$/.test(l.line)).length;
      if (proxy.live === 0 || stored - storedAtLastCut < LINES_BETWEEN_CUTS) {
        await sleep(50);
        continue;
      }
      const at = Date.now();
      const cut = proxy.cutAll();
      storedAtLastCut = stored;
      cuts.push({
        at,
        status: (await deployment(system, id)).status,
        storedLines: stored,
        cut,
      });
    }

    const final = await system.waitForDeployment(
      id,
      (d) => d.status !== "building",
      120_000,
    );
    expect(final.status).toBe("running");

    // Every cut hit a live socket while the deployment was building and the
    // log was still incomplete.
    for (const cut of cuts) {
      expect(cut).toMatchObject({ status: "building", cut: 1 });
      expect(cut.storedLines).toBeLessThan(LINES);
    }
    expect(Date.parse(final.finishedAt)).toBeGreaterThan(cuts[CUTS - 1].at);
    // The runner came back after each cut.
    expect(proxy.connections).toBeGreaterThanOrEqual(CUTS + 1);

    const logs = await logLines(system, id);
    const ids = logs.map((l) => l.id);
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    const numbered = logs.map((l) => l.line).filter((line) => /^line \d+$/.test(line));
    expect(numberedLineProblems(numbered)).toEqual({
      count: LINES,
      duplicated: [],
      missing: [],
      firstOutOfOrder: -1,
    });
    // Nothing else the runner wrote was lost or repeated either.
    const lines = logs.map((l) => l.line);
    expect(lines.filter((l) => l.startsWith(`Cloning ${repo.url} `))).toHaveLength(1);
    expect(lines.filter((l) => /^Built image /.test(l))).toHaveLength(1);
    expect(await answer(hostPort)).toBe("cuts survived");
  });
});
