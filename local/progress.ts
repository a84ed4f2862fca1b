// Live progress of a batch: a bar redrawn in place on a terminal, one line per change otherwise.
import { TERMINAL, type BatchStatus, type OrchestratorClient } from "./api.ts";

export function progressLine(s: BatchStatus, elapsedMs: number, width = 30): string {
  const p = s.progress;
  // An ERROR batch did not get through its tasks (a reset fails every open one): count only the done.
  const failed = s.status === "ERROR" ? 0 : p.tasks_failed;
  const finished = p.tasks_completed + failed;
  const ratio = p.tasks_total > 0 ? finished / p.tasks_total : s.status === "DONE" ? 1 : 0;
  const full = Math.round(ratio * width);
  const failedCells = p.tasks_total > 0 ? Math.min(full, Math.round((failed / p.tasks_total) * width)) : 0;
  const bar = "█".repeat(full - failedCells) + "▒".repeat(failedCells) + "░".repeat(width - full);
  const parts = [
    `${p.tasks_completed}/${p.tasks_total} done`,
    p.tasks_failed ? `${p.tasks_failed} failed` : "",
    p.running ? `${p.running} running` : "",
    p.starting ? `${p.starting} starting` : "",
    p.retrying ? `${p.retrying} retrying` : "",
    p.pending ? `${p.pending} pending` : "",
  ].filter(Boolean);
  const stage = s.status === s.phase && s.stage && s.stage !== "run" ? `${s.status}/${s.stage}` : s.status;
  return `[${bar}] ${String(Math.round(ratio * 100)).padStart(3)}%  ${parts.join(" · ")}  ${stage}  ${(elapsedMs / 1000).toFixed(1)}s`;
}

export interface WatchOptions {
  intervalMs?: number;
  /** Give up after this long (the batch keeps running). */
  timeoutMs?: number;
  /** Give up when no task changed state for this long: a busy machine is slow, a stuck batch is still. */
  stallMs?: number;
  out?: NodeJS.WriteStream;
  /** Called with each status read (tests use it to act mid-batch). */
  onStatus?: (s: BatchStatus) => void | Promise<void>;
}

/** Draws progress: a bar redrawn in place on a terminal, one line per change otherwise; notes between. */
class ProgressView {
  readonly #out: NodeJS.WriteStream | undefined;
  readonly #tty: boolean;
  readonly #started = Date.now();
  #last = "";

  constructor(out: NodeJS.WriteStream | undefined) {
    this.#out = out;
    this.#tty = out?.isTTY === true;
  }

