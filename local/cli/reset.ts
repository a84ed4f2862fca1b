// `fanout reset <batchId>`: stop the batch — destroy its machines, fail its open tasks, mark it ERROR.
import { parseArgs } from "node:util";
import { batchArg } from "./args.ts";
import { context } from "./context.ts";
import { EXIT, printJson } from "./output.ts";

export async function reset(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  const r = await api.reset(batchId);
  if (values.json) {
    printJson(r);
    return EXIT.ok;
  }
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const pending = r.machines_pending > 0 ? `; ${plural(r.machines_pending, "machine")} still being destroyed` : "";
  // A reset batch is ERROR: redrive re-runs its failed tasks (those the reset stopped included).
  console.log(
    `batch ${r.batch_id} reset: marked ${r.status}, ${plural(r.tasks_failed, "open task")} failed, ${plural(r.machines_destroyed, "machine")} destroyed${pending}. Re-run its failed tasks with: npm run fanout -- redrive ${r.batch_id}`,
  );
  return EXIT.ok;
}
