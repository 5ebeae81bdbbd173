import { env } from "cloudflare:test";
import { drizzle } from "drizzle-orm/d1";
import { eq } from "drizzle-orm";
import { beforeAll, beforeEach, describe, expect, it } from "vitest";
import { deploymentStatuses, deployments, services } from "../../schema/tables";
import { seal } from "../../worker/crypto";
import { deploymentLog } from "../../worker/deployments";
import { parseExplanation } from "../../worker/explain/ask-provider";
import { explainWithRules } from "../../worker/explain/builtin";
import type { FailureContext, ServiceSettings } from "../../worker/explain/context";
import { TAIL_LINES } from "../../worker/explain/excerpt";
import { buildMessages } from "../../worker/explain/prompt";
import { failureLogs, type FailureLog } from "./failure-logs";
import { seedKey, seedService } from "./seed";
import {
  api,
  documentedPaths,
  expectAuthRequired,
  expectError,
  expectInvalid,
} from "./support";

const db = () => drizzle(env.DB);
let counter = 0;

const settings: ServiceSettings = {
  serviceId: "svc_web",
  repoUrl: "git://127.0.0.1:9418/app.git",
  branch: "main",
  rootDir: "",
  dockerfilePath: "Dockerfile",
  internalPort: 3000,
  healthCheckPath: "/",
};

/** A context as the route would load it, for the pure functions. */
function contextOf(
  log: FailureLog,
  overrides: Partial<ServiceSettings> = {},
): FailureContext {
  return {
    deploymentId: "dep_1",
    commitSha: null,
    settings: { ...settings, ...overrides },
    failureReason: log.reason,
    lines: log.lines.map(([line, stream], i) => ({ id: i + 1, line, stream })),
  };
}

type Seeded = { deploymentId: string; serviceId: string; projectId: string };

/** A deployment row in D1 and its lines in its log object, as a real one leaves them. */
async function seedDeployment(
  log: FailureLog,
  {
    status = "failed",
    service = {},
    variables,
  }: {
    status?: (typeof deploymentStatuses)[number];
    service?: Partial<typeof services.$inferInsert>;
    variables?: Record<string, string>;
  } = {},
): Promise<Seeded> {
  const { projectId, serviceId } = await seedService(null);
  const envSealed = variables
    ? await seal(JSON.stringify(variables), env.ENCRYPTION_KEY)
    : null;
  await db()
    .update(services)
    .set({ ...service, envSealed })
    .where(eq(services.id, serviceId));
  const deploymentId = `dep_explain${++counter}`;
  await db()
    .insert(deployments)
    .values({
      id: deploymentId,
      serviceId,
      status,
      trigger: "manual",
      failureReason: status === "failed" ? log.reason : null,
    });
  const stub = deploymentLog(env, deploymentId);
  await stub.open(deploymentId, status);
  await stub.appendPlatform(log.lines.map(([line, stream]) => ({ line, stream })));
  return { deploymentId, serviceId, projectId };
}

let writer: string;
let reader: string;
let admin: string;

beforeAll(async () => {
  writer = await seedKey("write");
  reader = await seedKey("read");
  admin = await seedKey("admin");
});

const explain = (deploymentId: string, body?: unknown, key = writer) =>
  api("POST", `/api/deployments/${deploymentId}/explain-failure`, { key, body });

const putProvider = (id: string, body: Record<string, string>) =>
  api("PUT", `/api/ai/providers/${id}`, { key: admin, body });

/** A provider whose endpoint refuses every connection: any call to it fails. */
const unreachable = {
  baseURL: "http://127.0.0.1:1/v1",
  apiKey: "sk-unreachable-secret-key-123",
};

