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

/** Polls /status until DONE or ERROR and returns the last status. */
export async function watchBatch(api: OrchestratorClient, batchId: string, options: WatchOptions = {}): Promise<BatchStatus> {
  const out = options.out;
  const tty = out?.isTTY === true;
  const started = Date.now();
  let last = "";
  let unreachableSince: number | null = null;
  let lastProgress = "";
  let progressAt = Date.now();
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
      if (tty) out?.write("\n");
      throw error;
    }
    await options.onStatus?.(s);
    const line = progressLine(s, Date.now() - started);
    if (out) {
      if (tty) out.write(`\r\x1b[2K${line}`);
      else if (line.replace(/\s+[0-9.]+s$/, "") !== last.replace(/\s+[0-9.]+s$/, "")) out.write(`${line}\n`);
    }
    last = line;
    if (TERMINAL.has(s.status)) {
      if (tty) out?.write("\n");
      return s;
    }
    const signature = JSON.stringify([s.status, s.stage, p(s)]);
    if (signature !== lastProgress) {
      lastProgress = signature;
      progressAt = Date.now();
    }
    if (options.stallMs !== undefined && Date.now() - progressAt > options.stallMs) {
      if (tty) out?.write("\n");
      throw new WatchError(`batch ${batchId} made no progress for ${Math.round(options.stallMs / 1000)}s: ${countsByState(s)}`, s);
    }
    if (options.timeoutMs !== undefined && Date.now() - started > options.timeoutMs) {
      if (tty) out?.write("\n");
      throw new WatchError(`batch ${batchId} was not DONE after ${Math.round(options.timeoutMs / 1000)}s: ${countsByState(s)}; it keeps running`, s);
    }
    await sleep(options.intervalMs ?? 500);
  }
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
