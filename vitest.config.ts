import { defineConfig } from "vitest/config";
import "./test/quiet-output.ts";
import { cloudflareTest, readD1Migrations } from "@cloudflare/vitest-plugin";

// The batch index's schema, applied to the tests' D1 by test/workers/support/d1-setup.ts.
const d1Migrations = await readD1Migrations("./migrations");

export default defineConfig({
  test: {
    // Component logs are JSON lines meant for wrangler tail; show them only for failing tests.
    silent: "passed-only",
    // Every core, said explicitly: left to its default this vitest ran one file at a time on the
    // 2-core machine (npm test 344 s idle, 89% of one core: the suites mostly wait on timers, rate
    // limits and child processes), and two at a time 100 s instead of 154 s (node), 97 s (workerd).
    // The e2e project keeps one file at a time (fileParallelism: false).
    maxWorkers: "100%",
    projects: [
      {
        // The orchestrator in workerd: real DOs, SQLite, alarms, queues and R2 (miniflare).
        plugins: [
          cloudflareTest({
            wrangler: { configPath: "./wrangler.jsonc" },
            miniflare: {
              // One retry before the DLQ (production: 10), so the dead-letter round trip takes seconds.
              queueConsumers: {
                "fanout-batches": { maxBatchTimeout: 0, maxRetries: 1, deadLetterQueue: "fanout-batches-dlq" },
                "fanout-batches-dlq": { maxBatchTimeout: 0 },
              },
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
                // The emulator in these tests enforces no rate limit unless a test asks (fly-budget.test.ts
                // checks the budget against Fly's documented limits); alarms here run back to back.
                FLY_API_RATES: "list=1000/100,get=1000/100,destroy=1000/100",
                MAX_CONCURRENT_MACHINES: "20",
                // Pool mode is the default in production; these tests were written for single-task mode
                // and opt into pools per batch (`pool: true`). pool-default.test.ts checks the real default.
                POOL_MODE: "false",
                // Pool tests count machines as one slot each unless they ask for more; auto-sizing is
                // covered by pool-default.test.ts (which drops both vars).
                POOL_TASKS_PER_MACHINE: "1",
                // Tests put each batch under its own top-level prefix; the allow-list test narrows this.
                ALLOWED_PREFIXES: "/",
                BATCH_INDEX_PROGRESS_MS: "1000",
                TEST_D1_MIGRATIONS: d1Migrations,
              },
            },
          }),
        ],
        test: {
          name: "workers",
          // One fresh worker per file, chosen: files share Durable Object names and module state
          // (the phase registry, spies on fetch). Said explicitly, so vitest does not advise otherwise.
          isolate: true,
          include: ["test/workers/**/*.test.ts"],
          setupFiles: ["test/workers/support/setup.ts"],
          testTimeout: 60_000,
        },
      },
      {
        // The fly-worker, the local stack's parts: real child processes, S3 and HTTP on loopback.
        test: {
          name: "node",
          // One fresh worker per file, chosen: files start servers and processes and keep module state.
          isolate: true,
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
          isolate: true,
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
