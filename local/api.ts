// A small client of the orchestrator's HTTP API for the CLI, the demo and the e2e tests.
// Every failure becomes an ApiError whose message says what to do about it.
import { EventSourceParserStream, type EventSourceMessage } from "eventsource-parser/stream";
import { z } from "zod";
import { describeZodError, type QueueMessage } from "../shared/contracts.ts";

export class ApiError extends Error {
  readonly status: number | null;
  constructor(message: string, status: number | null = null) {
    super(message);
    this.status = status;
  }
}

/** No answer at all: the orchestrator is not listening there, or the network failed (the CLI's exit 4). */
export class UnreachableError extends ApiError {}

const Progress = z.looseObject({
  tasks_total: z.number(),
  tasks_completed: z.number(),
  tasks_failed: z.number(),
  pending: z.number().default(0),
  starting: z.number().default(0),
  running: z.number().default(0),
  retrying: z.number().default(0),
});

export const BatchStatus = z.looseObject({
  batch_id: z.string(),
  status: z.string(),
  phase: z.string().optional(),
  stage: z.string().optional(),
  /** Which run of the batch: 0 the first, N after redrive N (an older orchestrator: absent). */
  run: z.number().int().optional(),
  progress: Progress,
  started_at: z.string().nullable(),
  updated_at: z.string().nullable(),
  completed_at: z.string().nullable(),
  error: z.string().nullable(),
  mode: z.enum(["single", "pool"]).optional(),
  /** Per phase of the batch's pipeline that had work, in pipeline order. */
  phases: z
    .array(
      z.looseObject({
        name: z.string(),
        total: z.number(),
        done: z.number(),
        failed: z.number(),
        open: z.number(),
        machines: z.looseObject({ ended: z.number(), running: z.number(), machine_seconds: z.number(), estimated_cost_usd: z.number(), sizes: z.array(z.string()) }).optional(),
        /** The phase's all-in cost so far: machines, Fly egress of its outputs, its R2 operations. */
        cost: z.looseObject({ total_usd: z.number() }).optional(),
      }),
    )
    .default([]),
  pipeline: z.array(z.string()).optional(),
  /** The batch's machines: time from create to end, and its estimated cost at Fly's prices. */
  machines: z
    .looseObject({ ended: z.number(), running: z.number(), machine_seconds: z.number(), estimated_cost_usd: z.number() })
    .optional(),
  /** All in so far (orchestrator/engine/cost-view.ts): machines, Fly egress, R2 operations, the Durable Object, Worker requests. */
  cost: z
    .looseObject({
      machines_usd: z.number(),
      egress_usd: z.number(),
      r2_operations_usd: z.number(),
      durable_object_usd: z.number(),
      worker_requests_usd: z.number(),
      total_usd: z.number(),
      per_task_done_usd: z.number().nullable(),
      counted: z.looseObject({ do_rows_written: z.number() }),
    })
    .optional(),
  /** The current phase's plan and what it was sized from (null before the phase runs). */
  sizing: z
    .looseObject({
      objective: z.string().nullable(),
      plan: z.string(),
      work: z.looseObject({ basis: z.string(), measured_tasks: z.number(), cpu_s_per_mp: z.number().nullable() }),
      resized: z.looseObject({ from: z.string(), to: z.string() }).nullable(),
    })
    .nullable()
    .optional(),
  /** A batch with nothing to do, pages skipped, a dead-lettered copy of its message, … */
  warnings: z.array(z.string()).default([]),
  recent_failures: z
    .array(
      z.looseObject({
        task_id: z.string(),
        input_key: z.string().nullable().optional(),
        attempt: z.number(),
        machine_id: z.string().nullable(),
        error: z.string().nullable(),
        logs: z.string().nullable(),
      }),
    )
    .default([]),
});
export type BatchStatus = z.infer<typeof BatchStatus>;

export const TaskItem = z.looseObject({
  task_id: z.string(),
  phase: z.string(),
  status: z.string().optional(),
  attempt: z.number(),
  input_key: z.string(),
  output_key: z.string(),
  machine_id: z.string().nullable(),
  region: z.string().nullable(),
  error: z.string().nullable(),
  updated_at: z.string().nullable(),
  logs: z.string().nullable(),
});
export type TaskItem = z.infer<typeof TaskItem>;

const TaskPage = z.looseObject({ batch_id: z.string(), tasks: z.array(TaskItem), next_cursor: z.string().nullable() });

