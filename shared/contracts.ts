// The contracts between the parts of fanout, as zod schemas. Both the orchestrator (workerd)
// and the fly-worker (Node) import this file, so it uses nothing but zod, web standards and keys.ts.
import { z } from "zod";
import { keyProblem } from "./keys.ts";

/** Batch ids become Durable Object names, URL segments, R2 key parts and Fly metadata. */
export const BatchId = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/,
    "batch_id must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting with a letter or digit",
  );
export type BatchId = z.infer<typeof BatchId>;

/** Task ids are made by the engine: `<phase slug>-<sequence>`, e.g. `tiff-000042`. */
export const TaskId = z
  .string()
  .regex(/^[a-z][a-z0-9]{0,15}-[0-9]{1,9}$/, "task_id must look like 'tiff-000042'");
export type TaskId = z.infer<typeof TaskId>;

/**
 * A canonical R2/S3 object key (shared/keys.ts keyProblem): at most 1,024 UTF-8 bytes, no control
 * character, backslash, empty, `.` or `..` segment. Every key that reaches a machine, a URL or a
 * callback is one.
 */
export const ObjectKey = z.string().superRefine((k, ctx) => {
  const problem = keyProblem(k);
  if (problem) ctx.addIssue({ code: "custom", message: `not a canonical object key: ${problem}` });
});

/** A key as a manifest lists it: checked with keyProblem when the file is planned, so a bad entry fails that file alone. */
const ListedKey = z.string().min(1, "an object key must not be empty").max(4096, "an object key must be at most 4096 characters");

/** A prefix (`r2_prefix`): canonical, ending in `/` (one is added when it is missing, so `batches/b1` never takes `batches/b10/`). */
export const KeyPrefix = z
  .string()
  .transform((p) => (p === "" || p.endsWith("/") ? p : `${p}/`))
  .superRefine((p, ctx) => {
    const problem = keyProblem(p, { prefix: true });
    if (problem) ctx.addIssue({ code: "custom", message: p === "" ? "must not be empty (it would take the whole bucket)" : `not a canonical prefix: ${problem}` });
  });

/** A phase's name as a message names it, e.g. `TIFF_CONVERSION`. */
export const PhaseName = z.string().regex(/^[A-Z][A-Z0-9_]{0,63}$/, "a phase name is upper-case letters, digits and '_', e.g. \"TIFF_CONVERSION\"");

// ---------------------------------------------------------------------------------------
// Queue message and manifest (compatible with the existing ingest pipeline; unknown fields kept)

export const QueueMessage = z
  .looseObject({
    batch_id: BatchId,
    manifest_r2_key: ObjectKey.optional(),
    r2_prefix: KeyPrefix.optional(),
    /**
     * Replace outputs that already exist in storage and were not written by this batch (an
     * operator re-running a folder on purpose). Off: such a file fails, naming the key.
     */
    overwrite: z.boolean().optional(),
    /** Run the batch's phases in pool mode (machines lease task after task); POOL_MODE by default. */
    pool: z.boolean().optional(),
    /** Pool mode: tasks each machine converts at once; POOL_TASKS_PER_MACHINE by default. */
    pool_tasks_per_machine: z.number().int().min(1).max(16).optional(),
    /** Step Functions' meaning: the batch stops FAILED once more than this share of its tasks failed. */
    tolerated_failure_percentage: z.number().min(0).max(100).optional(),
    /** … or once more than this many tasks failed. */
    tolerated_failure_count: z.number().int().min(0).optional(),
    /** Its weight in the fleet's fair shares of machines and create tokens (default 1: equal). */
    priority: z.number().positive("priority must be more than 0").max(100, "priority must be at most 100").optional(),
    /**
     * The batch's pipeline: these phases, in this order (the orchestrator checks each is registered).
     * Absent: every phase that is not opt-in, each doing what it finds (TIFFs converted, PDFs split).
     */
    phases: z.array(PhaseName).min(1, "phases must name at least one phase").max(16, "phases may name at most 16 phases").optional(),
  })
  .refine((m) => m.manifest_r2_key !== undefined || m.r2_prefix !== undefined, {
    message: "a queue message needs manifest_r2_key or r2_prefix",
    path: ["manifest_r2_key"],
  });
export type QueueMessage = z.infer<typeof QueueMessage>;

export const ManifestFile = z.looseObject({
  r2_key: ListedKey,
  logical_path: z.string().optional(),
  file_name: z.string().optional(),
  file_size: z.number().int().nonnegative().optional(),
  content_type: z.string().optional(),
  cid: z.string().optional(),
});
export type ManifestFile = z.infer<typeof ManifestFile>;

