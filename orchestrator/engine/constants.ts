// The engine's fixed limits (no runtime types here, so pure modules and Node tests can import them).

/**
 * Creates per alarm: each may take a few subrequests (regions, retries). Every subrequest of an
 * invocation is counted by its Outbound (orchestrator/outbound.ts) against Workers Paid's 10,000
 * (developers.cloudflare.com/workers/platform/limits/); SUBREQUESTS_PER_ALARM caps the Fly client's
 * share of them. Measured worst run alarm (every Fly request 503): 595 (test/workers/outbound.test.ts).
 */
export const SPAWNS_PER_ALARM = 40;
export const SUBREQUESTS_PER_ALARM = 800;
/** How long a create may stay without an answer before we look for its machine. */
export const CREATE_ANSWER_MS = 60_000;
export const RECHECK_MS = 5_000;
/** A machine told it is done exits by itself; it is destroyed after this if it has not. */
export const RETIRE_GRACE_MS = 30_000;
/** A credential outlives its attempt's hard limits by this much (clock skew, a slow callback). */
export const CREDENTIAL_GRACE_MS = 5 * 60_000;
