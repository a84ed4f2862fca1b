// The CLI's usage text and version: what `help` prints, and what a bare `fanout` prints to stderr.
import { readFileSync } from "node:fs";
import { TASK_FILTERS } from "../api.ts";
import { APP_NAME } from "../paths.ts";

export const USAGE = `fanout — operate fanout batches

usage: npm run fanout -- <command> [options]        (npm run fanout -- <command> --help for one)

  submit <dir> [--batch-id ID] [--pool | --no-pool] [--slots N] [--watch] [--json]
                                             upload a folder with a manifest and enqueue it
  status <batchId> [--watch] [--json]        the batch's status; --watch follows its live events until it ends
  tasks <batchId> [--status S] [--json]      its tasks (S: ${TASK_FILTERS.join(", ")})
  reset <batchId> [--json]                   stop the batch: destroy its machines, mark it ERROR (redrive re-runs it)
  redrive <batchId> [--json]                 re-run only the failed tasks of a finished batch (DONE with failures, FAILED, ERROR)
  list [--status S] [--limit N] [--all] [--json]
                                             the batch index, newest first
  logs <machineId> [--app APP]               a machine's output (local: the emulator's record; else fly logs);
                                             a task's machine ids are in \`tasks <batchId> --json\`
  doctor [--json]                            check the orchestrator's configuration, Fly API, storage and callback URL
  help, --help, -h                           this text
  --version, -v                              the CLI's version

environment:
  ORCHESTRATOR_URL   the orchestrator (default: the local stack started by \`npm start\`)
  ADMIN_TOKEN        for submit, reset and doctor (default: the local stack's token)
  READ_TOKEN         for status, tasks and list when the orchestrator sets READ_TOKEN (ADMIN_TOKEN works too)
  R2_ENDPOINT, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET
                     where submit uploads (default: the local stack's S3). For Cloudflare R2 set
                     R2_ENDPOINT=https://<account_id>.r2.cloudflarestorage.com and an R2 API token's keys.
  FLY_APP_NAME       the app for \`logs\` in production (default ${APP_NAME})
  FANOUT_STATE_DIR   where \`npm start\` keeps its state (default .local/stack)

exit codes:
  0  done: the command worked; a batch (status, --watch) is DONE or still running (status without --watch)
  1  a batch is ERROR or FAILED, or the orchestrator refused or failed the request (doctor: a check failed)
  2  usage: unknown command or option, missing or malformed argument
  3  the batch is DONE with failed tasks, or with nothing to do (submit: a folder with no TIFF, submitted with a warning)
  4  no orchestrator to talk to: no local stack running and no ORCHESTRATOR_URL, or it cannot be reached
  With --json every answer is JSON on stdout, errors too: { "ok": false, "error", "exit_code", … }.`;

/** `fanout --version`: the package's version. */
export function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version?: unknown };
  return `fanout ${typeof pkg.version === "string" ? pkg.version : "unknown"}`;
}
