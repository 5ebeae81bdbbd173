/**
 * The runtime-log relay against a scripted runner: one follow per service
 * however many clients watch, stopped when the last one leaves.
 */
import { SELF } from "cloudflare:test";
import { EventSourceParserStream } from "eventsource-parser/stream";
import { beforeAll, describe, expect, it } from "vitest";
import { ScriptedRunner } from "./runner-socket";
import { seedKey, seedRunner, seedService } from "./seed";
import { api } from "./support";

let reader: string;

beforeAll(async () => {
  await seedRunner();
  reader = await seedKey("read");
});

async function watch(serviceId: string, query = "") {
  const res = await SELF.fetch(
    `http://aeroplane.test/api/services/${serviceId}/runtime-logs/stream${query}`,
    { headers: { Authorization: `Bearer ${reader}` } },
  );
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toMatch(/^text\/event-stream/);
  return res
    .body!.pipeThrough(new TextDecoderStream())
    .pipeThrough(new EventSourceParserStream())
    .getReader();
}

type Events = Awaited<ReturnType<typeof watch>>;

async function nextEvent(events: Events, skipPings = true) {
  for (;;) {
    const { value, done } = await events.read();
    if (done) return null;
    if (!skipPings || value.event !== "ping") return value;
  }
}

const at = "2026-06-10T08:47:00.000Z";

describe("GET /api/services/:serviceId/runtime-logs/stream", () => {
  it("shares one follow between clients and stops it when the last one leaves", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    await socket.next("welcome");

    const first = watch(serviceId, "?tail=1");
    const follow = await socket.next("runtime.follow");
    expect(follow.serviceId).toBe(serviceId);
    socket.send({
      type: "runtime.snapshot",
      serviceId,
      lines: [
        { line: "booting", stream: "stdout", at },
        { line: "Server listening on port 3000", stream: "stdout", at },
      ],
    });
    const a = await first;
    const snapshot = await nextEvent(a);
    expect(snapshot!.event).toBe("snapshot");
    expect(JSON.parse(snapshot!.data)).toEqual([
      { id: 2, line: "Server listening on port 3000", stream: "stdout", createdAt: at },
    ]);

    const b = await watch(serviceId);
    expect(JSON.parse((await nextEvent(b))!.data).map((l: any) => l.id)).toEqual([1, 2]);
    expect(socket.pending("runtime.follow")).toEqual([]);

    socket.send({
      type: "runtime.logs",
      serviceId,
      lines: [{ line: "GET /health failed", stream: "stderr", at }],
    });
    for (const events of [a, b]) {
      const log = (await nextEvent(events))!;
      expect(log.event).toBe("log");
      expect(log.id).toBe("3");
      expect(JSON.parse(log.data)).toEqual({
        id: 3,
        line: "GET /health failed",
        stream: "stderr",
        createdAt: at,
      });
    }

    await a.cancel();
    await new Promise((resolve) => setTimeout(resolve, 600));
    expect(socket.pending("runtime.unfollow")).toEqual([]);
    await b.cancel();
    expect((await socket.next("runtime.unfollow")).serviceId).toBe(serviceId);
    socket.close();
  });

  it("sends a closed status when the container's log ends", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    await socket.next("welcome");
    const pending = watch(serviceId);
    await socket.next("runtime.follow");
    socket.send({ type: "runtime.snapshot", serviceId, lines: [] });
    const events = await pending;
    expect((await nextEvent(events))!.event).toBe("snapshot");
    socket.send({ type: "runtime.end", serviceId, ok: true });
    const status = (await nextEvent(events))!;
    expect(status.event).toBe("status");
    expect(JSON.parse(status.data)).toEqual({ ok: true, closed: true });
    expect(await nextEvent(events)).toBeNull();
    socket.close();
  });

  it("says ok:false when the runner is offline or there is no live container", async () => {
    const runner = await seedRunner();
    const { serviceId } = await seedService(runner.id);
    const offline = await watch(serviceId);
    const status = (await nextEvent(offline))!;
    expect(JSON.parse(status.data)).toEqual({ ok: false, reason: "runner offline" });
    expect(await nextEvent(offline)).toBeNull();

    const socket = await ScriptedRunner.connect(runner.token);
    socket.hello();
    await socket.next("welcome");
    const pending = watch(serviceId);
    await socket.next("runtime.follow");
    socket.send({
      type: "runtime.end",
      serviceId,
      ok: false,
      reason: "no live container",
    });
    const none = await pending;
    expect(JSON.parse((await nextEvent(none))!.data)).toEqual({
      ok: false,
      reason: "no live container",
    });
    socket.close();
  });

  it("answers 401 without a key, 404 for an absent service, 400 for a bad tail", async () => {
    const { serviceId } = await seedService(null);
    expect(
      (await api("GET", `/api/services/${serviceId}/runtime-logs/stream`)).status,
    ).toBe(401);
    const absent = await api("GET", "/api/services/svc_absent/runtime-logs/stream", {
      key: reader,
    });
    expect(absent.status).toBe(404);
    const bad = await api(
      "GET",
      `/api/services/${serviceId}/runtime-logs/stream?tail=-1`,
      {
        key: reader,
      },
    );
    expect(bad.status).toBe(400);
    expect(bad.body.error.issues[0].path).toBe("tail");
  });
});
