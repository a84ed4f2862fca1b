// Pool mode: the machine leases task after task from its batch and converts each exactly as
// single-task mode does (same pipeline, same callback). A lease is kept by heartbeats while the
// task runs; the loop ends when the batch says done, after IDLE_TIMEOUT_MS without work, or when
// the lease endpoint refuses the machine (401/404) or stays unreachable.
import { setTimeout as sleep } from "node:timers/promises";
import { request } from "undici";
import { z } from "zod";
import { backoffMs, parseRetryAfter } from "../shared/backoff.ts";
import { HeartbeatReply, HeartbeatRequest, LeaseRequest, LeaseResponse, describeZodError } from "../shared/contracts.ts";
import { configureSharp } from "./convert.ts";
import { parseEnv, parsePoolEnv, setVariables, type PoolMachineEnv } from "./env.ts";
import { errorMessage } from "./errors.ts";
import { EXIT, type ExitCode } from "./exit-codes.ts";
import { forgetSecrets, log, registerSecrets, setLogContext, since, withLogContext } from "./log.ts";
import { convertTask, reportBadEnv } from "./run.ts";
import { limitDownloads } from "./storage.ts";

type TaskLease = Extract<LeaseResponse, { kind: "task" }>;

/** What a lease request came to: an answer, or a reason to stop the machine. */
type LeaseResult = { kind: "answer"; lease: LeaseResponse } | { kind: "exit"; code: ExitCode; reason: string };

const MAX_LEASE_DELAY_MS = 5000;

export async function runPool(source: NodeJS.ProcessEnv): Promise<ExitCode> {
  registerSecrets([source.R2_SECRET_ACCESS_KEY, source.R2_ACCESS_KEY_ID, source.LEASE_TOKEN]);
  setLogContext({ machine_id: source.FLY_MACHINE_ID ?? null, batch_id: source.BATCH_ID ?? null, worker_id: source.WORKER_ID ?? null, task_id: null });
  const parsed = parsePoolEnv(source);
  if (!parsed.ok) {
    log.error("Env", "env.invalid", { message: `the pool machine's environment is unusable: ${parsed.problems.join("; ")}`, problems: parsed.problems });
    return EXIT.BAD_ENV;
  }
  const pool = parsed.env;
  setLogContext({ batch_id: pool.BATCH_ID, worker_id: pool.WORKER_ID });
  configureSharp();
  limitDownloads(1); // the slots take turns downloading (fly-worker/storage.ts says why)
  // The machine's own variables win over a lease's: its R2 credentials, MEMORY_MB, FLY_*.
  const machineVars = setVariables(source);
  const client = new LeaseClient(pool);
  const stats = { tasks: 0, failed: 0 };
  log.info("Pool", "pool.start", { lease_url: pool.LEASE_URL, idle_timeout_ms: pool.IDLE_TIMEOUT_MS, memory_mb: pool.MEMORY_MB ?? null, node: process.version });

  const exit = (code: ExitCode, event: string, reason: string) => {
    (code === EXIT.SUCCESS ? log.info : log.error)("Pool", event, { reason, exit_code: code, ...stats, uptime_ms: Math.round(performance.now()) });
    return code;
  };
  // POOL_CONCURRENCY lease loops share the machine; it exits when every loop has ended.
  const slot = async (): Promise<ExitCode> => {
    let idleSince = performance.now();
    for (;;) {
      const result = await client.lease();
      if (result.kind === "exit") return exit(result.code, "pool.exit", result.reason);
      const lease = result.lease;
      if (lease.kind === "done") return exit(EXIT.SUCCESS, "pool.done", lease.reason);
      if (lease.kind === "wait") {
        const idleMs = performance.now() - idleSince;
        if (idleMs >= pool.IDLE_TIMEOUT_MS) return exit(EXIT.SUCCESS, "pool.idle", `no task for ${Math.round(idleMs)} ms (IDLE_TIMEOUT_MS=${pool.IDLE_TIMEOUT_MS})`);
        // Never sleep past the idle deadline: ask once more, then exit if there is still nothing.
        await sleep(Math.max(1, Math.min(lease.wait_ms, pool.IDLE_TIMEOUT_MS - idleMs)));
        continue;
      }
      stats.tasks++;
      const ok = await withLogContext({ task_id: lease.task_id }, () => runLeasedTask(client, lease, machineVars));
      if (!ok) stats.failed++;
      idleSince = performance.now();
    }
  };
  const codes = await Promise.all(Array.from({ length: pool.POOL_CONCURRENCY }, (_, i) => withLogContext({ slot: i + 1 }, slot)));
  return codes.find((code) => code !== EXIT.SUCCESS) ?? EXIT.SUCCESS;
}