/** A directory's fields other than its files (a streamed reader checks them apart from the files). */
export const ManifestDirectoryHeader = z.looseObject({
  directory_path: z.string(),
  processing_config: z.unknown().optional(),
});
export const ManifestDirectory = ManifestDirectoryHeader.extend({ files: z.array(ManifestFile) });

export const Manifest = z.looseObject({
  batch_id: BatchId,
  directories: z.array(ManifestDirectory),
});
export type Manifest = z.infer<typeof Manifest>;

/** One entry of a batch's file list, as it is posted downstream at finalisation. */
export const FileEntry = z.looseObject({
  r2_key: ObjectKey,
  logical_path: z.string(),
  file_name: z.string(),
  file_size: z.number().int().nonnegative(),
  content_type: z.string(),
  cid: z.string().optional(),
  /** Set on files a phase produced: the key of the file it was made from. */
  source_r2_key: ObjectKey.optional(),
});
export type FileEntry = z.infer<typeof FileEntry>;

/**
 * Output keys one task may write (pages of a TIFF; a JPEG and a PDF per page of a PDF): what the
 * orchestrator reserves, presigns and checks for one task is bounded by it. A 4,000-output
 * callback is 4,000 ranged reads, six at a time; more than that is refused (the worker says so
 * before converting: split the file).
 */
export const MAX_PAGES_PER_TASK = 4000;

// ---------------------------------------------------------------------------------------
// Machine environment (the contract existing TIFF worker images already speak)

const envBool = z
  .enum(["true", "false", "1", "0"], { message: "must be 'true' or 'false'" })
  .transform((v) => v === "true" || v === "1");
/** A whole number given as an environment variable (a string), within [min, max]. */
export const envInt = (min: number, max: number) =>
  z
    .string()
    .regex(/^[0-9]+$/, "must be a whole number")
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

/** Headers a presigned PUT signs (X-Amz-SignedHeaders): the request must carry exactly these values. */
export const SignedHeaders = z.record(z.string().regex(/^[a-z0-9-]+$/, "header names are lower case"), z.string());

/** SignedHeaders as an env var: a JSON object. */
const SignedHeadersJson = z
  .string()
  .transform((s, ctx) => {
    try {
      return JSON.parse(s) as unknown;
    } catch {
      ctx.addIssue({ code: "custom", message: "must be a JSON object of header names to values" });
      return z.NEVER;
    }
  })
  .pipe(SignedHeaders);

export const MachineEnv = z.object({
  TASK_ID: TaskId,
  BATCH_ID: BatchId,
  INPUT_R2_KEY: ObjectKey,
  OUTPUT_R2_KEY: ObjectKey,
  /** The phase the task belongs to: CHECKSUM runs the checksum mode; anything else (or unset) converts a TIFF. */
  PHASE: z.string().min(1).max(64).optional(),
  /**
   * Scoped access (the default): presigned GET of the input, and OUTPUTS_URL, where each output's
   * short-lived PUT URL is asked for right before its upload. OUTPUT_URL (a PUT URL of page 1 given
   * up front) is what orchestrators before OUTPUTS_URL sent; this worker still takes it.
   */
  INPUT_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }).optional(),
  OUTPUT_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }).optional(),
  OUTPUTS_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }).optional(),
  /** The headers OUTPUT_URL signs (content type, writer, If-None-Match / If-Match): the PUT sends exactly these. */
  OUTPUT_HEADERS: SignedHeadersJson.optional(),
  ATTEMPT: envInt(1, 1_000_000).optional(),
  /** The input's size as the orchestrator saw it (listing or manifest): the worker reads no more than this. */
  INPUT_SIZE: envInt(1, Number.MAX_SAFE_INTEGER).optional(),
  CREDENTIALS_EXPIRE_AT: z.string().optional(),
  /** The old contract (MACHINE_STORAGE=legacy-keys): the R2 key pair. */
  R2_ACCOUNT_ID: z.string().optional(),
  R2_ACCESS_KEY_ID: z.string().optional(),
  R2_SECRET_ACCESS_KEY: z.string().optional(),
  R2_BUCKET: z.string().optional(),
  CALLBACK_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }),
  CALLBACK_TOKEN: z.string().min(1, "must be set"),
  R2_ENDPOINT: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }).optional(),
  JPEG_QUALITY: envInt(1, 100).default(95),
  MOZJPEG: envBool.default(true),
  /** The machine's memory; the worker picks encoder settings that fit in it. */
  MEMORY_MB: envInt(128, 262144).optional(),
  /** Largest image (width × height) the worker accepts. */
  MAX_INPUT_PIXELS: envInt(1, 10_000_000_000).optional(),
  FLY_MACHINE_ID: z.string().optional(),
  FLY_APP_NAME: z.string().optional(),
  FLY_REGION: z.string().optional(),
});
export type MachineEnv = z.infer<typeof MachineEnv>;
/** Names in MachineEnv whose values are secret: never logged, never in status output. */
export const SECRET_ENV_NAMES = ["R2_SECRET_ACCESS_KEY", "CALLBACK_TOKEN", "R2_ACCESS_KEY_ID", "INPUT_URL", "OUTPUT_URL"] as const;