/** A row of the batch index (GET /batches). */
export const ListedBatch = z.looseObject({
  batch_id: z.string(),
  status: z.string(),
  mode: z.string(),
  progress: z.object({ tasks_total: z.number(), tasks_completed: z.number(), tasks_failed: z.number() }),
  started_at: z.string(),
  updated_at: z.string(),
  completed_at: z.string().nullable(),
  error: z.string().nullable(),
});
export type ListedBatch = z.infer<typeof ListedBatch>;
const BatchPage = z.object({ batches: z.array(ListedBatch), next_cursor: z.string().nullable() });

export const TASK_FILTERS = ["pending", "retrying", "starting", "running", "done", "failed"] as const;
export type TaskFilter = (typeof TASK_FILTERS)[number];

/** The batch has ended (a redrive may start it again). */
export const TERMINAL = new Set(["DONE", "FAILED", "ERROR"]);

export const HealthCheck = z.looseObject({
  name: z.string(),
  ok: z.boolean(),
  severity: z.enum(["error", "warning"]).optional(),
  problem: z.string().optional(),
  fix: z.string().optional(),
});
export type HealthCheck = z.infer<typeof HealthCheck>;
export const HealthReport = z.looseObject({ ok: z.boolean(), service: z.literal("fanout"), deep: z.boolean().default(false), checks: z.array(HealthCheck).default([]) });
export type HealthReport = z.infer<typeof HealthReport>;

export const RedriveResult = z.looseObject({ ok: z.literal(true), batch_id: z.string(), tasks: z.number().int(), status: z.string(), redrive: z.number().int() });
export type RedriveResult = z.infer<typeof RedriveResult>;
export const ResetResult = z.looseObject({
  batch_id: z.string(),
  status: z.string(),
  tasks_failed: z.number().default(0),
  machines_destroyed: z.number().default(0),
  machines_pending: z.number().default(0),
});
export type ResetResult = z.infer<typeof ResetResult>;

export interface ClientOptions {
  /** Base URL of the orchestrator, e.g. http://127.0.0.1:8787 */
  url: string;
  /** Needed for the admin routes (enqueue, reset); also accepted by the read routes. */
  adminToken?: string;
  /** Sent on the read routes (status, tasks, events, batches) when the orchestrator has READ_TOKEN set. */
  readToken?: string;
  timeoutMs?: number;
}

export class OrchestratorClient {
  readonly url: string;
  #token: string | undefined;
  #readToken: string | undefined;
  #timeoutMs: number;

  constructor(options: ClientOptions) {
    this.url = options.url.replace(/\/+$/, "");
    this.#token = options.adminToken;
    this.#readToken = options.readToken;
    this.#timeoutMs = options.timeoutMs ?? 15_000;
  }