/** One leased task, heartbeats kept while it runs. False when it failed (its callback says how). */
async function runLeasedTask(client: LeaseClient, lease: TaskLease, machineVars: Record<string, string>): Promise<boolean> {
  const started = performance.now();
  const taskVars = { ...lease.env, ...machineVars };
  const token = taskVars.CALLBACK_TOKEN;
  const secrets = [token, taskVars.INPUT_URL, taskVars.OUTPUT_URL];
  registerSecrets(secrets);
  log.info("Pool", "task.leased", { lease_ms: lease.lease_ms, heartbeat_ms: lease.heartbeat_ms });
  const heartbeats = client.keepLease(lease.task_id, lease.heartbeat_ms);
  try {
    const parsed = parseEnv(taskVars);
    const problems = parsed.ok ? (parsed.env.TASK_ID === lease.task_id ? [] : [`TASK_ID: the lease is for ${lease.task_id} but its env says ${parsed.env.TASK_ID}`]) : parsed.problems;
    if (!parsed.ok || problems.length > 0) {
      // The lease's env cannot run here, nor on another machine of this pool.
      log.error("Env", "env.invalid", { message: `leased task's environment is unusable: ${problems.join("; ")}`, problems });
      const target = parsed.ok ? { url: parsed.env.CALLBACK_URL, token: parsed.env.CALLBACK_TOKEN, batchId: parsed.env.BATCH_ID, taskId: lease.task_id } : parsed.callback;
      const delivered = target ? await reportBadEnv(target, problems) : false;
      if (!target) log.error("Env", "env.no_callback", { message: "no error callback sent: the lease's CALLBACK_URL, CALLBACK_TOKEN or task identity is unusable; the lease will lapse" });
      await heartbeats.stop(); // the summary counts every heartbeat the orchestrator answered, none in flight
      log.info("Pool", "task.finished", { status: "error", delivered, duration_ms: since(started), ...heartbeats.summary() });
      return false;
    }
    const outcome = await convertTask(parsed.env, started);
    await heartbeats.stop();
    log.info("Pool", "task.finished", { status: outcome.status, exit_code: outcome.code, delivered: outcome.delivered, duration_ms: since(started), ...heartbeats.summary() });
    return outcome.status === "success" && outcome.delivered;
  } finally {
    await heartbeats.stop();
    forgetSecrets(secrets);
  }
}

interface Reply {
  status: number;
  text: string;
  retryAfter?: string;
}

/**
 * Speaks the lease protocol: POST LEASE_URL and POST LEASE_URL/heartbeat, bearer the lease
 * credential. LEASE_TOKEN (from the create) is good for the first lease only; every answer carries
 * a renewed one, short-lived, which every slot uses from then on.
 */
class LeaseClient {
  private readonly env: PoolMachineEnv;
  private readonly base: string;
  private token: string;
  private previous: string | undefined;

  constructor(env: PoolMachineEnv) {
    this.env = env;
    this.base = env.LEASE_URL.replace(/\/+$/, "");
    this.token = env.LEASE_TOKEN;
  }

  /** Takes the renewed credential an answer carries (a secret like the first: never logged). */
  private renew(token: string | undefined): void {
    if (!token || token === this.token) return;
    registerSecrets([token]);
    // The one before stays scrubbed: a request may still be carrying it.
    if (this.previous) forgetSecrets([this.previous]);
    this.previous = this.token;
    this.token = token;
  }