  show(s: BatchStatus): void {
    const line = progressLine(s, Date.now() - this.#started);
    if (this.#out) {
      if (this.#tty) this.#out.write(`\r\x1b[2K${line}`);
      else if (line.replace(/\s+[0-9.]+s$/, "") !== this.#last.replace(/\s+[0-9.]+s$/, "")) this.#out.write(`${line}\n`);
    }
    this.#last = line;
  }

  /** A line of its own (a failed attempt, a fallback), above the bar on a terminal. */
  note(text: string): void {
    if (!this.#out) return;
    this.#out.write(this.#tty ? `\r\x1b[2K${text}\n${this.#last}` : `${text}\n`);
  }

  /** Leaves the terminal's cursor on a fresh line. */
  end(): void {
    if (this.#tty) this.#out?.write("\n");
  }
}

/** Gives up on a batch that made no progress for `stallMs` or ran past `timeoutMs`. */
class Patience {
  readonly #options: WatchOptions;
  readonly #started = Date.now();
  #signature = "";
  #progressAt = Date.now();

  constructor(options: WatchOptions) {
    this.#options = options;
  }

  saw(s: BatchStatus): void {
    const signature = JSON.stringify([s.status, s.stage, p(s)]);
    if (signature !== this.#signature) {
      this.#signature = signature;
      this.#progressAt = Date.now();
    }
  }

  /** Why to stop watching `s` now, or null. */
  exhausted(batchId: string, s: BatchStatus): WatchError | null {
    const { stallMs, timeoutMs } = this.#options;
    if (stallMs !== undefined && Date.now() - this.#progressAt > stallMs) {
      return new WatchError(`batch ${batchId} made no progress for ${Math.round(stallMs / 1000)}s: ${countsByState(s)}`, s);
    }
    if (timeoutMs !== undefined && Date.now() - this.#started > timeoutMs) {
      return new WatchError(`batch ${batchId} was not DONE after ${Math.round(timeoutMs / 1000)}s: ${countsByState(s)}; it keeps running`, s);
    }
    return null;
  }
}

/** Polls /status until the batch ends (DONE, FAILED or ERROR) and returns the last status. */
export async function watchBatch(api: OrchestratorClient, batchId: string, options: WatchOptions = {}, view = new ProgressView(options.out)): Promise<BatchStatus> {
  const started = Date.now();
  const patience = new Patience(options);
  let unreachableSince: number | null = null;
  for (;;) {
    let s: BatchStatus;
    try {
      s = await api.status(batchId);
      unreachableSince = null;
    } catch (error) {
      // A batch enqueued a moment ago may not be recorded yet; an orchestrator restart is brief.
      const status = (error as { status?: number | null }).status;
      if (status === 404 && Date.now() - started < 30_000) {
        await sleep(options.intervalMs ?? 500);
        continue;
      }
      if (status === null || status === undefined) {
        unreachableSince ??= Date.now();
        if (Date.now() - unreachableSince < 60_000) {
          await sleep(1000);
          continue;
        }
      }
      view.end();
      throw error;
    }
    await options.onStatus?.(s);
    view.show(s);
    if (TERMINAL.has(s.status)) {
      view.end();
      return s;
    }
    patience.saw(s);
    const exhausted = patience.exhausted(batchId, s);
    if (exhausted) {
      view.end();
      throw exhausted;
    }
    await sleep(options.intervalMs ?? 500);
  }
}

/** Answers that say the stream will not come however often it is asked: poll instead at once. */
const NO_STREAM = new Set([401, 403, 404, 405, 406, 429, 501]);

/**
 * Follows a batch until it ends over its event stream (GET /status/:id/events): progress as it
 * moves, each failed attempt with its reason and logs command; a dropped stream resumes from its
 * last event id. Falls back to polling /status (saying so) when the stream is refused or keeps failing.
 */
export async function followBatch(api: OrchestratorClient, batchId: string, options: WatchOptions = {}): Promise<BatchStatus> {
  const view = new ProgressView(options.out);
  const poll = (why: string) => {
    view.note(`live events unavailable (${why}); polling /status instead`);
    return watchBatch(api, batchId, options, view);
  };
  // A batch enqueued a moment ago may not be recorded yet; polling covers that and an absent orchestrator.
  let s: BatchStatus | null = null;
  for (const started = Date.now(); s === null && Date.now() - started < 30_000; ) {
    s = await api.statusOrNull(batchId).catch(() => null);
    if (s === null) await sleep(options.intervalMs ?? 500);
  }
  if (s === null) return watchBatch(api, batchId, options, view);
  let current: BatchStatus = s;
  await options.onStatus?.(current);
  view.show(current);
  if (TERMINAL.has(current.status)) {
    view.end();
    return current;
  }
  const patience = new Patience(options);
  patience.saw(current);
  // The run being followed (0 the first, N redrive N): a done/failed/error of an earlier run,
  // replayed by the stream after a reset and a redrive, is history, not this run's end.
  let run = current.run ?? 0;
  const later = (data: Record<string, unknown>) => {
    if (typeof data.run === "number" && data.run > run) run = data.run;
  };
  let lastEventId: string | undefined;
  let failures = 0;
  let lastError: string;
  for (;;) {
    const abort = new AbortController();
    let gaveUp: WatchError | null = null;
    const check = setInterval(() => {
      gaveUp = patience.exhausted(batchId, current);
      if (gaveUp) abort.abort();
    }, 1000);
    try {
      for await (const event of api.events(batchId, { lastEventId, signal: abort.signal })) {
        failures = 0;
        if (event.id) lastEventId = event.id;
        const data = parseData(event.data);
        if (event.event === "progress") {
          later(data);
          current = withProgress(current, data);
          patience.saw(current);
          await options.onStatus?.(current);
          view.show(current);
        } else if (event.event === "task_failed") {
          view.note(failureLine(data));
        } else if (event.event === "redrive") {
          later(data);
        } else if (event.event === "done" || event.event === "failed" || event.event === "error") {
          if (typeof data.run === "number" && data.run < run) continue;
          const final = await api.status(batchId);
          await options.onStatus?.(final);
          view.show(final);
          // Only the batch's own status ends the watch (an orchestrator that names no run).
          if (!TERMINAL.has(final.status)) {
            current = final;
            continue;
          }
          view.end();
          return final;
        }
      }
      lastError = "the stream ended before the batch did";
      failures++;
    } catch (error) {
      if (gaveUp) {
        view.end();
        throw gaveUp;
      }
      const status = (error as { status?: number | null }).status;
      if (typeof status === "number" && NO_STREAM.has(status)) return poll(`${(error as Error).message}`);
      lastError = error instanceof Error ? error.message : String(error);
      failures++;
    } finally {
      clearInterval(check);
    }
    // An orchestrator restart or a deploy ends the stream: resume after the last event seen.
    if (failures >= 5) return poll(`${failures} attempts in a row failed, the last: ${lastError}`);
    await sleep(Math.min(1000 * failures, 5000));
  }
}

function parseData(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === "object" ? (value as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** A `progress` event carries the status body's status, phase and counts: the rest is kept. */
function withProgress(s: BatchStatus, data: Record<string, unknown>): BatchStatus {
  const count = (k: "tasks_total" | "tasks_completed" | "tasks_failed" | "pending" | "starting" | "running" | "retrying") =>
    typeof data[k] === "number" ? data[k] : s.progress[k];
  return {
    ...s,
    status: typeof data.status === "string" ? data.status : s.status,
    phase: typeof data.phase === "string" ? data.phase : s.phase,
    stage: typeof data.stage === "string" ? data.stage : s.stage,
    run: typeof data.run === "number" ? data.run : s.run,
    progress: {
      ...s.progress,
      tasks_total: count("tasks_total"),
      tasks_completed: count("tasks_completed"),
      tasks_failed: count("tasks_failed"),
      pending: count("pending"),
      starting: count("starting"),
      running: count("running"),
      retrying: count("retrying"),
    },
  };
}

/** A failure named by its file first (the task id is the orchestrator's name for it). */
export const failureName = (f: { task_id: string; input_key?: string | null }): string => (f.input_key ? `${f.input_key} (${f.task_id})` : f.task_id);

/** The lines under a finished batch's summary (the demo's): its warnings, then its recent failures by file. */
export function summaryNotes(s: BatchStatus): string[] {
  return [
    ...s.warnings.map((w) => `warning: ${w}`),
    ...s.recent_failures.map((f) => `${failureName(f)} attempt ${f.attempt} on ${f.machine_id ?? "-"}: ${f.error ?? ""}`),
  ];
}

function failureLine(d: Record<string, unknown>): string {
  const name = failureName({ task_id: String(d.task_id), input_key: typeof d.input_key === "string" ? d.input_key : null });
  const what = `${name} attempt ${String(d.attempt)} failed${d.final ? "" : " (retried)"}`;
  return `${what}: ${String(d.reason ?? "no reason given")}${typeof d.logs === "string" ? `\n    logs: ${d.logs}` : ""}`;
}

const p = (s: BatchStatus) => s.progress;

/** Where a batch stands, for a message: status and the count of tasks in each state. */
export function countsByState(s: BatchStatus): string {
  const q = s.progress;
  return `status ${s.status}${s.stage ? `/${s.stage}` : ""}, ${q.tasks_completed}/${q.tasks_total} done, ${q.tasks_failed} failed, ${q.running} running, ${q.starting} starting, ${q.retrying} retrying, ${q.pending} pending`;
}

/** watchBatch gave up: the last status it saw is kept, so a caller can still report figures. */
export class WatchError extends Error {
  readonly last: BatchStatus;
  constructor(message: string, last: BatchStatus) {
    super(message);
    this.last = last;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A plain text table: columns padded, numbers right-aligned. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === "number" || /^[0-9.,]+\s?[a-zA-Z]*$/.test(String(r[i]))));
  const fmt = (r: string[]) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join("  ").trimEnd();
  return [fmt(cells[0]), widths.map((w) => "─".repeat(w)).join("  "), ...cells.slice(1).map(fmt)].join("\n");
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
