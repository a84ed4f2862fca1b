import { defineConfig } from "vitest/config";
import { cloudflareTest } from "@cloudflare/vitest-plugin";

export default defineConfig({
  test: {
    // Component logs are JSON lines meant for wrangler tail; show them only for failing tests.
    silent: "passed-only",
    projects: [
      {
        // The orchestrator in workerd: real DOs, SQLite, alarms, queues and R2 (miniflare).
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            miniflare: {
              queueConsumers: { "fanout-batches": { maxBatchTimeout: 0 } },
              bindings: {
                FLY_API_HOSTNAME: "http://fly.test",
                FLY_API_TOKEN: "test-fly-token",
                CALLBACK_SECRET: "test-callback-secret",
                ADMIN_TOKEN: "test-admin-token",
                CALLBACK_BASE_URL: "http://orchestrator.test",
                R2_ACCOUNT_ID: "test-account",
                R2_ACCESS_KEY_ID: "test-access-key",
                R2_SECRET_ACCESS_KEY: "test-secret-key",
                WORKER_URL: "http://downstream.test",
                FLY_REGIONS: "iad,ord",
                FLY_CREATE_RATE_PER_SECOND: "1000",
                FLY_CREATE_BURST: "100",
                MAX_CONCURRENT_MACHINES: "20",
                // Tests put each batch under its own top-level prefix; the allow-list test narrows this.
                ALLOWED_PREFIXES: "/",
              },
            },
          }),
        ],
        test: { name: "workers", include: ["test/workers/**/*.test.ts"], testTimeout: 60_000 },
      },
      {
        // The fly-worker, the local stack's parts: real child processes, S3 and HTTP on loopback.
        test: {
          name: "node",
          include: ["test/node/**/*.test.ts"],
          environment: "node",
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        // The whole local stack: wrangler dev + Fly emulator + local S3 + fly-worker processes.
        test: {
          name: "e2e",
          include: ["test/e2e/**/*.test.ts"],
          environment: "node",
          testTimeout: 300_000,
          hookTimeout: 180_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
