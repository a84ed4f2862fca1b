#!/usr/bin/env node
// fanout: the operator's CLI. `npm run fanout -- <command>`.
// Talks to ORCHESTRATOR_URL with ADMIN_TOKEN; with neither set it uses the local stack that
// `npm start` is running (its address and token are in .local/stack/).
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { BatchId, describeZodError } from "../shared/contracts.ts";
import { ApiError, OrchestratorClient, TASK_FILTERS, type BatchStatus, type HealthReport } from "./api.ts";
import { followBatch, formatBytes, progressLine, table } from "./progress.ts";
import { APP_NAME, BUCKET, DEFAULT_STATE_DIR, STACK_FILE } from "./paths.ts";
import { s3Client, submitBatch } from "./submit.ts";

const USAGE = `fanout — operate fanout batches

usage: npm run fanout -- <command> [options]        (npm run fanout -- <command> --help for one)

  submit <dir> [--batch-id ID] [--pool | --no-pool] [--slots N] [--watch] [--json]
                                             upload a folder with a manifest and enqueue it
  status <batchId> [--watch] [--json]        the batch's status; --watch follows its live events until it ends
  tasks <batchId> [--status S] [--json]      its tasks (S: ${TASK_FILTERS.join(", ")})
  reset <batchId>                            stop the batch: destroy its machines, mark it ERROR
  redrive <batchId> [--json]                 re-run only the failed tasks of a finished batch (DONE with failures, FAILED, ERROR)
  list [--status S] [--limit N] [--all] [--json]
                                             the batch index, newest first
  logs <machineId> [--app APP]               a machine's output (local: the emulator's record; else fly logs)
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
  3  the batch is DONE with failed tasks
  4  no orchestrator to talk to: no local stack running and no ORCHESTRATOR_URL, or it cannot be reached`;

/** One place for the codes above (README's CLI section lists the same). */
const EXIT = { ok: 0, failed: 1, usage: 2, doneWithFailures: 3, unreachable: 4 } as const;

/** Exit 2: the command line is wrong. Printed as one line plus a pointer to help, not the whole usage. */
class UsageError extends Error {}
/** Exit 4: there is no orchestrator to talk to. */
class NoOrchestrator extends Error {}

const LocalStack = z.object({
  orchestrator_url: z.string(),
  s3_endpoint: z.string(),
  bucket: z.string(),
  fly_api: z.string(),
  app: z.string().optional(),
  // fauxqs checks no signature: these are placeholders, not secrets.
  s3_access_key_id: z.string().default("local-access-key"),
  s3_secret_access_key: z.string().default("local-secret-key"),
});
type LocalStack = z.infer<typeof LocalStack>;

const Env = z.object({
  ORCHESTRATOR_URL: z.url({ protocol: /^https?$/, message: "must be an http(s) URL, e.g. http://127.0.0.1:8787" }).optional(),
  ADMIN_TOKEN: z.string().min(1).optional(),
  READ_TOKEN: z.string().min(1).optional(),
  R2_ENDPOINT: z.url({ protocol: /^https?$/, message: "must be an http(s) URL" }).optional(),
  R2_ACCESS_KEY_ID: z.string().min(1).optional(),
  R2_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  R2_BUCKET: z.string().min(1).optional(),
  FLY_APP_NAME: z.string().min(1).optional(),
  FANOUT_STATE_DIR: z.string().min(1).default(DEFAULT_STATE_DIR),
});

