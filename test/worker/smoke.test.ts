import { SELF } from "cloudflare:test";
import { expect, it } from "vitest";

it("serves the OpenAPI document", async () => {
  const res = await SELF.fetch("http://x/api/openapi.json");
  expect(res.status).toBe(200);
  const r2 = await SELF.fetch("http://x/nope");
  expect(r2.status).toBe(404);
  expect(await r2.json()).toEqual({
    error: { code: "not_found", message: "Route not found" },
  });
});
