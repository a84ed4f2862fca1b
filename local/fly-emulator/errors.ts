// The emulator's refusals in the shape the Fly Machines API gives them: a JSON body with an
// `error` string (https://fly.io/docs/machines/api/working-with-machines-api/), the status the
// real API uses, and the reason the emulator records beside the request.

/** Every way the emulator refuses a request, so a run can tell injected faults from real limits. */
export type EmulatorFault = "rate_limited" | "injected_429" | "injected_5xx" | "capacity_region" | "capacity_full" | "lost_create_response";

/** A refused request and why: the API answers `response` and records `fault` beside the request. */
export interface Refusal {
  response: Response;
  fault: EmulatorFault;
}

export function fail(status: number, error: string): Response {
  return Response.json({ error }, { status });
}

/** How the API refuses a create when no host in the region can place it (fly-go flaps_error.go). */
export function capacityError(): Response {
  return Response.json(
    { error: "insufficient resources available to fulfill request", status: "insufficient_capacity" },
    { status: 422 },
  );
}

/** 429 with Retry-After in whole seconds (at least 1), as the API's rate limiter answers. */
export function tooManyRequests(waitMs: number): Response {
  const seconds = Math.max(1, Math.ceil(waitMs / 1000));
  return Response.json({ error: "rate limit exceeded" }, { status: 429, headers: { "Retry-After": String(seconds) } });
}
