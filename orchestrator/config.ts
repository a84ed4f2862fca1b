// The Worker's configuration (wrangler vars and secrets), validated once per isolate.
// A bad value is named in the error; a secret's value never is.
import { z } from "zod";
import { describeZodError } from "../shared/contracts.ts";
import { parseApiRates, type Rates } from "./fly/rates.ts";
import type { Resources } from "./fly/fleet.ts";
import { OBJECTIVES } from "./engine/sizing.ts";

const int = (min: number, max: number, fallback: number) =>
  z.preprocess(
    (v) => (v === undefined || v === "" ? fallback : typeof v === "string" ? Number(v) : v),
    z.number({ message: "must be a number" }).int("must be a whole number").min(min).max(max),
  );
const optionalUrl = z.preprocess((v) => (v === "" ? undefined : v), z.url({ protocol: /^https?$/ }).optional());
const secret = z.string({ message: "must be set (a Worker secret)" }).min(1, "must be set (a Worker secret)");

export const ConfigSchema = z.object({
  CALLBACK_BASE_URL: z.url({ protocol: /^https?$/, message: "must be the public http(s) URL of this Worker" }),
  FLY_API_HOSTNAME: z.url({ protocol: /^https?$/ }).default("https://api.machines.dev"),
  FLY_APP_NAME: z.string().min(1, "must name the Fly app whose image machines run"),
  FLY_IMAGE: z.string().min(1, "must name the image machines run"),
  FLY_REGIONS: z
    .string()
    .default("")
    .transform((s) => s.split(",").map((r) => r.trim()).filter(Boolean)),
  /** Optional cap on one batch's live machines (unset: the fleet's share is its only limit). */
  MAX_CONCURRENT_MACHINES: z.preprocess((v) => (v === undefined || v === "" ? undefined : Number(v)), z.number({ message: "must be a number" }).int("must be a whole number").min(1).max(10_000).optional()),
  /**
   * The fleet: live machines, vCPUs and memory of every batch of the Fly app together. Defaults a
   * new organisation can run (README "The fleet"); raise them when Fly raises your quota.
   */
  FLEET_MAX_MACHINES: int(1, 100_000, 20),
  FLEET_MAX_VCPUS: int(1, 1_000_000, 64),
  FLEET_MAX_MEMORY_MB: int(256, 100_000_000, 131_072),
  /** Fly's rate limits of list, get and destroy (`list=1/3,get=5/10,destroy=1/3`); empty: the documented ones (fly/rates.ts). */
  FLY_API_RATES: z
    .preprocess((v) => (v === undefined ? "" : v), z.string())
    .transform((text, ctx) => {
      try {
        return parseApiRates(text);
      } catch (error) {
        ctx.addIssue({ code: "custom", message: error instanceof Error ? error.message : String(error) });
        return z.NEVER;
      }
    }),
  MAX_RETRY_ATTEMPTS: int(1, 100, 3),
  FLY_CREATE_RATE_PER_SECOND: z.preprocess(
    (v) => (v === undefined || v === "" ? 1 : Number(v)),
    z.number().positive().max(1000),
  ),
  FLY_CREATE_BURST: int(1, 1000, 3),
  /** Override every phase's boot/run timeouts (the local stack and tests use short ones). */
  BOOT_TIMEOUT_MS: z.preprocess((v) => (v === undefined || v === "" ? undefined : Number(v)), z.number().int().positive().optional()),
  RUN_TIMEOUT_MS: z.preprocess((v) => (v === undefined || v === "" ? undefined : Number(v)), z.number().int().positive().optional()),
  /** Run batches in pool mode unless their message says otherwise (machines lease task after task); on by default. */
  POOL_MODE: z.preprocess((v) => (v === undefined || v === "" ? "true" : v), z.enum(["true", "false"], { message: "must be 'true' or 'false'" }).transform((v) => v === "true")),
  /** Pool mode: a lease not renewed by a heartbeat within this long returns its task for retry. */
  LEASE_TIMEOUT_MS: int(1000, 3_600_000, 60_000),
  /** Pool mode: tasks one machine converts at once; 0 (default): sized per batch (engine/sizing.ts). */
  POOL_TASKS_PER_MACHINE: int(0, 16, 0),
  /** Machine sizing (engine/sizing.ts pick): `balanced` (default), `fast` or `cheapest`. */
  SIZING_OBJECTIVE: z.preprocess((v) => (v === undefined || v === "" ? "balanced" : v), z.enum(OBJECTIVES, { message: `must be one of ${OBJECTIVES.join(", ")}` })),
  /** Pool mode: a machine with no work for this long exits. */
  POOL_IDLE_TIMEOUT_MS: int(0, 3_600_000, 60_000),
  /** How often a live machine's state is looked at, to catch machines that die without calling back. */
  MACHINE_CHECK_INTERVAL_MS: int(100, 600_000, 30_000),
  /**
   * What storage access a machine gets: `scoped` (presigned URLs for its own input and reserved
   * outputs, expiring with the attempt) or `legacy-keys` (the R2 key pair, for images that only
   * speak the old env contract; anyone who can read the Fly app can then read the key).
   */
  MACHINE_STORAGE: z.preprocess((v) => (v === undefined || v === "" ? "scoped" : v), z.enum(["scoped", "legacy-keys"], { message: "must be 'scoped' or 'legacy-keys'" })),
  /** Roots a batch may read and write under, comma-separated; "/" is the whole bucket. Each is a folder: a missing trailing / is added. */
  ALLOWED_PREFIXES: z
    .preprocess((v) => (v === undefined ? "batches/" : v), z.string())
    .transform((s) => s.split(",").map((r) => r.trim()).filter(Boolean).map((r) => (r.endsWith("/") ? r : `${r}/`)))
    .pipe(z.array(z.string()).min(1, "must name at least one root, e.g. batches/ (or / for the whole bucket)")),
  /**
   * Where a batch reads: `batch` (its manifest's directory, or its r2_prefix) or `allowed-prefixes`
   * (anywhere under ALLOWED_PREFIXES: a manifest may list files of other folders — on purpose).
   */
  READ_SCOPE: z.preprocess((v) => (v === undefined || v === "" ? "batch" : v), z.enum(["batch", "allowed-prefixes"], { message: "must be 'batch' or 'allowed-prefixes'" })),
  /** Defaults for a message without tolerated_failure_percentage / tolerated_failure_count (unset: no threshold). */
  TOLERATED_FAILURE_PERCENTAGE: z.preprocess((v) => (v === undefined || v === "" ? undefined : Number(v)), z.number().min(0).max(100).optional()),
  TOLERATED_FAILURE_COUNT: z.preprocess((v) => (v === undefined || v === "" ? undefined : Number(v)), z.number().int().min(0).optional()),
  /** A step that fails this many times in a row stops the batch in ERROR. */
  MAX_STEP_FAILURES: int(1, 1000, 10),
  /** When set, status reads need `Authorization: Bearer $READ_TOKEN` (or the admin token). */
  READ_TOKEN: z.preprocess((v) => (v === "" ? undefined : v), z.string().min(16, "must be at least 16 characters").optional()),
  /** The batch index (D1) gets a batch's progress at most this often; status transitions at once. */
  BATCH_INDEX_PROGRESS_MS: int(100, 600_000, 5000),
  /**
   * An alarm sends no new outbound request after this long (a few more pages or parts wait for the
   * next alarm, which is already set): each alarm's work is bounded by time as well as by count.
   */
  ALARM_WORK_MS: int(100, 240_000, 25_000),
  /** A finished batch's Durable Object storage is deleted this many days after it ended; its index row (D1) stays. */
  BATCH_RETENTION_DAYS: int(1, 3650, 30),
  /** The queue the batch queue's consumer dead-letters into (wrangler.jsonc `dead_letter_queue`): this Worker consumes it too. */
  DEAD_LETTER_QUEUE: z.string().min(1, "must name the dead letter queue of the batch queue (its dead_letter_queue in wrangler.jsonc)").default("fanout-batches-dlq"),
  /**
   * The command that shows a machine's output, as status, the task views and task_failed events
   * print it: {machine} and {app} are filled in. The local stack (local/stack.ts) sets
   * `npm run fanout -- logs {machine}`, the command that works there.
   */
  LOGS_COMMAND: z
    .preprocess((v) => (v === undefined || v === "" ? "fly logs -a {app} -i {machine} --no-tail" : v), z.string())
    .refine((s) => s.includes("{machine}"), "must contain {machine}, e.g. fly logs -a {app} -i {machine} --no-tail"),
  /** Debug routes under /admin/debug/ (the soak evicts the create budget's DO); off unless "true". */
  DEBUG_HOOKS: z.preprocess((v) => (v === undefined || v === "" ? "false" : v), z.enum(["true", "false"], { message: "must be 'true' or 'false'" }).transform((v) => v === "true")),
  R2_ACCOUNT_ID: z.string().default(""),
  R2_BUCKET: z.string().min(1, "must name the bucket machines read and write"),
  R2_ENDPOINT: optionalUrl,
  WORKER_URL: optionalUrl,
  FLY_API_TOKEN: secret,
  CALLBACK_SECRET: secret,
  ADMIN_TOKEN: secret,
  R2_ACCESS_KEY_ID: secret,
  R2_SECRET_ACCESS_KEY: secret,
});
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {}

/** Every action's rate (create from its own vars). */
export function ratesOf(c: Config): Rates {
  return { create: { perSecond: c.FLY_CREATE_RATE_PER_SECOND, burst: c.FLY_CREATE_BURST }, ...c.FLY_API_RATES };
}

/** The fleet's configured limits. */
export function fleetLimitsOf(c: Config): Resources {
  return { machines: c.FLEET_MAX_MACHINES, vcpus: c.FLEET_MAX_VCPUS, memory_mb: c.FLEET_MAX_MEMORY_MB };
}

const cache = new WeakMap<object, Config>();

/** `env` is the Worker's Env; typed loosely so Node-side tests can check the schema against wrangler.jsonc. */
export function loadConfig(env: object): Config {
  const hit = cache.get(env);
  if (hit) return hit;
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) throw new ConfigError(`orchestrator misconfigured: ${describeZodError(parsed.error)}`);
  if (!parsed.data.R2_ENDPOINT && !parsed.data.R2_ACCOUNT_ID) {
    throw new ConfigError("orchestrator misconfigured: set R2_ACCOUNT_ID (or R2_ENDPOINT for an S3-compatible store)");
  }
  cache.set(env, parsed.data);
  return parsed.data;
}