  private async post(url: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<Reply> {
    const response = await request(url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${this.token}` },
      body: JSON.stringify(body),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal,
    });
    const header = response.headers["retry-after"];
    return { status: response.statusCode, text: (await response.body.text()).slice(0, 2000), retryAfter: Array.isArray(header) ? header[0] : header };
  }

  /** The next lease answer, retried on network errors and 5xx for LEASE_RETRY_WINDOW_MS. */
  async lease(): Promise<LeaseResult> {
    const body: LeaseRequest = LeaseRequest.parse({ worker_id: this.env.WORKER_ID, machine_id: this.env.FLY_MACHINE_ID });
    let firstFailure: number | null = null;
    for (let attempt = 1; ; attempt++) {
      const start = performance.now();
      let failure: string;
      let retryAfter: string | undefined;
      try {
        const reply = await this.post(this.base, body, this.env.LEASE_REQUEST_TIMEOUT_MS);
        retryAfter = reply.retryAfter;
        if (reply.status === 200) {
          const answer = parseJson(reply.text, LeaseResponse);
          if (answer.ok) {
            if (answer.value.kind !== "done") this.renew(answer.value.lease_token);
            if (attempt > 1) log.info("Pool", "lease.recovered", { attempts: attempt });
            return { kind: "answer", lease: answer.value };
          }
          failure = `the lease answer breaks the contract: ${answer.problem}`;
        } else if (reply.status === 401 || reply.status === 403) {
          return this.refused(`the orchestrator refused LEASE_TOKEN for worker ${this.env.WORKER_ID} of batch ${this.env.BATCH_ID} (HTTP ${reply.status}: ${reply.text}); the token must be signed with the orchestrator's CALLBACK_SECRET for this batch and worker`);
        } else if (reply.status === 404) {
          return this.refused(`the orchestrator does not know batch ${this.env.BATCH_ID} at LEASE_URL ${this.env.LEASE_URL} (HTTP 404: ${reply.text}); check LEASE_URL and BATCH_ID`);
        } else if (reply.status < 500 && reply.status !== 408 && reply.status !== 429) {
          return this.refused(`the orchestrator rejected the lease request (HTTP ${reply.status}: ${reply.text}); check WORKER_ID and LEASE_URL`);
        } else {
          failure = `HTTP ${reply.status}: ${reply.text}`;
        }
      } catch (error) {
        failure = `network error: ${errorMessage(error)}`;
      }
      const now = performance.now();
      firstFailure ??= start;
      const failingMs = now - firstFailure;
      if (failingMs >= this.env.LEASE_RETRY_WINDOW_MS) {
        return {
          kind: "exit",
          code: EXIT.LEASE_UNREACHABLE,
          reason: `the lease endpoint ${this.env.LEASE_URL} failed for ${Math.round(failingMs)} ms (${attempt} attempts; last: ${failure}); giving up so the machine does not idle unseen`,
        };
      }
      const delay = retryDelay(attempt, this.env.LEASE_BACKOFF_MS, retryAfter);
      log.warn("Pool", "lease.retry", { attempt, error: failure, retry_in_ms: delay, failing_for_ms: Math.round(failingMs) });
      await sleep(Math.min(delay, Math.max(1, this.env.LEASE_RETRY_WINDOW_MS - failingMs)));
    }
  }

  private refused(reason: string): LeaseResult {
    log.error("Pool", "lease.refused", { message: reason });
    return { kind: "exit", code: EXIT.BAD_ENV, reason };
  }

  /** Heartbeats every `everyMs` until stop(); a lost lease (409) ends them, the task goes on. */
  keepLease(taskId: string, everyMs: number): { stop(): Promise<void>; summary(): { heartbeats: number; lease_lost: boolean } } {
    const stopping = new AbortController();
    const body: HeartbeatRequest = { worker_id: this.env.WORKER_ID, machine_id: this.env.FLY_MACHINE_ID, task_id: taskId };
    let sent = 0;
    let lost = false;
    const loop = (async () => {
      while (!stopping.signal.aborted && !lost) {
        try {
          await sleep(everyMs, undefined, { signal: stopping.signal });
        } catch {
          return; // stopped
        }
        const start = performance.now();
        try {
          // Not aborted by stop(): a heartbeat already sent is answered and counted (its timeout bounds the wait).
          const reply = await this.post(`${this.base}/heartbeat`, body, Math.min(everyMs, this.env.LEASE_REQUEST_TIMEOUT_MS));
          sent++;
          if (reply.status === 200) {
            const kept = parseJson(reply.text, HeartbeatReply);
            if (kept.ok) this.renew(kept.value.lease_token);
            continue;
          }
          if (reply.status === 409) {
            lost = true;
            const reason = parseJson(reply.text, HeartbeatReply);
            log.warn("Pool", "lease.lost", {
              reason: reason.ok ? (reason.value.reason ?? "lease lost") : reply.text,
              message: "finishing the task anyway; the orchestrator counts or ignores its callback",
            });
          } else if (reply.status === 401 || reply.status === 403 || reply.status === 404) {
            lost = true;
            log.error("Pool", "heartbeat.refused", { http_status: reply.status, response: reply.text, message: "heartbeats stopped; finishing the task anyway" });
          } else {
            log.warn("Pool", "heartbeat.failed", { http_status: reply.status, response: reply.text, duration_ms: since(start) });
          }
        } catch (error) {
          if (stopping.signal.aborted) return;
          log.warn("Pool", "heartbeat.failed", { error: errorMessage(error), duration_ms: since(start) });
        }
      }
    })();
    return {
      async stop() {
        stopping.abort();
        await loop;
      },
      summary: () => ({ heartbeats: sent, lease_lost: lost }),
    };
  }
}

function parseJson<T>(text: string, schema: z.ZodType<T>): { ok: true; value: T } | { ok: false; problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, problem: `not JSON: ${text.slice(0, 200)}` };
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? { ok: true, value: parsed.data } : { ok: false, problem: describeZodError(parsed.error) };
}

/** The server's Retry-After (seconds or an HTTP date) when it sent one, else backoff with jitter; at most 5 s. */
function retryDelay(attempt: number, baseMs: number, retryAfter: string | undefined): number {
  const asked = parseRetryAfter(retryAfter, Date.now());
  if (asked !== undefined) return Math.min(asked, MAX_LEASE_DELAY_MS);
  return backoffMs(attempt, baseMs, MAX_LEASE_DELAY_MS); // jitter: a pool's machines don't retry in step
}
