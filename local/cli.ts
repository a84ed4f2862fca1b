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
import { ApiError, OrchestratorClient, TASK_FILTERS, type BatchStatus } from "./api.ts";
import { formatBytes, progressLine, table, watchBatch } from "./progress.ts";
import { APP_NAME, BUCKET, DEFAULT_STATE_DIR, STACK_FILE } from "./paths.ts";
import { s3Client, submitBatch } from "./submit.ts";

const USAGE = `fanout — operate fanout batches

usage: npm run fanout -- <command> [options]

  submit <dir> [--batch-id ID] [--watch]     upload a folder of TIFFs with a manifest and enqueue it
  status <batchId> [--watch] [--json]        the batch's status; --watch shows a progress bar until DONE/ERROR
  tasks <batchId> [--status S] [--json]      its tasks (S: ${TASK_FILTERS.join(", ")})
  reset <batchId>                            stop the batch: destroy its machines, mark it ERROR
  logs <machineId> [--app APP]               a machine's output (local: the emulator's record; else fly logs)

environment:
  ORCHESTRATOR_URL   the orchestrator (default: the local stack started by \`npm start\`)
  ADMIN_TOKEN        for submit and reset (default: the local stack's token)
  R2_ENDPOINT, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET
                     where submit uploads (default: the local stack's S3). For Cloudflare R2 set
                     R2_ENDPOINT=https://<account_id>.r2.cloudflarestorage.com and an R2 API token's keys.
  FLY_APP_NAME       the app for \`logs\` in production (default ${APP_NAME})

exit codes (submit --watch, status --watch): 0 DONE, 3 DONE with failed tasks, 1 ERROR or failure, 2 usage`;

class UsageError extends Error {}

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
  const parsed = LocalStack.safeParse(JSON.parse(readFileSync(file, "utf8")));
  return parsed.success ? parsed.data : null;
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
    throw new UsageError("ORCHESTRATOR_URL is not set and no local stack is running. Start one with `npm start`, or set ORCHESTRATOR_URL.");
  }
  const isLocal = stack !== null && stack.orchestrator_url.replace(/\/+$/, "") === url.replace(/\/+$/, "");
  const token = env.ADMIN_TOKEN ?? (isLocal ? localToken(env.FANOUT_STATE_DIR) : undefined);
  return { api: new OrchestratorClient({ url, adminToken: token }), local: isLocal ? stack : null, env };
}

const batchArg = (value: string | undefined): string => {
  if (!value) throw new UsageError("a batch id is required");
  const parsed = BatchId.safeParse(value);
  if (!parsed.success) throw new UsageError(describeZodError(parsed.error));
  return parsed.data;
};

// ---- commands -------------------------------------------------------------------------------

async function submit(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { "batch-id": { type: "string" }, watch: { type: "boolean" } } });
  const dir = positionals[0];
  if (!dir) throw new UsageError("submit needs a directory: npm run fanout -- submit <dir>");
  if (!existsSync(dir)) throw new UsageError(`no such directory: ${dir}`);
  if (values["batch-id"] !== undefined) batchArg(values["batch-id"]);
  const { api, local, env } = context();
  const endpoint = env.R2_ENDPOINT ?? local?.s3_endpoint;
  if (!endpoint) throw new UsageError("set R2_ENDPOINT (and R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET): where should the files go?");
  const usingLocalS3 = env.R2_ENDPOINT === undefined;
  const accessKeyId = env.R2_ACCESS_KEY_ID ?? (usingLocalS3 ? local?.s3_access_key_id : undefined);
  const secretAccessKey = env.R2_SECRET_ACCESS_KEY ?? (usingLocalS3 ? local?.s3_secret_access_key : undefined);
  if (!accessKeyId || !secretAccessKey) throw new UsageError("R2_ENDPOINT is set: set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY too");
  const bucket = env.R2_BUCKET ?? local?.bucket ?? BUCKET;
  const client = s3Client({ endpoint, bucket, accessKeyId, secretAccessKey });
  const submitted = await submitBatch(api, client, bucket, {
    dir: resolve(dir),
    batchId: values["batch-id"],
    onUpload: (done, total) => {
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[2Kuploading ${done}/${total}`);
    },
  });
  if (process.stderr.isTTY) process.stderr.write("\r\x1b[2K");
  const bytes = submitted.files.reduce((n, f) => n + f.size, 0);
  console.log(`batch ${submitted.batchId} enqueued: ${submitted.files.length} files (${formatBytes(bytes)}) in s3://${bucket}/${submitted.prefix}`);
  console.log(`manifest  s3://${bucket}/${submitted.manifestKey}`);
  if (!values.watch) {
    console.log(`follow it: npm run fanout -- status ${submitted.batchId} --watch`);
    return 0;
  }
  return finish(await watchBatch(api, submitted.batchId, { out: process.stdout }));
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { watch: { type: "boolean", short: "w" }, json: { type: "boolean" } } });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  if (values.watch) return finish(await watchBatch(api, batchId, { out: process.stdout }));
  const s = await api.status(batchId);
  if (values.json) {
    console.log(JSON.stringify(s, null, 2));
    return 0;
  }
  console.log(progressLine(s, s.started_at ? Date.parse(s.completed_at ?? new Date().toISOString()) - Date.parse(s.started_at) : 0));
  printFailures(s);
  return 0;
}

function finish(s: BatchStatus): number {
  const p = s.progress;
  console.log(`${s.batch_id}: ${s.status} — ${p.tasks_completed} done, ${p.tasks_failed} failed of ${p.tasks_total}${s.error ? ` — ${s.error}` : ""}`);
  printFailures(s);
  return s.status !== "DONE" ? 1 : p.tasks_failed > 0 ? 3 : 0;
}

function printFailures(s: BatchStatus): void {
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
    return 0;
  }
  if (list.length === 0) {
    console.log(`no ${filter.data ?? ""} tasks in ${batchId}`.replace("  ", " "));
    return 0;
  }
  console.log(
    table(
      ["task", "status", "attempt", "input", "machine", "error"],
      list.map((t) => [t.task_id, t.status ?? "", t.attempt, t.input_key, t.machine_id ?? "", (t.error ?? "").slice(0, 100)]),
    ),
  );
  return 0;
}

async function reset(args: string[]): Promise<number> {
  const { positionals } = parseArgs({ args, allowPositionals: true, options: {} });
  const batchId = batchArg(positionals[0]);
  const { api } = context();
  const result = await api.reset(batchId);
  console.log(`batch ${batchId} reset: ${JSON.stringify(result)}`);
  return 0;
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
          return 0;
        }
        await res.body?.cancel();
      } catch {
        // the emulator is gone: the log file below has the same lines
      }
    }
    if (existsSync(file)) {
      process.stdout.write(readFileSync(file, "utf8"));
      return 0;
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
      done(1);
    });
    child.once("exit", (code) => done(code ?? 1));
  });
}

const COMMANDS: Record<string, (args: string[]) => Promise<number>> = { submit, status, tasks, reset, logs, list: async (args) => (await import("./cli-list.ts")).list(args) };

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === "help" || command === "--help" || command === "-h") {
    console.log(USAGE);
    return command ? 0 : 2;
  }
  const run = COMMANDS[command];
  if (!run) throw new UsageError(`unknown command "${command}"`);
  return await run(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError || (error instanceof TypeError && (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS"))) {
      console.error(`fanout: ${error.message}\n\n${USAGE}`);
      process.exit(2);
    }
    console.error(`fanout: ${error instanceof ApiError || error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
