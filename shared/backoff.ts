// Backoff with jitter and Retry-After parsing, for the Worker and the fly-worker alike (Web APIs only).

/** Exponential backoff with jitter: ~base, 2×base, 4×base … capped at `capMs` (default 2 s → 5 min). */
export function backoffMs(attempt: number, baseMs = 2000, capMs = 300_000): number {
  const exp = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

/** Retry-After is either delta-seconds or an HTTP date (RFC 9110 §10.2.3); `fallbackMs` when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, nowMs: number = Date.now(), fallbackMs = 1000): number {
  if (value === null || value === undefined || value.trim() === "") return fallbackMs;
  const v = value.trim();
  if (/^[0-9]+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? fallbackMs : Math.max(0, at - nowMs);
}
