// What a create POST's answer means, read as Fly documents and answers it
// (https://fly.io/docs/machines/api/working-with-machines-api/#response-codes, and the refusals
// quoted below): created; rate limited (429: wait Retry-After); no room in this region (try the
// next); the organisation's quota (422 "machines limit": stop; 403 "over the allowed quota. please
// consider other regions": try the next); worth retrying (5xx, 408); or a request Fly refuses as it
// is (invalid: the field to fix is named). Exported so the client and its tests share one reading.
import { parseRetryAfter } from "../../shared/backoff.ts";
import { type CreateOutcome, type FlyMachine, MachineWire, parseError, type QuotaResource, safeJson, toFlyMachine } from "./api.ts";

/** Fly's status field for "no host in this region can place the machine" (fly-go flaps_error.go). */
export const CAPACITY_STATUS = "insufficient_capacity";

// flyd's reservation phrases, for bodies the API does not classify with a status field.
const CAPACITY_PHRASES = /insufficient (resources|memory|cpus|ips) available to fulfill request|could not reserve resource|no capacity/i;
// A resource quota in one region: `organization "Kilo" is using 1970176 MB of memory in dfw which is
// over the allowed quota. please consider other regions` (403; github.com/Kilo-Org/cloud/pull/516).
const REGION_QUOTA = /over the allowed quota/i;
// The organisation's machine count: a 422 when it reaches its machines limit (community.fly.io/t/15555);
// a trial organisation's "To create more than 1 machine per app please add a payment method"
// (github.com/superfly/flyctl/pull/2060).
const ORG_QUOTA = /machines? limit|machine quota|add a payment method/i;

/** True when a failed create means "try another region" for lack of room, not "the request is wrong". */
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
  /** `region`: this region only (try the next); `org`: every region alike. */
  | { kind: "quota"; scope: "region" | "org"; resource: QuotaResource; message: string }
  | { kind: "retry"; message: string }
  | { kind: "invalid"; status: number; message: string; field: string }
  | { kind: "unknown"; message: string };

export function classifyCreateAnswer(status: number, headers: Headers, text: string): CreateAnswer {
  if (status >= 200 && status < 300) {
    const parsed = MachineWire.safeParse(safeJson(text));
    if (!parsed.success) return { kind: "unknown", message: `create answered ${status} with an unexpected body` };
    return { kind: "created", machine: toFlyMachine(parsed.data) };
  }
  if (status === 429) return { kind: "rate_limited", retryAfterMs: retryAfterOr1s(headers) };
  const error = parseError(text);
  const message = error.error ?? `HTTP ${status}`;
  if (status >= 400 && status < 500 && error.status !== CAPACITY_STATUS) {
    if (REGION_QUOTA.test(message)) return { kind: "quota", scope: "region", resource: quotaResource(message), message };
    if (ORG_QUOTA.test(message)) return { kind: "quota", scope: "org", resource: "machines", message };
  }
  if (isCapacityError(status, error)) return { kind: "capacity", message };
  if (status >= 500 || status === 408) return { kind: "retry", message: `HTTP ${status}: ${error.error ?? text}` };
  return { kind: "invalid", status, message, field: fieldOf(status, message) };
}

/** Which resource a quota refusal names: `… is using 2 cpus …`, `… MB of memory …`. */
function quotaResource(message: string): QuotaResource {
  if (/\bmemory\b|\bMB\b/i.test(message)) return "memory_mb";
  if (/\bv?cpus?\b/i.test(message)) return "vcpus";
  if (/\bmachines?\b/i.test(message)) return "machines";
  return "unknown";
}

/**
 * The setting a refused create points at, for an operator to fix: the token (401, 403), the app
 * (404), or the part of the machine config Fly's message names (`invalid config.guest.memory_mb …`).
 */
export function fieldOf(status: number, message: string): string {
  if (status === 401 || status === 403) return "FLY_API_TOKEN";
  if (status === 404) return "FLY_APP_NAME";
  const path = /\bconfig(?:\.[a-z_]+)+/i.exec(message)?.[0];
  if (path) return path;
  if (/\bimage\b/i.test(message)) return "config.image (FLY_IMAGE)";
  if (/\bguest\b|\bcpu_kind\b|\bcpus\b|\bmemory\b/i.test(message)) return "config.guest";
  if (/\bregion\b/i.test(message)) return "region (FLY_REGIONS)";
  if (/\bname\b/i.test(message)) return "name";
  return "config";
}

/** The fields of a create's outcome for its log line. */
export function outcomeFields(outcome: CreateOutcome): Record<string, unknown> {
  switch (outcome.kind) {
    case "created":
      return { machine_id: outcome.machineId, region: outcome.region, state: outcome.state };
    case "rate_limited":
      return { retry_after_ms: outcome.retryAfterMs };
    case "invalid":
      return { status: outcome.status, field: outcome.field, message: outcome.message };
    case "quota":
      return { resource: outcome.resource, message: outcome.message };
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
