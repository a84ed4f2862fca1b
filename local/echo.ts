// What `npm start` echoes of the orchestrator's output: the story of each batch (started, a phase
// finished, DONE / FAILED / ERROR, reset, redriven), a task that failed for good, and the errors
// an operator must see — a few lines per batch instead of one per machine, lease and callback.
// Everything is in .local/stack/logs/orchestrator.log.

/** The events echoed: a batch's milestones, then the orchestrator's own failures (logError's events). */
const ECHOED = new Set([
  "batch_started",
  "batch_refused",
  "phase_finished",
  "batch_done",
  "batch_failed",
  "batch_error",
  "batch_reset",
  "batch_redriven",
  "task_failed",
  "step_failed",
  "discovery_failed",
  "unhandled",
  "misconfigured",
  "message_retry",
  "dead_letter_retry",
  "dead_letter_without_batch",
  "batch_index_write_failed",
]);

/** The line to echo for one line of the orchestrator's output, or null to leave it to the log file. */
export function echoLine(line: string): string | null {
  if (line.startsWith("✘")) return line;
  const m = /^\[([A-Za-z]+)\] (\{.*\})$/.exec(line);
  if (!m) return null;
  let fields: Record<string, unknown>;
  try {
    fields = JSON.parse(m[2]) as Record<string, unknown>;
  } catch {
    return null;
  }
  const { event, batch_id, ...rest } = fields;
  if (typeof event !== "string" || !ECHOED.has(event)) return null;
  const details = Object.entries(rest)
    .filter(([, v]) => v !== null && v !== undefined && typeof v !== "object")
    .map(([k, v]) => `${k}=${typeof v === "string" && /[\s"]/.test(v) ? JSON.stringify(v) : String(v)}`);
  return [`[${m[1]}]`, typeof batch_id === "string" ? batch_id : null, event, ...details].filter(Boolean).join(" ");
}
