// What every command answers with: the exit codes (README's CLI section lists the same), the
// errors that map to them (printed as one line, or JSON under --json, by main.ts), the JSON of
// --json, and the lines that end a batch's status.
import type { BatchStatus } from "../api.ts";
import { failureName } from "../progress.ts";

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

/**
 * Exit code of a batch's final state (status, --watch): 3 when it is DONE without having done
 * everything asked — some tasks failed, or there was nothing to do at all (no file needed work).
 */
export function batchCode(s: BatchStatus): number {
  if (s.status === "ERROR" || s.status === "FAILED") return EXIT.failed;
  if (s.status === "DONE") return s.progress.tasks_failed > 0 || s.progress.tasks_total === 0 ? EXIT.doneWithFailures : EXIT.ok;
  return EXIT.ok;
}

/** The last lines of a followed batch (submit --watch, status --watch); returns its exit code. */
export function finish(s: BatchStatus): number {
  const p = s.progress;
  console.log(`${s.batch_id}: ${s.status} — ${p.tasks_completed} done, ${p.tasks_failed} failed of ${p.tasks_total}${s.error ? ` — ${s.error}` : ""}`);
  printFailures(s);
  return batchCode(s);
}

/** Dollars as a person reads them: cents from a cent up, else two significant digits ($0.000031), never "$0.0000". */
export function usd(x: number): string {
  if (x === 0) return "$0";
  if (x >= 0.01) return `$${x.toFixed(2)}`;
  const decimals = Math.min(10, 1 - Math.floor(Math.log10(x)));
  return `$${x.toFixed(decimals)}`;
}

/** Machine-seconds and the estimated cost of the batch's machines (Fly's published prices). */
export function machineLine(s: BatchStatus): string | null {
  const m = s.machines;
  if (!m) return null;
  const done = s.progress.tasks_completed;
  const perScan = done > 0 && m.estimated_cost_usd > 0 ? `, ${usd(m.estimated_cost_usd / done)} per task done` : "";
  return `machines (${s.mode ?? "?"} mode): ${m.ended + m.running} (${m.running} running), ${m.machine_seconds.toFixed(1)} machine-seconds, estimated ${usd(m.estimated_cost_usd)}${perScan}`;
}

/** The all-in cost so far, item by item (prices: shared/cost-model.ts, each with its source). */
export function costLine(s: BatchStatus): string | null {
  const c = s.cost;
  if (!c) return null;
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

/** One line per phase of a batch whose pipeline has more than one: its counts, machine sizes and cost. */
export function phaseLines(s: BatchStatus): string[] {
  if ((s.pipeline?.length ?? s.phases.length) < 2 && s.phases.length < 2) return [];
  const width = Math.max(...s.phases.map((p) => p.name.length));
  const lines = s.phases.map((p) => {
    const m = p.machines;
    const machines = m ? ` · ${m.ended + m.running} machines${m.sizes.length > 0 ? ` (${m.sizes.join(", ")})` : ""}, ${m.machine_seconds.toFixed(1)} machine-seconds, estimated ${usd(m.estimated_cost_usd)}` : "";
    const allIn = p.cost ? `, all in ${usd(p.cost.total_usd)}` : "";
    return `  ${p.name.padEnd(width)}  ${p.done}/${p.total} done, ${p.failed} failed${p.open > 0 ? `, ${p.open} open` : ""}${machines}${allIn}`;
  });
  const waiting = (s.pipeline ?? []).filter((name) => !s.phases.some((p) => p.name === name));
  return [`phases (pipeline ${(s.pipeline ?? s.phases.map((p) => p.name)).join(" → ")}):`, ...lines, ...(waiting.length > 0 ? [`  not run (yet, or nothing to do): ${waiting.join(", ")}`] : [])];
}

/** What follows a batch's progress line: its machines, error, warnings and recent failures. */
export function printFailures(s: BatchStatus): void {
  for (const line of phaseLines(s)) console.log(line);
  for (const line of [machineLine(s), costLine(s), sizingLine(s)]) if (line) console.log(line);
  if (s.error && s.status !== "DONE") console.log(`error: ${s.error}`);
  for (const w of s.warnings) console.log(`warning: ${w}`);
  if (s.recent_failures.length === 0) return;
  console.log("recent failures (an attempt that failed; retried unless the task is failed):");
  for (const f of s.recent_failures) {
    console.log(`  ${failureName(f)} attempt ${f.attempt}  ${f.machine_id ?? "(no machine)"}  ${f.error ?? ""}`);
    if (f.machine_id) console.log(`    logs: npm run fanout -- logs ${f.machine_id}`);
  }
}
