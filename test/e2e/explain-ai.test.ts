/**
 * Explaining a real failed deployment through a local OpenAI-compatible
 * server that the test starts: what the Worker sends it, what it does with
 * good, malformed and slow answers, and that a second ask is a cache hit.
 */
import { once } from "node:events";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../../scripts/local-control-plane";
import { deploy } from "./support/deployments";
import { TestSystem } from "./support/system";

/** What the fake provider received, one entry per request. */
type Recorded = { method: string; url: string; authorization: string; body: any };

const AI_TIMEOUT_MS = 1_500;
const providerKey = "sk-local-provider-key-0123456789";
const envSecret = "e2e-service-secret-value-42";
const good = {
  summary: "The clone failed.",
  likelyCause: "Nothing listens at the repository's git:// port.",
  suggestedFix: "Point repoUrl at a reachable git server.",
  commands: ["git ls-remote git://127.0.0.1/app.git"],
};

/** The provider's answer for each model the tests ask for. */
const answers: Record<string, { delayMs?: number; status?: number; content?: string }> = {
  "good-model": { content: JSON.stringify(good) },
  "fenced-model": { content: "```json\n" + JSON.stringify(good) + "\n```" },
  "prose-model": { content: "The clone failed because nothing listens there." },
  "incomplete-model": { content: JSON.stringify({ summary: "only this" }) },
  "slow-model": { delayMs: 5_000, content: JSON.stringify(good) },
  "locked-model": { status: 401 },
};

let system: TestSystem;
let server: http.Server;
let providerUrl: string;
let deploymentId: string;
const requests: Recorded[] = [];

function startFakeProvider(): Promise<void> {
  server = http.createServer(async (req, res) => {
    let text = "";
    for await (const chunk of req) text += chunk;
    const body = JSON.parse(text || "{}");
    requests.push({
      method: req.method ?? "",
      url: req.url ?? "",
      authorization: req.headers.authorization ?? "",
      body,
    });
    const answer = answers[body.model] ?? { status: 404 };
    if (answer.delayMs)
      await new Promise((resolve) => setTimeout(resolve, answer.delayMs));
    if (res.destroyed) return;
    if (answer.status) {
      res.writeHead(answer.status, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          error: { message: `Incorrect API key provided: ${providerKey}` },
        }),
      );
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(
      JSON.stringify({
        id: "chatcmpl-test",
        object: "chat.completion",
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: [
          {
            index: 0,
            message: { role: "assistant", content: answer.content },
            finish_reason: "stop",
          },
        ],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      }),
    );
  });
  server.listen(0, "127.0.0.1");
  return once(server, "listening").then(() => {
    providerUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  });
}

const explain = (body: unknown) =>
  system.api("POST", `/api/deployments/${deploymentId}/explain-failure`, body);

const callsFor = (model: string) => requests.filter((r) => r.body.model === model).length;

beforeAll(async () => {
  await startFakeProvider();
  system = await TestSystem.start({ AI_TIMEOUT_MS: String(AI_TIMEOUT_MS) });
  const runner = await system.registerRunner();
  system.startRunner(runner.token);

  // Nothing listens on this port, so the deployment fails at the clone.
  const repoUrl = `git://127.0.0.1:${await freePort()}/app.git`;
  const { serviceId } = await system.createService(
    {
      name: "web",
      repoUrl,
      healthCheckPath: "/up",
      runnerId: runner.id,
      env: { API_SECRET: envSecret },
    },
    { projectName: "explain" },
  );
  deploymentId = await deploy(system, serviceId);
  await system.waitForDeployment(deploymentId, (d) => d.status === "failed");

  await system.ok("PUT", "/api/ai/providers/local", {
    baseURL: providerUrl,
    apiKey: providerKey,
    defaultModel: "good-model",
  });
});

afterAll(async () => {
  await system?.stop();
  server?.close();
});

describe("explain-failure with an OpenAI-compatible provider", () => {
  it("sends the model, a system and a user message with the facts, and no secrets", async () => {
    const res = await explain({});
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toEqual({ explanation: good });

    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request.method).toBe("POST");
    expect(request.url).toBe("/v1/chat/completions");
    expect(request.authorization).toBe(`Bearer ${providerKey}`);
    expect(request.body.model).toBe("good-model");
    expect(request.body.response_format).toEqual({ type: "json_object" });
    expect(request.body.messages.map((m: { role: string }) => m.role)).toEqual([
      "system",
      "user",
    ]);

    const user: string = request.body.messages[1].content;
    for (const fact of [
      "internalPort: 3000",
      "dockerfilePath: Dockerfile",
      "rootDir: (repository root)",
      "branch: main",
      "healthCheckPath: /up",
      "Failure reason: Clone failed:",
      "Cloning git://127.0.0.1:",
    ]) {
      expect(user).toContain(fact);
    }
    const sent = JSON.stringify(request.body);
    expect(sent).not.toContain(envSecret);
    expect(sent).not.toContain(providerKey);
  });

  it("answers a second ask from the cache, without calling the provider", async () => {
    const before = requests.length;
    const res = await explain({ providerId: "local", model: "good-model" });
    expect(res).toEqual({ status: 200, body: { explanation: good } });
    expect(requests.length).toBe(before);
  });

  it("accepts an answer fenced as a JSON code block", async () => {
    const res = await explain({ model: "fenced-model" });
    expect(res).toEqual({ status: 200, body: { explanation: good } });
  });

  it("answers 502 for an answer that is not JSON, and does not cache it", async () => {
    for (let attempt = 1; attempt <= 2; attempt++) {
      const res = await explain({ model: "prose-model" });
      expect(res.status).toBe(502);
      expect(res.body.error).toEqual({
        code: "upstream_failed",
        message: 'AI provider "local" answered with text that is not JSON',
      });
      expect(callsFor("prose-model")).toBe(attempt);
    }
  });

  it("answers 502 for JSON that is not an explanation", async () => {
    const res = await explain({ model: "incomplete-model" });
    expect(res.status).toBe(502);
    expect(res.body.error.message).toBe(
      'AI provider "local" answered JSON that is not an explanation ' +
        "(invalid: likelyCause, suggestedFix, commands)",
    );
  });

  it("answers 502 when the provider refuses the key, without repeating it", async () => {
    const res = await explain({ model: "locked-model" });
    expect(res.status).toBe(502);
    expect(res.body.error.message).toBe(
      'AI provider "local" refused the API key (HTTP 401); replace it with PUT /api/ai/providers/local',
    );
    expect(JSON.stringify(res.body)).not.toContain(providerKey);
  });

  it("cuts a slow answer off at AI_TIMEOUT_MS with a 502", async () => {
    const started = Date.now();
    const res = await explain({ model: "slow-model" });
    const elapsed = Date.now() - started;
    expect(res.status).toBe(502);
    expect(res.body.error.message).toBe(
      'AI provider "local" did not answer within 1.5 s',
    );
    expect(elapsed).toBeGreaterThanOrEqual(AI_TIMEOUT_MS - 100);
    expect(elapsed).toBeLessThan(4_500);
    expect(callsFor("slow-model")).toBe(1);
  });

  it("still explains with builtin, which needs no provider", async () => {
    const res = await explain({ providerId: "builtin" });
    expect(res.status).toBe(200);
    expect(res.body.explanation.summary).toBe(
      "The clone failed: the runner could not reach the git server.",
    );
    expect(res.body.explanation.likelyCause).toMatch(
      /Connection refused|unable to connect/,
    );
  });
});
