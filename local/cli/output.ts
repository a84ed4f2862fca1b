// What every command answers with: the exit codes (README's CLI section lists the same), the
// errors that map to them (printed as one line by main.ts), the JSON of --json, and the lines
// that end a batch's status.
import type { BatchStatus } from "../api.ts";

/** One place for the codes of the usage text's "exit codes" (help.ts). */
export const EXIT = { ok: 0, failed: 1, usage: 2, doneWithFailures: 3, unreachable: 4 } as const;

/** Exit 2: the command line is wrong. Printed as one line plus a pointer to help, not the whole usage. */
export class UsageError extends Error {}
/** Exit 4: there is no orchestrator to talk to. */
export class NoOrchestrator extends Error {}

/** --json: the answer as indented JSON on stdout. */
export function printJson(value: unknown): void {
  console.log(JSON.stringify(value, null, 2));
}

/** Exit code of a batch's final state (status, --watch). */
export function batchCode(s: BatchStatus): number {
  if (s.status === "ERROR" || s.status === "FAILED") return EXIT.failed;
  if (s.status === "DONE") return s.progress.tasks_failed > 0 ? EXIT.doneWithFailures : EXIT.ok;
  return EXIT.ok;
}

/** The last lines of a followed batch (submit --watch, status --watch); returns its exit code. */
export function finish(s: BatchStatus): number {
  const p = s.progress;
  console.log(`${s.batch_id}: ${s.status} — ${p.tasks_completed} done, ${p.tasks_failed} failed of ${p.tasks_total}${s.error ? ` — ${s.error}` : ""}`);
  printFailures(s);
  return batchCode(s);
}

/** Machine-seconds and the estimated cost of the batch's machines (Fly's published prices). */
export function machineLine(s: BatchStatus): string | null {
  const m = s.machines;
  if (!m) return null;
  const done = s.progress.tasks_completed;
  const perScan = done > 0 ? `, $${(m.estimated_cost_usd / done).toFixed(6)} per task done` : "";
  return `machines (${s.mode ?? "?"} mode): ${m.ended + m.running} (${m.running} running), ${m.machine_seconds.toFixed(1)} machine-seconds, estimated $${m.estimated_cost_usd.toFixed(4)}${perScan}`;
}

/** The all-in cost so far, item by item (prices: shared/cost-model.ts, each with its source). */
export function costLine(s: BatchStatus): string | null {
  const c = s.cost;
  if (!c) return null;
  const usd = (x: number) => `$${x.toFixed(6)}`;
  const perTask = c.per_task_done_usd === null ? "" : ` (${usd(c.per_task_done_usd)} per task done)`;
  return `cost all in: ${usd(c.total_usd)}${perTask} = machines ${usd(c.machines_usd)} + egress ${usd(c.egress_usd)} + R2 ${usd(c.r2_operations_usd)} + Durable Object ${usd(c.durable_object_usd)} (${c.counted.do_rows_written} rows written) + Worker requests ${usd(c.worker_requests_usd)}`;
}

/** How the current phase was sized: the plan, from the starting figure or the batch's measurements, and any re-sizing. */
export function sizingLine(s: BatchStatus): string | null {
  const z = s.sizing;
  if (!z) return null;
  const basis = z.work.basis === "measured" ? `sized from ${z.work.measured_tasks} measured tasks (${z.work.cpu_s_per_mp?.toFixed(3) ?? "?"} CPU-s per megapixel)` : "sized from the starting figure";
  const resized = z.resized ? `; re-sized from ${z.resized.from}` : "";
  return `plan${z.objective ? ` (${z.objective})` : ""}: ${z.plan}, ${basis}${resized}`;
}

export function printFailures(s: BatchStatus): void {
  for (const line of [machineLine(s), costLine(s), sizingLine(s)]) if (line) console.log(line);
  if (s.error && s.status !== "DONE") console.log(`error: ${s.error}`);
  if (s.recent_failures.length === 0) return;
  console.log("recent failures (an attempt that failed; retried unless the task is failed):");
  for (const f of s.recent_failures) {
    console.log(`  ${f.task_id} attempt ${f.attempt}  ${f.machine_id ?? "(no machine)"}  ${f.error ?? ""}`);
    if (f.machine_id) console.log(`    logs: npm run fanout -- logs ${f.machine_id}`);
  }
}