function loadEnv() {
  const raw = Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== ""));
  const parsed = Env.safeParse(raw);
  if (!parsed.success) throw new UsageError(`bad environment: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

function localStack(stateDir: string): LocalStack | null {
  const file = join(stateDir, STACK_FILE);
  if (!existsSync(file)) return null;
  try {
    const parsed = LocalStack.safeParse(JSON.parse(readFileSync(file, "utf8")));
    return parsed.success ? parsed.data : null;
  } catch {
    return null; // half-written or not JSON: as if no stack were running
  }
}

function localToken(stateDir: string): string | undefined {
  try {
    const json = JSON.parse(readFileSync(join(stateDir, "secrets.json"), "utf8")) as { ADMIN_TOKEN?: unknown };
    return typeof json.ADMIN_TOKEN === "string" ? json.ADMIN_TOKEN : undefined;
  } catch {
    return undefined;
  }
}

interface Context {
  api: OrchestratorClient;
  /** Set when the target is the local stack of `npm start`. */
  local: LocalStack | null;
  env: ReturnType<typeof loadEnv>;
}

function context(): Context {
  const env = loadEnv();
  const stack = localStack(env.FANOUT_STATE_DIR);
  const url = env.ORCHESTRATOR_URL ?? stack?.orchestrator_url;
  if (!url) {
    throw new NoOrchestrator("no local stack is running and ORCHESTRATOR_URL is not set. Start one with `npm start`, or set ORCHESTRATOR_URL to a deployed orchestrator.");
  }
  const isLocal = stack !== null && stack.orchestrator_url.replace(/\/+$/, "") === url.replace(/\/+$/, "");
  const token = env.ADMIN_TOKEN ?? (isLocal ? localToken(env.FANOUT_STATE_DIR) : undefined);
  return { api: new OrchestratorClient({ url, adminToken: token, readToken: env.READ_TOKEN }), local: isLocal ? stack : null, env };
}

/** A zod failure of one named argument, e.g. `<batchId> "a b": batch_id must be …` (never "(root)"). */
function argumentError(name: string, value: string, error: z.ZodError): UsageError {
  return new UsageError(`${name} ${JSON.stringify(value)}: ${error.issues.map((i) => i.message).join("; ")}`);
}

const batchArg = (value: string | undefined, name = "<batchId>"): string => {
  if (!value) throw new UsageError(`${name} is required`);
  const parsed = BatchId.safeParse(value);
  if (!parsed.success) throw argumentError(name, value, parsed.error);
  return parsed.data;
};

/** Exit code of a batch's final state (status, --watch). */
function batchCode(s: BatchStatus): number {
  if (s.status === "ERROR" || s.status === "FAILED") return EXIT.failed;
  if (s.status === "DONE") return s.progress.tasks_failed > 0 ? EXIT.doneWithFailures : EXIT.ok;
  return EXIT.ok;
}

// ---- commands -------------------------------------------------------------------------------

async function submit(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    // --no-pool: one machine per task (pool mode is the orchestrator's default).
    allowNegative: true,
    options: {
      "batch-id": { type: "string" },
      watch: { type: "boolean", short: "w" },
      pool: { type: "boolean" },
      slots: { type: "string" },
      json: { type: "boolean" },
    },
  });
  const dir = positionals[0];
  if (!dir) throw new UsageError("submit needs a directory: npm run fanout -- submit <dir>");
  if (!existsSync(dir)) throw new UsageError(`no such directory: ${dir}`);
  if (values["batch-id"] !== undefined) batchArg(values["batch-id"], "--batch-id");
  let slots: number | undefined;
  if (values.slots !== undefined) {
    const parsed = z.coerce.number().int("must be a whole number").min(1, "must be 1-16").max(16, "must be 1-16").safeParse(values.slots);
    if (!parsed.success) throw argumentError("--slots", values.slots, parsed.error);
    slots = parsed.data;
  }
  // Slots are a pool-mode setting: asking for them asks for pool mode.
  if (values.pool === false && slots !== undefined) throw new UsageError("--slots is a pool-mode setting: it cannot go with --no-pool");
  const pool = values.pool ?? (slots !== undefined ? true : undefined);
  const { api, local, env } = context();
  const endpoint = env.R2_ENDPOINT ?? local?.s3_endpoint;
  if (!endpoint) throw new UsageError("set R2_ENDPOINT (and R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET): where should the files go?");
  const usingLocalS3 = env.R2_ENDPOINT === undefined;
  const accessKeyId = env.R2_ACCESS_KEY_ID ?? (usingLocalS3 ? local?.s3_access_key_id : undefined);
  const secretAccessKey = env.R2_SECRET_ACCESS_KEY ?? (usingLocalS3 ? local?.s3_secret_access_key : undefined);
  if (!accessKeyId || !secretAccessKey) throw new UsageError("R2_ENDPOINT is set: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY too");
  const bucket = env.R2_BUCKET ?? local?.bucket ?? BUCKET;
  const client = s3Client({ endpoint, bucket, accessKeyId, secretAccessKey });
  const tty = process.stderr.isTTY === true;
  let lastLine = 0;
  const submitted = await submitBatch(api, client, bucket, {
    dir: resolve(dir),
    batchId: values["batch-id"],
    pool,
    slots,
    onUpload: (done, total) => {
      if (tty) process.stderr.write(`\r\x1b[2Kuploading ${done}/${total}`);
      // Piped: a line every 2 s and the last one, so a long upload is never silent.
      else if (done === total || Date.now() - lastLine >= 2000) {
        lastLine = Date.now();
        process.stderr.write(`uploaded ${done}/${total} files\n`);
      }
    },
  });
  if (tty) process.stderr.write("\r\x1b[2K");
  const bytes = submitted.files.reduce((n, f) => n + f.size, 0);
  const summary = {
    batch_id: submitted.batchId,
    files: submitted.files.length,
    bytes,
    bucket,
    prefix: submitted.prefix,
    manifest_key: submitted.manifestKey,
    ...(pool !== undefined ? { pool } : {}),
    ...(slots !== undefined ? { pool_tasks_per_machine: slots } : {}),
  };
  if (values.json && !values.watch) {
    console.log(JSON.stringify(summary, null, 2));
    return EXIT.ok;
  }
  if (!values.json) {
    const mode = pool === undefined ? "" : pool ? ` in pool mode${slots ? ` (${slots} slots per machine)` : ""}` : " in single-task mode";
    console.log(`batch ${submitted.batchId} enqueued${mode}: ${submitted.files.length} files (${formatBytes(bytes)}) in s3://${bucket}/${submitted.prefix}`);
    console.log(`manifest  s3://${bucket}/${submitted.manifestKey}`);
  }
  if (!values.watch) {
    console.log(`follow it: npm run fanout -- status ${submitted.batchId} --watch`);
    return EXIT.ok;
  }
  const final = await followBatch(api, submitted.batchId, { out: values.json ? undefined : process.stdout });
  if (values.json) {
    console.log(JSON.stringify({ ...summary, final_status: final }, null, 2));
    return batchCode(final);
  }
  return finish(final);
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { watch: { type: "boolean", short: "w" }, json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  if (values.watch) {
    const final = await followBatch(api, batchId, { out: values.json ? undefined : process.stdout });
    if (values.json) {
      console.log(JSON.stringify(final, null, 2));
      return batchCode(final);
    }
    return finish(final);
  }
  const s = await api.status(batchId);
  if (values.json) {
    console.log(JSON.stringify(s, null, 2));
    return batchCode(s);
  }
  console.log(progressLine(s, s.started_at ? Date.parse(s.completed_at ?? new Date().toISOString()) - Date.parse(s.started_at) : 0));
  printFailures(s);
  return batchCode(s);
}

function finish(s: BatchStatus): number {
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

function printFailures(s: BatchStatus): void {
  const machines = machineLine(s);
  if (machines) console.log(machines);
  if (s.error && s.status !== "DONE") console.log(`error: ${s.error}`);
  if (s.recent_failures.length === 0) return;
  console.log("recent failures (an attempt that failed; retried unless the task is failed):");
  for (const f of s.recent_failures) {
    console.log(`  ${f.task_id} attempt ${f.attempt}  ${f.machine_id ?? "(no machine)"}  ${f.error ?? ""}`);
    if (f.machine_id) console.log(`    logs: npm run fanout -- logs ${f.machine_id}`);
  }
}

async function tasks(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { status: { type: "string" }, json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const filter = z.enum(TASK_FILTERS).optional().safeParse(values.status);
  if (!filter.success) throw new UsageError(`--status must be one of ${TASK_FILTERS.join(", ")}, got "${values.status}"`);
  const { api } = context();
  const list = await api.allTasks(batchId, filter.data);
  if (values.json) {
    console.log(JSON.stringify(list, null, 2));
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

async function reset(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  const r = await api.reset(batchId);
  if (values.json) {
    console.log(JSON.stringify(r, null, 2));
    return EXIT.ok;
  }
  const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? "" : "s"}`;
  const pending = r.machines_pending > 0 ? `; ${plural(r.machines_pending, "machine")} still being destroyed` : "";
  console.log(
    `batch ${r.batch_id} reset: marked ${r.status}, ${plural(r.tasks_failed, "open task")} failed, ${plural(r.machines_destroyed, "machine")} destroyed${pending}. Submit it again under a new batch id.`,
  );
  return EXIT.ok;
}

async function redrive(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  const r = await api.redrive(batchId);
  if (values.json) console.log(JSON.stringify(r, null, 2));
  else console.log(`batch ${r.batch_id}: ${r.tasks} failed task${r.tasks === 1 ? "" : "s"} re-running (redrive ${r.redrive}); follow it with: npm run fanout -- status ${r.batch_id} --watch`);
  return EXIT.ok;
}

async function logs(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { app: { type: "string", short: "a" } } });
  const machineId = positionals[0];
  if (!machineId || !/^[A-Za-z0-9_-]{1,64}$/.test(machineId)) throw new UsageError("logs needs a machine id, e.g. npm run fanout -- logs 3d8d9e1b2c4f07");
  const env = loadEnv();
  const stack = localStack(env.FANOUT_STATE_DIR);
  const targetsLocal = env.ORCHESTRATOR_URL === undefined || stack?.orchestrator_url === env.ORCHESTRATOR_URL;
  const file = join(env.FANOUT_STATE_DIR, "logs", "machines", `${machineId}.log`);
  if (targetsLocal && (stack || existsSync(file))) {
    if (stack) {
      try {
        const res = await fetch(`${stack.fly_api}/_emulator/machines/${encodeURIComponent(machineId)}/logs`, { signal: AbortSignal.timeout(5000) });
        if (res.ok) {
          process.stdout.write(await res.text());
          return EXIT.ok;
        }
        await res.body?.cancel();
      } catch {
        // the emulator is gone: the log file below has the same lines
      }
    }
    if (existsSync(file)) {
      process.stdout.write(readFileSync(file, "utf8"));
      return EXIT.ok;
    }
    throw new Error(`the local stack has no machine ${machineId} (looked in the emulator and ${file})`);
  }
  const app = values.app ?? env.FLY_APP_NAME ?? APP_NAME;
  const argv = ["logs", "-a", app, "-i", machineId, "--no-tail"];
  console.error(`$ fly ${argv.join(" ")}`);
  return await new Promise<number>((done) => {
    const child = spawn("fly", argv, { stdio: "inherit" });
    child.once("error", (error) => {
      console.error(`fanout: cannot run flyctl (${(error as NodeJS.ErrnoException).code ?? error.message}). Install it (https://fly.io/docs/flyctl/install/) and log in, then run: fly ${argv.join(" ")}`);
      done(EXIT.failed);
    });
    child.once("exit", (code) => done(code ?? EXIT.failed));
  });
}

/** `fanout doctor`: what the orchestrator says of itself (deep, with the admin token), one sentence per problem. */
async function doctor(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: "boolean" } } });
  const { api, local, env } = context();
  const lines: string[] = [];
  const problems: string[] = [];
  let shallow: HealthReport;
  try {
    shallow = await api.healthReport(false);
  } catch (error) {
    if (error instanceof ApiError && error.status === null) throw new NoOrchestrator(`${error.message}`);
    throw error;
  }
  let report: HealthReport = shallow;
  const hasToken = env.ADMIN_TOKEN !== undefined || local !== null;
  if (!shallow.checks.some((c) => c.name === "config" && !c.ok)) {
    if (!hasToken) {
      problems.push("ADMIN_TOKEN is not set, so the Fly API, storage and callback URL were not checked: set it to the orchestrator's ADMIN_TOKEN secret.");
    } else {
      try {
        report = await api.healthReport(true);
      } catch (error) {
        if (error instanceof ApiError && error.status === 401) {
          problems.push(`the orchestrator at ${api.url} refused ADMIN_TOKEN: set it to the value you stored with \`npx wrangler secret put ADMIN_TOKEN\`.`);
        } else throw error;
      }
    }
  }
  // What this CLI itself needs to submit to a deployed orchestrator.
  if (!local && env.R2_ENDPOINT === undefined) {
    problems.push("R2_ENDPOINT is not set here, so `submit` cannot upload: set R2_ENDPOINT=https://<account_id>.r2.cloudflarestorage.com with R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY and R2_BUCKET.");
  }
  for (const c of report.checks) {
    const mark = c.ok ? (c.severity === "warning" ? "!" : "✓") : "✗";
    lines.push(`${mark} ${c.name}${c.problem ? `: ${c.problem}${c.fix ? ` — fix: ${c.fix}` : ""}` : ""}`);
  }
  for (const p of problems) lines.push(`✗ ${p}`);
  const failed = report.checks.some((c) => !c.ok) || problems.length > 0;
  if (values.json) {
    console.log(JSON.stringify({ orchestrator_url: api.url, ok: !failed, deep: report.deep, checks: report.checks, problems }, null, 2));
  } else {
    console.log(`fanout doctor: ${api.url}${local ? " (the local stack)" : ""}${report.deep ? "" : " — configuration only"}`);
    for (const line of lines) console.log(`  ${line}`);
    console.log(failed ? "Some checks failed: fix the ✗ lines above, deploy again if you changed the Worker, and re-run doctor." : "Everything checked is in order.");
  }
  return failed ? EXIT.failed : EXIT.ok;
}

