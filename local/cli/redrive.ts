// `fanout redrive <batchId>`: re-run only the failed tasks of a finished batch.
import { parseArgs } from "node:util";
import { batchArg } from "./args.ts";
import { context } from "./context.ts";
import { EXIT, printJson } from "./output.ts";

export async function redrive(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  const r = await api.redrive(batchId);
  if (values.json) printJson(r);
  else console.log(`batch ${r.batch_id}: ${r.tasks} failed task${r.tasks === 1 ? "" : "s"} re-running (redrive ${r.redrive}); follow it with: npm run fanout -- status ${r.batch_id} --watch`);
  return EXIT.ok;
}
