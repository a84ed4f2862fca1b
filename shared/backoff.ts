// Retry timing for both runtimes: exponential backoff with jitter, and Retry-After as sent by
// a server. Web-standard code only (no node: imports): the Worker (workerd) and the fly-worker (Node) import this file.

/**
 * Exponential backoff with jitter: ~2 s, 4 s, 8 s … capped at 5 minutes. `attempt` is the
 * retry's number (1 = the first retry); the delay lies between half and all of
 * min(capMs, baseMs·2^(attempt−1)), so callers that failed together do not retry in step.
 */
export function backoffMs(attempt: number, baseMs = 2000, capMs = 300_000, random: () => number = Math.random): number {
  const exp = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + random() * (exp / 2));
}

const DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
const LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)";
const MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const TIME = "\\d{2}:\\d{2}:\\d{2}";
// RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient must accept.
const HTTP_DATE = new RegExp(
  `^(?:${DAY}, \\d{2} ${MONTH} \\d{4} ${TIME} GMT|${LONG_DAY}, \\d{2}-${MONTH}-\\d{2} ${TIME} GMT|${DAY} ${MONTH} [ \\d]\\d ${TIME} \\d{4})$`,
);

/**
 * How long a `Retry-After` value asks to wait, in ms from `nowMs` (RFC 9110 §10.2.3): either
 * delay-seconds or an HTTP-date (a date already past is 0). Undefined when the header is absent
 * or unreadable, so the caller falls back to its own backoff.
 */
export function parseRetryAfter(value: string | null | undefined, nowMs: number): number | undefined {
  const text = value?.trim() ?? "";
  if (text === "") return undefined;
  // delay-seconds is 1*DIGIT; a fraction ("0.5") is read too, as servers do send it.
  if (/^\d+(\.\d+)?$/.test(text)) return Math.ceil(Number(text) * 1000);
  if (!HTTP_DATE.test(text)) return undefined;
  // asctime has no zone: it is GMT by definition, which Date.parse would not assume.
  const at = Date.parse(/GMT$/.test(text) ? text : `${text} GMT`);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}