interface Command {
  run: (args: string[]) => Promise<number>;
  usage: string;
}

// The command table. A new command (e.g. `list`: GET /batches) is one entry here and one line in USAGE.
const COMMANDS: Record<string, Command> = {
  submit: { run: submit, usage: "submit <dir> [--batch-id ID] [--pool | --no-pool] [--slots N] [--watch] [--json]" },
  status: { run: status, usage: "status <batchId> [--watch] [--json]" },
  tasks: { run: tasks, usage: `tasks <batchId> [--status ${TASK_FILTERS.join("|")}] [--json]` },
  reset: { run: reset, usage: "reset <batchId> [--json]" },
  logs: { run: logs, usage: "logs <machineId> [--app APP]" },
  doctor: { run: doctor, usage: "doctor [--json]" },
  redrive: { run: redrive, usage: "redrive <batchId> [--json]" },
  list: { run: async (args) => (await import("./cli-list.ts")).list(args), usage: "list [--status S] [--limit N] [--all] [--cursor C] [--json]" },
};

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
  return `fanout ${typeof pkg.version === "string" ? pkg.version : "unknown"}`;
}

/** The known name closest to `given` (edit distance ≤ 2, or a prefix), for "did you mean". */
function closest(given: string, names: string[]): string | null {
  const distance = (a: string, b: string) => {
    const row = Array.from({ length: b.length + 1 }, (_, i) => i);
    for (let i = 1; i <= a.length; i++) {
      let prev = row[0];
      row[0] = i;
      for (let j = 1; j <= b.length; j++) {
        const here = row[j];
        row[j] = Math.min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
        prev = here;
      }
    }
    return row[b.length];
  };
  const scored = names.map((n) => ({ n, d: n.startsWith(given.toLowerCase()) ? 0 : distance(given.toLowerCase(), n) })).sort((x, y) => x.d - y.d);
  return scored[0] && scored[0].d <= 2 ? scored[0].n : null;
}

