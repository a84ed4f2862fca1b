// Delivers the task's result to the orchestrator. Retried with backoff on network errors,
// 5xx, 408 and 429 (the orchestrator is busy or restarting); other 4xx mean the request
// itself is wrong, so repeating it cannot help.
import { setTimeout as sleep } from "node:timers/promises";
import { request } from "undici";
import type { z } from "zod";
import { backoffMs, parseRetryAfter } from "../shared/backoff.ts";
import { CallbackBody, MAX_CALLBACK_BYTES, describeZodError } from "../shared/contracts.ts";
import { errorMessage } from "./errors.ts";
import { log } from "./log.ts";

/** A callback body of any phase: the schema it is sent with says what else it holds. */
export type SendableBody = { task_id: string; batch_id: string; status: "success" | "error" } & Record<string, unknown>;

export interface CallbackOptions {
  maxAttempts: number;
  backoffMs: number;
  timeoutMs: number;
}

export type CallbackOutcome =
  | { delivered: true; status: number; attempts: number }
  | { delivered: false; status?: number; attempts: number; reason: string };

const MAX_DELAY_MS = 30_000;
/** A server asking for a longer wait than this is not waited for longer (the machine costs money idle). */
const MAX_RETRY_AFTER_MS = 60_000;

/** The server's Retry-After (seconds or an HTTP date) when it sent one, else backoff with jitter. */
function callbackRetryDelay(attempt: number, baseMs: number, retryAfter: string | undefined, nowMs = Date.now()): number {
  const asked = parseRetryAfter(retryAfter, nowMs);
  if (asked !== undefined) return Math.min(asked, MAX_RETRY_AFTER_MS);
  return backoffMs(attempt, baseMs, MAX_DELAY_MS); // jitter: callbacks of a batch don't retry in step
}

/** Posts `body` (checked first against `schema`, the phase's callback contract) with the bearer token. */
export async function sendCallback(url: string, token: string, body: SendableBody, options: CallbackOptions, schema: z.ZodType = CallbackBody): Promise<CallbackOutcome> {
  const checked = schema.safeParse(body);
  if (!checked.success) {
    // Our own bug: say so rather than send something the orchestrator will reject.
    return { delivered: false, attempts: 0, reason: `callback body breaks the contract: ${describeZodError(checked.error)}` };
  }
  const payload = JSON.stringify(checked.data);
  if (Buffer.byteLength(payload) > MAX_CALLBACK_BYTES) {
    return { delivered: false, attempts: 0, reason: `callback body is ${Buffer.byteLength(payload)} bytes, over ${MAX_CALLBACK_BYTES}` };
  }
  let last: CallbackOutcome = { delivered: false, attempts: 0, reason: "not attempted" };
  for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
    const start = performance.now();
    let retryAfter: string | undefined;
    try {
      const response = await request(url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: payload,
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      });
      const text = (await response.body.text()).slice(0, 500);
      const ms = Math.round(performance.now() - start);
      if (response.statusCode < 300) {
        log.info("Callback", "callback.delivered", { status: body.status, http_status: response.statusCode, attempt, duration_ms: ms });
        return { delivered: true, status: response.statusCode, attempts: attempt };
      }
      const header = response.headers["retry-after"];
      retryAfter = Array.isArray(header) ? header[0] : header;
      const retryable = response.statusCode >= 500 || response.statusCode === 408 || response.statusCode === 429;
      last = { delivered: false, status: response.statusCode, attempts: attempt, reason: `HTTP ${response.statusCode}: ${text}` };
      log.warn("Callback", "callback.rejected", { http_status: response.statusCode, attempt, retryable, duration_ms: ms, response: text });
      if (!retryable) return last;
    } catch (error) {
      last = { delivered: false, attempts: attempt, reason: `network error: ${errorMessage(error)}` };
      log.warn("Callback", "callback.network_error", { attempt, error: errorMessage(error), duration_ms: Math.round(performance.now() - start) });
    }
    if (attempt < options.maxAttempts) await sleep(callbackRetryDelay(attempt, options.backoffMs, retryAfter));
  }
  return last;
}