describe("the builtin rules", () => {
  it("spot a port mismatch: the app announces a port other than internalPort", () => {
    const explanation = explainWithRules(contextOf(failureLogs.portMismatch));
    expect(explanation.summary).toMatch(/listens on port 8080/);
    expect(explanation.likelyCause).toContain("Server listening on port 8080");
    expect(explanation.likelyCause).toMatch(/internalPort is 3000/);
    expect(explanation.suggestedFix).toMatch(/internalPort to 8080/);
    expect(explanation.commands[0]).toContain('{"internalPort":8080}');
    expect(explanation.commands[0]).toContain("/api/services/svc_web");
  });

  it("read the port from a URL or a bare :port as well", () => {
    expect(explainWithRules(contextOf(failureLogs.portMismatchUrl)).likelyCause).toMatch(
      /listens on port 5173/,
    );
    expect(explainWithRules(contextOf(failureLogs.portMismatchBare)).likelyCause).toMatch(
      /listens on port 9000/,
    );
  });

  it("ignore ports of other services when the app names its own correctly", () => {
    const explanation = explainWithRules(contextOf(failureLogs.rightPortOtherServices));
    expect(explanation.likelyCause).not.toMatch(/5432/);
    expect(explanation.summary).toMatch(/did not answer HTTP on port 3000/);
  });

  it("spot an app that listens on loopback only", () => {
    const explanation = explainWithRules(contextOf(failureLogs.loopback));
    expect(explanation.likelyCause).toMatch(/loopback/);
    expect(explanation.suggestedFix).toContain("0.0.0.0:3000");
  });

  it("fall back to a port the Dockerfile EXPOSEs when the app says nothing", () => {
    const log = failureLogs.silentNoAnswer;
    const lines = log.lines.map(([text, stream]): [string, typeof stream] =>
      text.startsWith("Step 4/4")
        ? ["Step 4/4 : EXPOSE 8000/tcp", stream]
        : [text, stream],
    );
    const explanation = explainWithRules(contextOf({ ...log, lines }));
    expect(explanation.likelyCause).toMatch(/EXPOSE 8000/);
    expect(explanation.commands[0]).toContain('{"internalPort":8000}');
  });

  it("explain a crash on start with its exit code and error line", () => {
    const explanation = explainWithRules(contextOf(failureLogs.crash));
    expect(explanation.summary).toMatch(/crashed on start.*exited with code 1/);
    expect(explanation.likelyCause).toContain(`"Error: Cannot find module 'express'"`);
    expect(explanation.likelyCause).toMatch(/module "express" is missing/);
  });

  it("explain exit code 137 as an OOM kill", () => {
    const explanation = explainWithRules(contextOf(failureLogs.oom));
    expect(explanation.summary).toMatch(/out of memory.*137/);
    expect(explanation.likelyCause).toMatch(/SIGKILL.*OOM killer/);
  });

  it("explain a missing Dockerfile relative to the root dir", () => {
    const plain = explainWithRules(contextOf(failureLogs.missingDockerfile));
    expect(plain.summary).toMatch(/no Dockerfile at "Dockerfile"/);
    expect(plain.likelyCause).toMatch(/relative to the repository root/);
    const nested = explainWithRules(
      contextOf(failureLogs.missingDockerfile, { rootDir: "api" }),
    );
    expect(nested.likelyCause).toMatch(/relative to rootDir "api"/);
  });

  it("explain a wrong root dir", () => {
    const explanation = explainWithRules(
      contextOf(failureLogs.wrongRootDir, { rootDir: "web" }),
    );
    expect(explanation.summary).toMatch(/root directory "web" is not in the repository/);
    expect(explanation.commands.join("\n")).toContain('{"rootDir":""}');
  });

  it("name the failed build step, its command, exit code and error", () => {
    const explanation = explainWithRules(contextOf(failureLogs.buildStep));
    expect(explanation.summary).toBe("The build failed at step 3/5 (RUN npm ci).");
    expect(explanation.likelyCause).toContain("the command `npm ci` exited with code 1");
    expect(explanation.likelyCause).toContain(
      "can only install with an existing package-lock.json",
    );
    expect(explanation.commands).toEqual(["docker build -f Dockerfile .", "npm ci"]);
  });

  it("explain a clone of a branch that does not exist", () => {
    const explanation = explainWithRules(
      contextOf(failureLogs.cloneMissingBranch, { branch: "nope" }),
    );
    expect(explanation.summary).toMatch(/branch "nope" does not exist/);
    expect(explanation.commands[0]).toBe(
      "git ls-remote --heads git://127.0.0.1:9418/app.git",
    );
  });

  it("explain a commit the repository does not have, as the runner reports it", () => {
    const explanation = explainWithRules({
      ...contextOf(failureLogs.cloneMissingCommit),
      commitSha: "deadbee",
    });
    expect(explanation.summary).toBe("The clone failed: commit deadbee was not found.");
    expect(explanation.commands[0]).toBe("git branch -r --contains deadbee");
  });

  it("explain a clone the git host refused for lack of credentials", () => {
    const explanation = explainWithRules(
      contextOf(failureLogs.cloneAuth, {
        repoUrl: "https://github.com/acme/private.git",
      }),
    );
    expect(explanation.summary).toMatch(/refused access/);
    expect(explanation.likelyCause).toMatch(/private/);
    expect(explanation.suggestedFix).toMatch(/access token/);
  });

  it("explain a clone from a git server that cannot be reached", () => {
    const explanation = explainWithRules(contextOf(failureLogs.cloneUnreachable));
    expect(explanation.summary).toMatch(/could not reach the git server/);
    expect(explanation.likelyCause).toContain("Connection refused");
  });

  it("explain a health-check path that answers 404", () => {
    const explanation = explainWithRules(
      contextOf(failureLogs.health404, { healthCheckPath: "/healthz" }),
    );
    expect(explanation.summary).toMatch(/GET \/healthz answered HTTP 404/);
    expect(explanation.likelyCause).toMatch(
      /no route at the health-check path "\/healthz"/,
    );
    expect(explanation.commands[0]).toContain('{"healthCheckPath":"/"}');
  });

  it("still read reworded runner lines", () => {
    const reworded = (reason: string): FailureLog => ({
      reason,
      lines: [
        ["x", "stdout"],
        [reason, "stderr"],
      ],
    });
    expect(
      explainWithRules(
        contextOf(reworded("Health check failed: GET /up on port 3000 returned 404")),
      ).likelyCause,
    ).toMatch(/no route/);
    expect(
      explainWithRules(contextOf(reworded("Container exited with exit code 137")))
        .summary,
    ).toMatch(/out of memory/);
    expect(
      explainWithRules(
        contextOf(
          reworded(
            "Health check failed: the app did not answer HTTP on port 3000 within 60 s",
          ),
        ),
      ).summary,
    ).toMatch(/did not answer HTTP on port 3000/);
    expect(
      explainWithRules(contextOf(reworded("Dockerfile not found: app/Dockerfile")))
        .summary,
    ).toMatch(/no Dockerfile/);
  });

  it("give a generic explanation, in the same shape, for anything else", () => {
    const explanation = explainWithRules(contextOf(failureLogs.unknown));
    expect(explanation).toEqual({
      summary: "The deployment failed: the flux capacitor overheated",
      likelyCause: expect.stringMatching(/do not recognise/),
      suggestedFix: expect.any(String),
      commands: [expect.stringContaining("/api/deployments/dep_1/logs")],
    });
  });
});