// ---------------------------------------------------------------------------------------
// Callback POST {CALLBACK_URL} = /callback/:batchId/:taskId

export const Performance = z.looseObject({
  total_time_ms: z.number().nonnegative(),
  download_time_ms: z.number().nonnegative().optional(),
  conversion_time_ms: z.number().nonnegative().optional(),
  upload_time_ms: z.number().nonnegative().optional(),
  /** CPU-seconds the task cost the machine's process (user + system, process.cpuUsage), its share when slots ran side by side. */
  cpu_s: z.number().nonnegative().max(1e6).optional(),
  /** Megapixels the task converted (every output page's width × height). The orchestrator sizes from CPU-s per megapixel. */
  megapixels: z.number().positive().max(1e6).optional(),
});

export const CallbackOutput = z.looseObject({
  r2_key: ObjectKey,
  file_name: z.string().min(1),
  file_size: z.number().int().nonnegative(),
  content_type: z.string().optional(),
  page: z.number().int().positive().optional(),
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
});
export type CallbackOutput = z.infer<typeof CallbackOutput>;

/** What every phase's success callback says: the task, and its (first) output file. A phase extends it. */
export const SuccessCore = z.looseObject({
  task_id: TaskId,
  batch_id: BatchId,
  status: z.literal("success"),
  output_r2_key: ObjectKey,
  output_file_name: z.string().min(1),
  output_file_size: z.number().int().nonnegative(),
  performance: Performance.optional(),
});

export const CallbackSuccess = SuccessCore.extend({
  /** Every output file when the input produced more than one (multi-page TIFF). */
  outputs: z.array(CallbackOutput).max(MAX_PAGES_PER_TASK, `a task writes at most ${MAX_PAGES_PER_TASK} outputs (MAX_PAGES_PER_TASK)`).optional(),
  pages: z.number().int().positive().optional(),
  width: z.number().int().positive().optional(),
  height: z.number().int().positive().optional(),
  /** Pages of the input that could not be converted (1-based), each with its reason: never dropped silently. */
  pages_skipped: z.array(z.object({ page: z.number().int().positive(), reason: z.string().min(1).max(1000) })).max(10_000).optional(),
  /** Converted pages the operator should know about (a range rule applied, a bad colour profile ignored). */
  page_notes: z.array(z.object({ page: z.number().int().positive(), note: z.string().min(1).max(1000) })).max(10_000).optional(),
  /** The JPEG settings used (of the first output page). */
  jpeg: z
    .looseObject({
      quality: z.number().int().min(1).max(100),
      chroma: z.enum(["4:2:0", "4:4:4"]),
      mozjpeg: z.boolean(),
      channels: z.union([z.literal(1), z.literal(3)]),
    })
    .optional(),
});
export const CallbackError = z.looseObject({
  task_id: TaskId,
  batch_id: BatchId,
  status: z.literal("error"),
  error: z.string().min(1).max(4000),
});
/** A phase's error callback that may say running the task again cannot help (`retryable: false`). */
export const PhaseCallbackError = CallbackError.extend({ retryable: z.boolean().optional() });
export const CallbackBody = z.discriminatedUnion("status", [CallbackSuccess, CallbackError]);
export type CallbackSuccess = z.infer<typeof CallbackSuccess>;
export type CallbackError = z.infer<typeof CallbackError>;
export type CallbackBody = z.infer<typeof CallbackBody>;

/** Largest callback body the orchestrator reads. */
export const MAX_CALLBACK_BYTES = 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Status output of GET /status/:batchId

export const BATCH_TERMINAL = ["DONE", "ERROR"] as const;
export const TASK_STATUSES = ["pending", "starting", "running", "retrying", "done", "failed"] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

