// What a create POST's answer means: created, rate limited (429: wait Retry-After), no capacity
// in this region (try the next), worth retrying (5xx, 408), or a request Fly refuses as it is
// (invalid). Documented behaviours, exported so the client and its tests share one reading of them.
import { parseRetryAfter } from "../../shared/backoff.ts";
import { type CreateOutcome, type FlyMachine, MachineWire, parseError, safeJson, toFlyMachine } from "./api.ts";

/** Fly's status field for "no host in this region can place the machine" (fly-go flaps_error.go). */
export const CAPACITY_STATUS = "insufficient_capacity";

// flyd's reservation phrases, for bodies the API does not classify with a status field.
const CAPACITY_PHRASES =
  /insufficient (resources|memory|cpus|ips) available to fulfill request|could not reserve resource|no capacity|over the allowed quota/i;

/** True when a failed create means "try another region", not "the request is wrong". */
export function isCapacityError(status: number, body: { error?: string; status?: string }): boolean {
  if (body.status === CAPACITY_STATUS) return true;
  if (body.status !== undefined && body.status !== "" && body.status !== "unknown") return false;
  return [403, 409, 412, 422, 503].includes(status) && CAPACITY_PHRASES.test(body.error ?? "");
}

/** One create answer, classified; messages are Fly's text as it came (the client redacts them). */
export type CreateAnswer =
  | { kind: "created"; machine: FlyMachine }
  | { kind: "rate_limited"; retryAfterMs: number }
  | { kind: "capacity"; message: string }
  | { kind: "retry"; message: string }
  | { kind: "invalid"; status: number; message: string }
  | { kind: "unknown"; message: string };

export function classifyCreateAnswer(status: number, headers: Headers, text: string): CreateAnswer {
  if (status >= 200 && status < 300) {
    const parsed = MachineWire.safeParse(safeJson(text));
    if (!parsed.success) return { kind: "unknown", message: `create answered ${status} with an unexpected body` };
    return { kind: "created", machine: toFlyMachine(parsed.data) };
  }
  if (status === 429) return { kind: "rate_limited", retryAfterMs: retryAfterOr1s(headers) };
  const error = parseError(text);
  if (isCapacityError(status, error)) return { kind: "capacity", message: error.error ?? `HTTP ${status}` };
  if (status >= 500 || status === 408) return { kind: "retry", message: `HTTP ${status}: ${error.error ?? text}` };
  return { kind: "invalid", status, message: error.error ?? `HTTP ${status}` };
}

/** The fields of a create's outcome for its log line. */
export function outcomeFields(outcome: CreateOutcome): Record<string, unknown> {
  switch (outcome.kind) {
    case "created":
      return { machine_id: outcome.machineId, region: outcome.region, state: outcome.state };
    case "rate_limited":
      return { retry_after_ms: outcome.retryAfterMs };
    case "invalid":
      return { status: outcome.status, message: outcome.message };
    case "unknown":
    case "no_capacity":
      return { message: outcome.message };
    case "budget":
      return outcome.retryAt === undefined ? {} : { retry_at: new Date(outcome.retryAt).toISOString() };
  }
}

/** A 429 without a readable Retry-After waits 1 s (Fly's create limit refills at ~1/s); reads use it too. */
export function retryAfterOr1s(headers: Headers): number {
  return parseRetryAfter(headers.get("retry-after"), Date.now()) ?? 1000;
}
