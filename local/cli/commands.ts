// The command table. A new command is one file here, one entry below and one line in help.ts's
// USAGE. Each command's module is loaded when it runs, so `help` or a usage error does not load
// the S3 client that `submit` needs.
import { TASK_FILTERS } from "../api.ts";

export interface Command {
  run: (args: string[]) => Promise<number>;
  usage: string;
  /** What `<command> --help` prints under the usage line. */
  details?: string;
}

export const COMMANDS: Record<string, Command> = {
  submit: { run: async (args) => (await import("./submit.ts")).submit(args), usage: "submit <dir> [--batch-id ID] [--pool | --no-pool] [--slots N] [--watch] [--json]" },
  status: { run: async (args) => (await import("./status.ts")).status(args), usage: "status <batchId> [--watch] [--json]" },
  tasks: { run: async (args) => (await import("./tasks.ts")).tasks(args), usage: `tasks <batchId> [--status ${TASK_FILTERS.join("|")}] [--json]` },
  reset: { run: async (args) => (await import("./reset.ts")).reset(args), usage: "reset <batchId> [--json]" },
  logs: { run: async (args) => (await import("./logs.ts")).logs(args), usage: "logs <machineId> [--app APP]" },
  doctor: { run: async (args) => (await import("./doctor.ts")).doctor(args), usage: "doctor [--json]" },
  redrive: { run: async (args) => (await import("./redrive.ts")).redrive(args), usage: "redrive <batchId> [--json]" },
  list: {
    run: async (args) => (await import("./list.ts")).list(args),
    usage: "list [--status S] [--limit N] [--all] [--cursor C] [--json]",
    details: `  --status S   active (not DONE/ERROR/FAILED), or one status: DONE, ERROR, FAILED, TIFF_CONVERSION, …
  --limit N    batches per page (1–200, default 20)
  --all        follow next_cursor to the end
  --cursor C   start after a previous page (its next_cursor)
  --json       the pages' batches as JSON`,
  },
};
