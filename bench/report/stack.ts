// Section 4 of RESULTS.md: the local stack converting small TIFFs, one machine per TIFF and the default.
import os from "node:os";
import type { StackFigures } from "../stack-makespan.ts";
import { f, n0, usd } from "./format.ts";

export function stackSection(stack: StackFigures | null, defaultTasks: number): string {
  if (!stack) return "";
  const single = stack.runs.find((r) => r.mode === "single");
  const pool = stack.runs.find((r) => r.mode === "pool");
  const rows = stack.runs.map(
    (r) =>
      `| ${r.mode === "single" ? "`\"pool\": false` (one machine per TIFF)" : `default (the engine's choice: ${r.plan ?? r.engine_mode ?? "?"})`} | ${n0(r.tasks)} | ${r.status} (${n0(r.completed)} done, ${n0(r.failed)} failed) | **${f(r.wall_s, 1)} s** | ${n0(r.machines_created)} | ${r.machine_seconds === null ? "—" : `${f(r.machine_seconds, 0)} s`} | ${r.estimated_cost_usd === null ? "—" : usd(r.estimated_cost_usd, 5)} | ${r.cost_all_in_usd === null ? "—" : usd(r.cost_all_in_usd, 5)} |`,
  );
  return `## 4. Real-stack makespan: the local stack, ${n0(single?.tasks ?? defaultTasks)} small TIFFs, single-task vs the default

Measured in one run (\`bench/stack-makespan.ts\`): \`npm start\`'s stack — the orchestrator under \`wrangler dev\`, the Fly
Machines API emulator starting each machine as a real fly-worker process, the local S3 — with the emulator enforcing Fly's
create limit (1/s, burst 3) and the engine budgeting it, MAX_CONCURRENT_MACHINES ${stack.max_concurrent_machines} (the local default).
The same ${n0(single?.tasks ?? defaultTasks)} TIFFs (${f(stack.tiff_bytes / 1024, 1)} KiB each on average, the sample generator's kinds) are uploaded twice and
converted first with \`"pool": false\`, then with no pool settings (the default: the engine sizes the batch). Wall time is from enqueue to DONE.

| mode | TIFFs | outcome | wall time | machines created | machine-seconds (status) | machines at Fly's prices (status) | all in (status) |
|---|---:|---|---:|---:|---:|---:|---:|
${rows.join("\n")}

**Speed-up, single ÷ default: ${single && pool && [single, pool].every((r) => r.status === "DONE" && r.completed === r.tasks) ? `${f(single.wall_s / pool.wall_s, 2)}×` : "— (a run did not end DONE with every TIFF converted)"}.** Single-task mode needs a create per TIFF, so
it cannot finish before (${n0(single?.tasks ?? defaultTasks)} − 3) s at 1 create/s; the pool needs a handful of creates. Local S3 throughput (one
${f(stack.s3.bytes / 1024 / 1024, 0)} MiB object over loopback): PUT ${n0(stack.s3.put_mb_per_s)} MB/s, GET ${n0(stack.s3.get_mb_per_s)} MB/s. The processes share this
machine's ${os.cpus().length} cores with the orchestrator and the emulator (no CPU quota here: that is section 3's model).
`;
}