let current: string | null = null;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command) {
    console.error(USAGE);
    return EXIT.usage;
  }
  if (command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return EXIT.ok;
  }
  if (command === "--version" || command === "-v" || command === "version") {
    console.log(version());
    return EXIT.ok;
  }
  const entry = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!entry) {
    const guess = closest(command, Object.keys(COMMANDS));
    throw new UsageError(`unknown command "${command}".${guess ? ` Did you mean "${guess}"?` : ""}`);
  }
  current = command;
  if (rest.includes("--help") || rest.includes("-h")) {
    console.log(`usage: npm run fanout -- ${entry.usage}`);
    return EXIT.ok;
  }
  return await entry.run(rest);
}

/** Exits once stdout and stderr are flushed: on a pipe, process.exit() alone can cut a long --json answer short. */
function exit(code: number): void {
  process.stdout.write("", () => process.stderr.write("", () => process.exit(code)));
}

main(process.argv.slice(2)).then(exit, (error: unknown) => {
  const parseError = error instanceof TypeError && (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
  if (error instanceof UsageError || parseError) {
    const help = current ? `npm run fanout -- ${current} --help` : "npm run fanout -- help";
    console.error(`fanout: ${error.message}\nSee \`${help}\`.`);
    return exit(EXIT.usage);
  }
  const message = error instanceof Error ? error.message : String(error);
  console.error(`fanout: ${message}`);
  const unreachable = error instanceof NoOrchestrator || (error instanceof ApiError && error.status === null && /cannot reach/.test(message)) || /^cannot reach the orchestrator/.test(message);
  exit(unreachable ? EXIT.unreachable : EXIT.failed);
});
