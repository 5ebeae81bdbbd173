import { defineConfig } from "vitest/config";

/**
 * End-to-end tests in plain Node against real things: the local Docker
 * engine, git repositories served by `git daemon`, real sockets. Files run in
 * parallel in separate processes; each uses its own service ids and ports.
 */
export default defineConfig({
  test: {
    environment: "node",
    include: ["test/e2e/**/*.test.ts"],
    pool: "forks",
    fileParallelism: true,
    testTimeout: 120_000,
    // The runner code under test logs to stderr; keep test output readable.
    env: { AEROPLANE_LOG_LEVEL: process.env.AEROPLANE_LOG_LEVEL ?? "warn" },
    hookTimeout: 120_000,
  },
});