describe("the prompt for an AI provider", () => {
  const variables = {
    DATABASE_URL: "postgres://app:hunter2-db-password@db.internal:5432/app",
    STRIPE_KEY: "rk_live_51HxSecretValue",
    PORT: "3000",
    FLAG: "on",
  };
  const secretLines: FailureLog["lines"] = [
    ["Using rk_live_51HxSecretValue for payments", "stdout"],
    ["Connecting to postgres://app:hunter2-db-password@db.internal:5432/app", "stderr"],
    ["Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "stdout"],
    [
      "curl -H 'Authorization: Bearer ap_0123456789abcdef0123456789abcdef01234567'",
      "stdout",
    ],
    ["runner token apr_abcdefghijklmnopqrstuvwxyz0123456789abcd", "stdout"],
    [
      "cloning https://deploy:ghp_0123456789abcdefghijABCDEFGHIJ012345@github.com/a/b",
      "stdout",
    ],
    ["API_TOKEN=plain-token-value-987", "stdout"],
  ];

  it("carries the settings, the reason and the log, and no secret at all", () => {
    const log = failureLogs.portMismatch;
    const context = contextOf(
      { ...log, lines: [...secretLines, ...log.lines] },
      {
        repoUrl: "https://deploy:s3cret-pass@git.example.com/acme/web.git",
        healthCheckPath: "/up",
      },
    );
    const [system, user] = buildMessages(context, variables);
    expect(system.role).toBe("system");
    expect(system.content).toMatch(/JSON object/);
    expect(system.content).toMatch(/summary.*likelyCause.*suggestedFix.*commands/s);
    expect(user.role).toBe("user");

    for (const setting of [
      "internalPort: 3000",
      "dockerfilePath: Dockerfile",
      "rootDir: (repository root)",
      "branch: main",
      "healthCheckPath: /up",
      "repoUrl: https://[redacted]@git.example.com/acme/web.git",
    ]) {
      expect(user.content).toContain(setting);
    }
    expect(user.content).toContain(`Failure reason: ${log.reason}`);
    expect(user.content).toContain("stdout: Server listening on port 8080");

    const all = system.content + user.content;
    for (const secret of [
      "hunter2-db-password",
      "rk_live_51HxSecretValue",
      "eyJhbGciOiJIUzI1NiJ9",
      "ap_0123456789abcdef",
      "apr_abcdefghijklmnop",
      "ghp_0123456789",
      "plain-token-value-987",
      "s3cret-pass",
    ]) {
      expect(all).not.toContain(secret);
    }
    expect(user.content).toContain("Using [redacted:STRIPE_KEY] for payments");
    // A value that equals a setting hides nothing; a tiny one would wreck the text.
    expect(user.content).toContain("port 3000");
    expect(user.content).toContain("Connecting to [redacted:DATABASE_URL]");
  });

  it("sends the log's tail and the earlier lines that look like errors", () => {
    const lines: FailureLog["lines"] = [];
    for (let i = 1; i <= 400; i++) {
      lines.push([
        i === 20 ? "npm ERR! peer dependency conflict" : `progress line ${i}`,
        "stdout",
      ]);
    }
    const [, user] = buildMessages(contextOf({ reason: "Build failed", lines }), {});
    expect(user.content).toContain("#20 stdout: npm ERR! peer dependency conflict");
    expect(user.content).toContain("#400 stdout: progress line 400");
    expect(user.content).toContain(`#${400 - TAIL_LINES + 1} stdout:`);
    expect(user.content).not.toContain(`#${400 - TAIL_LINES} stdout:`);
    expect(user.content).not.toContain("progress line 21\n");
    expect(user.content).toContain("400 lines; 249 omitted");
  });
});

describe("reading a provider's answer", () => {
  const good = {
    summary: "s",
    likelyCause: "c",
    suggestedFix: "f",
    commands: ["npm start"],
  };

  it("accepts the JSON object, bare or fenced, and drops extra keys", () => {
    expect(parseExplanation("p", JSON.stringify(good))).toEqual(good);
    expect(
      parseExplanation(
        "p",
        "```json\n" + JSON.stringify({ ...good, extra: 1 }) + "\n```",
      ),
    ).toEqual(good);
  });

  it("turns anything else into a 502 that says what was wrong", () => {
    const failure = (content: string | null) => {
      try {
        parseExplanation("p", content);
      } catch (error) {
        return error as { status: number; message: string };
      }
      throw new Error("parsed");
    };
    expect(failure(null)).toMatchObject({
      status: 502,
      message: expect.stringMatching(/no explanation/),
    });
    expect(failure("Sure! The app crashed.")).toMatchObject({
      status: 502,
      message: expect.stringMatching(/not JSON/),
    });
    expect(
      failure(JSON.stringify({ ...good, commands: "npm start", summary: "" })),
    ).toMatchObject({
      status: 502,
      message: expect.stringMatching(/invalid: summary, commands/),
    });
  });
});

describe("POST /api/deployments/:deploymentId/explain-failure", () => {
  beforeEach(async () => {
    await env.DB.prepare("DELETE FROM ai_providers").run();
  });

  it("explains with builtin when no provider is configured, body or no body", async () => {
    const { deploymentId } = await seedDeployment(failureLogs.portMismatch);
    for (const body of [undefined, {}, { providerId: "builtin" }]) {
      const res = await explain(deploymentId, body);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(Object.keys(res.body)).toEqual(["explanation"]);
      expect(Object.keys(res.body.explanation)).toEqual([
        "summary",
        "likelyCause",
        "suggestedFix",
        "commands",
      ]);
      expect(res.body.explanation.likelyCause).toMatch(/listens on port 8080/);
    }
  });

  it("explains each kind of failure from the seeded log and the service settings", async () => {
    const cases: [FailureLog, Partial<typeof services.$inferInsert>, RegExp][] = [
      [failureLogs.crash, {}, /exit code 1.*Cannot find module 'express'/],
      [failureLogs.oom, {}, /OOM killer/],
      [failureLogs.missingDockerfile, { rootDir: "api" }, /relative to rootDir "api"/],
      [failureLogs.wrongRootDir, { rootDir: "web" }, /rootDir is "web"/],
      [
        failureLogs.buildStep,
        {},
        /step 3\/5 \(RUN npm ci\), the command `npm ci` exited with code 1/,
      ],
      [failureLogs.cloneMissingBranch, { branch: "nope" }, /no branch of that name/],
      [
        failureLogs.cloneAuth,
        { repoUrl: "https://github.com/acme/private.git" },
        /private/,
      ],
      [
        failureLogs.health404,
        { healthCheckPath: "/healthz" },
        /no route at the health-check path/,
      ],
    ];
    for (const [log, service, cause] of cases) {
      const { deploymentId } = await seedDeployment(log, { service });
      const res = await explain(deploymentId, { providerId: "builtin" });
      expect(res.status).toBe(200);
      expect(res.body.explanation.likelyCause).toMatch(cause);
    }
  });

  it("uses the first configured provider by default, and builtin when asked", async () => {
    await putProvider("first", { ...unreachable, defaultModel: "m1" });
    await putProvider("second", { ...unreachable, defaultModel: "m2" });
    const { deploymentId } = await seedDeployment(failureLogs.crash);

    const res = await explain(deploymentId);
    expectError(res, 502, "upstream_failed");
    expect(res.body.error.message).toBe(
      'AI provider "first" could not be reached at its base URL',
    );
    expect(JSON.stringify(res.body)).not.toContain(unreachable.apiKey);

    const second = await explain(deploymentId, { providerId: "second" });
    expect(second.body.error.message).toMatch(/"second"/);
    expect((await explain(deploymentId, { providerId: "builtin" })).status).toBe(200);
  });

  it("answers from the cache without calling the provider", async () => {
    await putProvider("cached", { ...unreachable, defaultModel: "default-model" });
    const { deploymentId } = await seedDeployment(failureLogs.crash);
    const stored = {
      summary: "cached",
      likelyCause: "c",
      suggestedFix: "f",
      commands: [],
    };
    await env.DB.prepare(
      "INSERT INTO failure_explanations (deployment_id, provider_id, model, explanation) VALUES (?, ?, ?, ?)",
    )
      .bind(deploymentId, "cached", "default-model", JSON.stringify(stored))
      .run();

    // The endpoint refuses connections, so only the cache can answer 200.
    expect(await explain(deploymentId)).toMatchObject({
      status: 200,
      body: { explanation: stored },
    });
    const other = await explain(deploymentId, { model: "another-model" });
    expectError(other, 502, "upstream_failed");

    // A new base URL may serve other models by the same names.
    await putProvider("cached", {
      baseURL: "http://127.0.0.1:2/v1",
      apiKey: "k",
      defaultModel: "default-model",
    });
    expectError(await explain(deploymentId), 502, "upstream_failed");
  });

  it("forgets a provider's cached explanations when the provider is removed", async () => {
    await putProvider("removed", { ...unreachable, defaultModel: "m" });
    const { deploymentId } = await seedDeployment(failureLogs.crash);
    await env.DB.prepare(
      "INSERT INTO failure_explanations (deployment_id, provider_id, model, explanation) VALUES (?, 'removed', 'm', '{}')",
    )
      .bind(deploymentId)
      .run();
    expect(
      (await api("DELETE", "/api/ai/providers/removed", { key: admin })).status,
    ).toBe(204);
    const left = await env.DB.prepare(
      "SELECT COUNT(*) AS n FROM failure_explanations WHERE provider_id = 'removed'",
    ).first<{ n: number }>();
    expect(left!.n).toBe(0);
  });

  it("is documented with its 409 and 502 answers", async () => {
    const paths = await documentedPaths();
    const route = paths["/api/deployments/{deploymentId}/explain-failure"].post as {
      responses: Record<string, unknown>;
    };
    expect(Object.keys(route.responses).sort()).toEqual(
      ["200", "400", "401", "403", "404", "409", "502"].sort(),
    );
  });

  it("answers 409 for a deployment that did not fail", async () => {
    for (const status of [
      "queued",
      "building",
      "running",
      "aborted",
      "superseded",
    ] as const) {
      const { deploymentId } = await seedDeployment(failureLogs.unknown, { status });
      const res = await explain(deploymentId);
      expectError(res, 409, "conflict");
      expect(res.body.error.message).toContain(status);
    }
  });

  it("answers 400 for a body it cannot use", async () => {
    const { deploymentId } = await seedDeployment(failureLogs.crash);
    expectInvalid(await explain(deploymentId, { providerId: "Not Valid" }), "providerId");
    expectInvalid(
      await explain(deploymentId, { providerId: "never-configured" }),
      "providerId",
    );
    expectInvalid(await explain(deploymentId, { model: "" }), "model");
    expectInvalid(await explain(deploymentId, { extra: true }), "");
  });

  it("answers 401 without a key, 403 for a read key, 404 when absent or out of scope", async () => {
    const { deploymentId } = await seedDeployment(failureLogs.crash);
    const path = `/api/deployments/${deploymentId}/explain-failure`;
    await expectAuthRequired("POST", path);
    expectError(await explain(deploymentId, undefined, reader), 403, "forbidden");
    expectError(await explain("dep_absent"), 404, "not_found");
    const other = await seedService(null);
    const scoped = await seedKey("write", [other.projectId]);
    expectError(await explain(deploymentId, undefined, scoped), 404, "not_found");
  });
});
