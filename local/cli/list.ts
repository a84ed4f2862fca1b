// `fanout list`: the batch index (GET /batches), newest first. Registered in commands.ts; talks to
// the orchestrator as every other command does (context.ts), so its exit codes are the table's.
import { parseArgs } from "node:util";
import { z } from "zod";
import type { ListedBatch } from "../api.ts";
import { table } from "../progress.ts";
import { argumentError } from "./args.ts";
import { context } from "./context.ts";
import { EXIT, printJson } from "./output.ts";

const Status = z.string().regex(/^(active|[A-Z][A-Z0-9_]{0,63})$/, "must be `active` or a status such as DONE, ERROR, TIFF_CONVERSION");
const Limit = z.coerce.number({ message: "must be a number" }).int("must be a whole number").min(1, "must be 1-200").max(200, "must be 1-200");

const when = (iso: string | null) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "");

export function formatBatches(batches: ListedBatch[]): string {
  if (batches.length === 0) return "no batches";
  return table(
    ["batch", "status", "done", "failed", "total", "mode", "started", "finished", "error"],
    batches.map((b) => [
      b.batch_id,
      b.status,
      b.progress.tasks_completed,
      b.progress.tasks_failed,
      b.progress.tasks_total,
      b.mode,
      when(b.started_at),
      when(b.completed_at),
      (b.error ?? "").slice(0, 60),
    ]),
  );
}

export async function list(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { status: { type: "string" }, limit: { type: "string" }, cursor: { type: "string" }, all: { type: "boolean" }, json: { type: "boolean" } },
  });
  const status = values.status === undefined ? undefined : Status.safeParse(values.status);
  if (status && !status.success) throw argumentError("--status", values.status!, status.error);
  const limit = Limit.safeParse(values.limit ?? "20");
  if (!limit.success) throw argumentError("--limit", values.limit!, limit.error);
  const { api } = context();
  const batches: ListedBatch[] = [];
  let cursor: string | null = values.cursor ?? null;
  let next: string | null;
  do {
    const page = await api.batches({ status: status?.data, limit: limit.data, cursor });
    batches.push(...page.batches);
    next = page.next_cursor;
    cursor = next;
  } while (values.all && cursor);
  if (values.json) {
    printJson({ batches, next_cursor: next });
    return EXIT.ok;
  }
  console.log(formatBatches(batches));
  if (next) console.log(`\nmore: npm run fanout -- list --cursor ${next}${status?.data ? ` --status ${status.data}` : ""} (or --all)`);
  return EXIT.ok;
}