  async health(): Promise<boolean> {
    try {
      const res = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(2000) });
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  }

  /** GET /health (deep: with the admin token); 503 answers are reports too. */
  async healthReport(deep = false): Promise<HealthReport> {
    const body = await this.#call("GET", deep ? "/health?deep=1" : "/health", { admin: deep, accept: [503] });
    return this.#parse(HealthReport, body, "health report");
  }

  /** GET /fleet: the Fly app's fleet (the caller checks its shape: local/cli/fleet.ts). */
  async fleet(): Promise<unknown> {
    return this.#call("GET", "/fleet");
  }

  /** The batch's status, or null when the orchestrator has no such batch. */
  async statusOrNull(batchId: string): Promise<BatchStatus | null> {
    try {
      return await this.status(batchId);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }
  }

  async enqueue(message: QueueMessage): Promise<{ batch_id: string; status_url: string }> {
    const body = await this.#call("POST", "/admin/batches", { admin: true, body: message });
    return z.looseObject({ batch_id: z.string(), status_url: z.string() }).parse(body);
  }

  async status(batchId: string): Promise<BatchStatus> {
    return this.#parse(BatchStatus, await this.#call("GET", `/status/${encodeURIComponent(batchId)}`, { batchId }), "status");
  }

  async tasks(batchId: string, options: { status?: TaskFilter; cursor?: string | null; limit?: number } = {}) {
    const q = new URLSearchParams();
    if (options.status) q.set("status", options.status);
    if (options.cursor) q.set("cursor", options.cursor);
    q.set("limit", String(options.limit ?? 500));
    return this.#parse(TaskPage, await this.#call("GET", `/status/${encodeURIComponent(batchId)}/tasks?${q}`, { batchId }), "task list");
  }

  /** Every task of the batch (optionally of one status), page by page. */
  async allTasks(batchId: string, status?: TaskFilter): Promise<TaskItem[]> {
    const out: TaskItem[] = [];
    let cursor: string | null = null;
    do {
      const page = await this.tasks(batchId, { status, cursor, limit: 1000 });
      out.push(...page.tasks);
      cursor = page.next_cursor;
    } while (cursor);
    return out;
  }

  /** One page of the batch index, newest first. */
  async batches(query: { status?: string; limit: number; cursor?: string | null }): Promise<z.infer<typeof BatchPage>> {
    const q = new URLSearchParams({ limit: String(query.limit) });
    if (query.status) q.set("status", query.status);
    if (query.cursor) q.set("cursor", query.cursor);
    return this.#parse(BatchPage, await this.#call("GET", `/batches?${q}`), "batch list");
  }

  async reset(batchId: string): Promise<ResetResult> {
    const body = await this.#call("POST", `/admin/reset/${encodeURIComponent(batchId)}`, { admin: true, batchId });
    return this.#parse(ResetResult, body, "reset answer");
  }

  /** Re-runs only the failed tasks of a finished batch. */
  async redrive(batchId: string): Promise<RedriveResult> {
    const body = await this.#call("POST", `/admin/redrive/${encodeURIComponent(batchId)}`, { admin: true, batchId });
    return this.#parse(RedriveResult, body, "redrive answer");
  }

  /**
   * GET /status/:id/events: the batch's Server-Sent Events, parsed (eventsource-parser), from after
   * `lastEventId`. Ends when the server ends the stream; an answer other than a 200 stream throws.
   */
  async *events(batchId: string, options: { lastEventId?: string; signal?: AbortSignal } = {}): AsyncGenerator<EventSourceMessage> {
    const path = `/status/${encodeURIComponent(batchId)}/events`;
    const headers: Record<string, string> = { accept: "text/event-stream", ...this.#readHeaders() };
    if (options.lastEventId) headers["last-event-id"] = options.lastEventId;
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, { headers, signal: options.signal });
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new UnreachableError(`cannot reach the orchestrator at ${this.url} for ${path} (${error instanceof Error ? error.message : String(error)})`);
    }
    if (res.status !== 200 || !res.body || !(res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
      const text = await res.text().catch(() => "");
      const said = (() => {
        try {
          return String((JSON.parse(text) as { error?: unknown }).error ?? text);
        } catch {
          return text.slice(0, 200) || res.statusText;
        }
      })();
      throw new ApiError(`GET ${path} answered ${res.status}${res.ok ? ` (${res.headers.get("content-type")}, not an event stream)` : ""}: ${said}`, res.status);
    }
    yield* res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
  }

  /** The read routes accept the read token or the admin token. */
  #readHeaders(): Record<string, string> {
    const token = this.#readToken ?? this.#token;
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  #parse<T extends z.ZodType>(schema: T, body: unknown, what: string): z.infer<T> {
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      throw new ApiError(`the orchestrator at ${this.url} answered an unexpected ${what}: ${describeZodError(parsed.error)}`);
    }
    return parsed.data;
  }

  /** `batchId` names the batch in a 404's message; `accept` lists non-2xx statuses whose body is the answer. */
  async #call(method: string, path: string, options: { admin?: boolean; body?: unknown; batchId?: string; accept?: number[] } = {}): Promise<unknown> {
    const headers: Record<string, string> = {};
    if (options.body !== undefined) headers["content-type"] = "application/json";
    if (options.admin) {
      if (!this.#token) throw new ApiError("ADMIN_TOKEN is not set: the admin routes need it (for the local stack, `npm start` prints where it is)");
      headers.authorization = `Bearer ${this.#token}`;
    } else Object.assign(headers, this.#readHeaders());
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (error) {
      const inner = error instanceof Error ? (error.cause as { code?: string; message?: string } | undefined) : undefined;
      const cause = inner?.code ?? inner?.message ?? (error instanceof Error ? error.message : String(error));
      throw new UnreachableError(`cannot reach the orchestrator at ${this.url} (${cause}). Is it running (\`npm start\`)? Set ORCHESTRATOR_URL to its address.`);
    }
    const text = await res.text();
    let body: unknown = undefined;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON: described below
    }
    if (res.ok || options.accept?.includes(res.status)) return body;
    const reason = (body as { error?: unknown } | undefined)?.error;
    const said = typeof reason === "string" ? reason : text.slice(0, 200) || res.statusText;
    if (res.status === 401) {
      throw new ApiError(
        options.admin
          ? `the orchestrator at ${this.url} refused the admin token (401: ${said}). Check ADMIN_TOKEN; for the local stack it is in .local/stack/secrets.json.`
          : `the orchestrator at ${this.url} refused to show ${path} (401: ${said}). Set READ_TOKEN (or ADMIN_TOKEN) to the orchestrator's.`,
        401,
      );
    }
    if (res.status === 404 && said === "unknown batch") {
      throw new ApiError(`no such batch on ${this.url}: ${options.batchId ?? "(unnamed)"}`, 404);
    }
    throw new ApiError(`${method} ${path} failed: the orchestrator answered ${res.status}: ${said}`, res.status);
  }
}
