// Bindings and vars of wrangler.jsonc, plus the secrets set with `wrangler secret put`.
interface Env {
  BATCH_DO: DurableObjectNamespace<import("./batch-do.ts").BatchDO>;
  FLY_BUDGET: DurableObjectNamespace<import("./fly-budget.ts").FlyBudget>;
  BATCH_QUEUE: Queue<unknown>;
  BUCKET: R2Bucket;
  /** The batch index (D1 database fanout-batches); see migrations/. */
  BATCH_INDEX: D1Database;
  CALLBACK_BASE_URL: string;
  FLY_API_HOSTNAME: string;
  FLY_APP_NAME: string;
  FLY_IMAGE: string;
  FLY_REGIONS: string;
  MAX_CONCURRENT_MACHINES: string;
  MAX_RETRY_ATTEMPTS: string;
  FLY_CREATE_RATE_PER_SECOND: string;
  FLY_CREATE_BURST: string;
  R2_ACCOUNT_ID: string;
  R2_BUCKET: string;
  R2_ENDPOINT?: string;
  WORKER_URL: string;
  FLY_API_TOKEN: string;
  CALLBACK_SECRET: string;
  ADMIN_TOKEN: string;
  R2_ACCESS_KEY_ID: string;
  R2_SECRET_ACCESS_KEY: string;
}
declare namespace Cloudflare {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- declaration merging
  interface Env extends globalThis.Env {}
  interface GlobalProps {
    mainModule: typeof import("./index.ts");
    durableNamespaces: "BatchDO" | "FlyBudget";
  }
}