/** Turns a zod error into one line a person can act on: `field: problem; field: problem`. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      const where = issue.path.length > 0 ? issue.path.join(".") : "(root)";
      return `${where}: ${issue.message}`;
    })
    .join("; ");
}

// ---------------------------------------------------------------------------------------
// Pool mode: a machine converts task after task, leasing each from its batch.

/** Env of a pool machine; each leased task adds its own TASK_ID, keys and callback. */
export const PoolEnv = z.object({
  POOL_MODE: z.literal("true"),
  BATCH_ID: BatchId,
  WORKER_ID: z.string().min(1, "must be set"),
  LEASE_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }),
  LEASE_TOKEN: z.string().min(1, "must be set"),
  /** Exit after this long without work. */
  IDLE_TIMEOUT_MS: envInt(0, 3_600_000).default(60_000),
  /** Tasks converted at once (one lease loop each); MEMORY_MB is then each one's budget. */
  POOL_CONCURRENCY: envInt(1, 16).default(1),
});
export type PoolEnv = z.infer<typeof PoolEnv>;

/** A lease request names the machine asking (FLY_MACHINE_ID): only the machine the engine created for that worker may lease. */
export const LeaseRequest = z.object({
  worker_id: z.string().min(1).max(128),
  machine_id: z.string().min(1, "machine_id must name the machine asking (FLY_MACHINE_ID)").max(64),
});
export type LeaseRequest = z.infer<typeof LeaseRequest>;

/** A renewed lease credential, in every lease and heartbeat answer: the machine uses the newest from then on. */
const RenewedToken = z.string().min(1).optional();

export const LeaseResponse = z.discriminatedUnion("kind", [
  z.object({
    kind: z.literal("task"),
    task_id: TaskId,
    /** Task env to lay over the machine's own (TASK_ID, INPUT/OUTPUT keys, CALLBACK_URL/TOKEN…). */
    env: z.record(z.string(), z.string()),
    lease_ms: z.number().int().positive(),
    heartbeat_ms: z.number().int().positive(),
    lease_token: RenewedToken,
  }),
  /** Work may come back (a retry's backoff, a lease that may expire): ask again after wait_ms. */
  z.object({ kind: z.literal("wait"), wait_ms: z.number().int().positive(), lease_token: RenewedToken }),
  /** Nothing left for this machine: exit. */
  z.object({ kind: z.literal("done"), reason: z.string() }),
]);
export type LeaseResponse = z.infer<typeof LeaseResponse>;

export const HeartbeatRequest = z.object({ worker_id: z.string().min(1).max(128), machine_id: LeaseRequest.shape.machine_id, task_id: TaskId });
/** The answer to a heartbeat: kept (with a renewed lease credential), or lost and why. */
export const HeartbeatReply = z.looseObject({ ok: z.boolean(), reason: z.string().optional(), lease_token: RenewedToken });
export type HeartbeatRequest = z.infer<typeof HeartbeatRequest>;

export const leaseSubject = (batchId: string, workerId: string) => `${batchId}/worker/${workerId}`;

/**
 * POST /outputs/:batchId/:taskId — a machine reserves the keys of its pages (`pages`: keys of pages
 * 1…pages, no URL), or asks for one page's upload URL right before it uploads it (`page`).
 */
export const ReserveRequest = z
  .object({
    pages: z.number().int().min(1).max(MAX_PAGES_PER_TASK, `a task writes at most ${MAX_PAGES_PER_TASK} outputs (MAX_PAGES_PER_TASK)`).optional(),
    page: z.number().int().min(1).max(MAX_PAGES_PER_TASK, `a task writes at most ${MAX_PAGES_PER_TASK} outputs (MAX_PAGES_PER_TASK)`).optional(),
  })
  .refine((r) => (r.pages === undefined) !== (r.page === undefined), { message: "give either pages (reserve keys) or page (one upload URL)" });
export type ReserveRequest = z.infer<typeof ReserveRequest>;
export const ReserveResponse = z.object({
  batch_id: BatchId,
  task_id: TaskId,
  attempt: z.number().int().positive(),
  /**
   * The reserved keys by page; for `page`, that page's PUT URL (valid until `expires_at`, a few
   * minutes) and the headers it signs (content type, writer, condition): send exactly these.
   */
  outputs: z.array(
    z.object({
      page: z.number().int().min(1),
      r2_key: ObjectKey,
      url: z.url().optional(),
      headers: SignedHeaders.optional(),
      expires_at: z.string().optional(),
    }),
  ),
});
export type ReserveResponse = z.infer<typeof ReserveResponse>;
