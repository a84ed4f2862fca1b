// `fanout tasks <batchId>`: the batch's tasks, all or those in one state (--status).
import { parseArgs } from "node:util";
import { z } from "zod";
import { TASK_FILTERS } from "../api.ts";
import { table } from "../progress.ts";
import { batchArg } from "./args.ts";
import { context } from "./context.ts";
import { EXIT, UsageError, printJson } from "./output.ts";

export async function tasks(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { status: { type: "string" }, json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const filter = z.enum(TASK_FILTERS).optional().safeParse(values.status);
  if (!filter.success) throw new UsageError(`--status must be one of ${TASK_FILTERS.join(", ")}, got "${values.status}"`);
  const { api } = context();
  const list = await api.allTasks(batchId, filter.data);
  if (values.json) {
    printJson(list);
    return EXIT.ok;
  }
  if (list.length === 0) {
    console.log(`no ${filter.data ?? ""} tasks in ${batchId}`.replace("  ", " "));
    return EXIT.ok;
  }
  console.log(
    table(
      ["task", "status", "attempt", "input", "machine", "error"],
      list.map((t) => [t.task_id, t.status ?? "", t.attempt, t.input_key, t.machine_id ?? "", (t.error ?? "").slice(0, 100)]),
    ),
  );
  return EXIT.ok;
}
