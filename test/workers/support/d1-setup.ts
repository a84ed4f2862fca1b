// Applies migrations/ to the tests' D1 (the batch index) before each test file; applying twice is a no-op.
import { env } from "cloudflare:workers";
import { applyD1Migrations, type D1Migration } from "cloudflare:test";

await applyD1Migrations(env.BATCH_INDEX, (env as unknown as { TEST_D1_MIGRATIONS: D1Migration[] }).TEST_D1_MIGRATIONS);
