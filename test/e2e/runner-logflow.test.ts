/**
 * Log lines under load: a real build whose RUN step prints 20,000 lines goes
 * through the agent to a control plane that stores lines by seq and acks
 * them the way the Worker does, while the socket is cut three times. The
 * stored log must hold every seq once, in order, with the build's lines in
 * the order the build printed them; the outbox's own cost is measured.
 */
import { describe, expect, it } from "vitest";
import type { RunnerFrame } from "../../schema/protocol.js";
import { Agent } from "../../runner/agent.js";
import { ControlConnection } from "../../runner/connection.js";
import { Outbox } from "../../runner/outbox.js";
import { baseImage } from "./support/docker-fixtures.js";
import { client, newService, useRunnerFixtures } from "./support/runner-fixtures.js";
import { ScriptedControlPlane } from "./support/scripted-control-plane.js";

useRunnerFixtures();

const buildLines = 20_000;

/** Adds up the time spent in each Outbox method, for the report below. */
function timeOutbox(): Record<string, { calls: number; ms: number }> {
  const spent: Record<string, { calls: number; ms: number }> = {};
  const proto = Outbox.prototype as unknown as Record<
    string,
    (...args: unknown[]) => unknown
  >;
  for (const name of ["append", "drain", "ackLines", "unsentLines", "rewind"]) {
    const original = proto[name];
    const total = (spent[name] = { calls: 0, ms: 0 });
    proto[name] = function (this: unknown, ...args: unknown[]) {
      const started = performance.now();
      try {
        return original.apply(this, args);
      } finally {
        total.calls += 1;
        total.ms += performance.now() - started;
      }
    };
  }
  return spent;
}

describe("log lines under a 20,000-line build", () => {
  it("arrive once each and in order across three cut connections", async ({
    onTestFinished,
  }) => {
    const spent = timeOutbox();
    const service = await newService();
    const marker = `run ${service.serviceId}`;
    await service.repo.commit(
      {
        Dockerfile: [
          `FROM ${baseImage}`,
          `RUN ["node", "-e", "console.log('${marker}'); ` +
            `for (let i = 1; i <= ${buildLines}; i++) console.log('build line ' + i)"]`,
          `CMD ["node", "-e", "require('http').createServer((q, s) => s.end('ok')).listen(3000); ` +
            `process.on('SIGTERM', () => process.exit(0))"]`,
        ].join("\n"),
      },
      "a loud build",
    );

    // The control plane stores by seq (idempotently) and acks the highest
    // contiguous seq, as the Worker's deployment log does — but only every
    // third frame, and a cut loses whatever arrived since the last ack, as
    // frames in flight are lost. The runner must resend exactly those.
    const plane = await ScriptedControlPlane.start();
    const stored = new Map<number, string>();
    let contiguous = 0;
    let acked = 0;
    let frames = 0;
    let received = 0;
    const arrivals: { at: number; count: number }[] = [];
    plane.onFrame((frame: RunnerFrame) => {
      if (frame.type !== "logs") return;
      for (const line of frame.lines) {
        received += 1;
        if (!stored.has(line.seq)) stored.set(line.seq, line.line);
      }
      while (stored.has(contiguous + 1)) contiguous += 1;
      arrivals.push({ at: performance.now(), count: stored.size });
      if (++frames % 3 !== 0) return;
      acked = contiguous;
      plane.send({
        type: "logs.ack",
        deploymentId: frame.deploymentId,
        leaseId: frame.leaseId,
        seq: acked,
      });
    });
    const cut = () => {
      plane.drop();
      for (const seq of stored.keys()) if (seq > acked) stored.delete(seq);
      contiguous = acked;
    };

    const agent = new Agent({ capacity: 1, version: "9.9.9", docker: client });
    const connection = new ControlConnection({
      url: plane.url,
      token: "apr_test",
      handlers: agent,
      baseDelayMs: 10,
      maxDelayMs: 50,
    });
    connection.start();
    onTestFinished(async () => {
      await agent.shutdown(2_000);
      await connection.stop();
      await plane.stop();
    });

    await plane.welcome(0);
    const job = service.job();
    const started = performance.now();
    await plane.startJob(job);

    // Cut the socket three times while the build streams; each time the
    // runner reconnects, is welcomed, and resends what was not acked.
    for (const threshold of [5_000, 10_000, 15_000]) {
      while (stored.size < threshold)
        await new Promise((resolve) => setTimeout(resolve, 2));
      const mark = plane.frames.length;
      cut();
      await plane.welcome(mark);
    }
    const result = await plane.next("job.result", 0, () => true, 120_000);
    // The last lines may wait for an ack that the every-third rule withholds.
    plane.send({
      type: "logs.ack",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
      seq: contiguous,
    });
    const elapsed = performance.now() - started;
    plane.send({
      type: "job.result.ack",
      deploymentId: job.deploymentId,
      leaseId: job.leaseId,
      accepted: true,
    });

    expect(result.outcome).toBe("running");
    // Every seq from 1 to the last, exactly once; some had to be resent.
    expect(contiguous).toBe(result.lastSeq);
    expect(received).toBeGreaterThan(result.lastSeq);
    expect([...stored.keys()].sort((a, b) => a - b)).toEqual(
      Array.from({ length: result.lastSeq }, (_, i) => i + 1),
    );
    // The build's lines, in the order it printed them.
    const log = Array.from({ length: result.lastSeq }, (_, i) => stored.get(i + 1)!);
    const printed = log.filter((line) => line.startsWith("build line "));
    expect(printed).toEqual(
      Array.from({ length: buildLines }, (_, i) => `build line ${i + 1}`),
    );

    const first = log.indexOf("build line 1") + 1;
    const last = log.indexOf(`build line ${buildLines}`) + 1;
    const firstAt = arrivals.find((a) => a.count >= first)!.at;
    const lastAt = arrivals.find((a) => a.count >= last)!.at;
    const outboxMs = Object.values(spent).reduce((sum, s) => sum + s.ms, 0);
    // The numbers the issue asks for; the bound only catches a quadratic outbox.
    console.info(
      JSON.stringify({
        lines: result.lastSeq,
        resent: received - result.lastSeq,
        jobMs: Math.round(elapsed),
        buildLinesStreamMs: Math.round(lastAt - firstAt),
        outboxMs: Math.round(outboxMs),
        outbox: Object.fromEntries(
          Object.entries(spent).map(([name, s]) => [
            name,
            { calls: s.calls, ms: +s.ms.toFixed(1) },
          ]),
        ),
      }),
    );
    expect(outboxMs).toBeLessThan(1_000);
  });
});
