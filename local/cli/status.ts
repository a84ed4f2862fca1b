// `fanout status <batchId>`: the batch's status once, or followed to its end with --watch.
import { parseArgs } from "node:util";
import { followBatch, progressLine } from "../progress.ts";
import { batchArg } from "./args.ts";
import { context } from "./context.ts";
import { batchCode, finish, printFailures, printJson } from "./output.ts";

export async function status(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { watch: { type: "boolean", short: "w" }, json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  if (values.watch) {
    const final = await followBatch(api, batchId, { out: values.json ? undefined : process.stdout });
    if (values.json) {
      printJson(final);
      return batchCode(final);
    }
    return finish(final);
  }
  const s = await api.status(batchId);
  if (values.json) {
    printJson(s);
    return batchCode(s);
  }
  console.log(progressLine(s, s.started_at ? Date.parse(s.completed_at ?? new Date().toISOString()) - Date.parse(s.started_at) : 0));
  printFailures(s);
  return batchCode(s);
}
