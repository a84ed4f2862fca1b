// `npm start`: the whole system on this machine — local S3, the Fly Machines API emulator and
// the orchestrator under wrangler dev — until Ctrl-C, SIGINT, SIGTERM or SIGHUP (to this process
// or to npm, which runs it with `exec`), or until npm itself is gone: then every process it
// started is stopped. If a part of the stack dies on its own, the rest is stopped and it exits 1.
import "./quiet-warnings.ts";
import { chmodSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { z } from "zod";
import { describeZodError } from "../shared/contracts.ts";
import { echoLine } from "./echo.ts";
import { DEFAULT_STATE_DIR, STACK_FILE, startStack, type ComponentExit } from "./stack.ts";

const Env = z.object({
  FANOUT_PORT: z.coerce.number().int().min(1).max(65535).default(8787),
  FANOUT_S3_PORT: z.coerce.number().int().min(1).max(65535).default(4569),
  FANOUT_FLY_PORT: z.coerce.number().int().min(1).max(65535).default(4280),
  FANOUT_STATE_DIR: z.string().min(1).default(DEFAULT_STATE_DIR),
});

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { quiet: { type: "boolean", short: "q" }, help: { type: "boolean", short: "h" } } });
  if (values.help) {
    console.log(`usage: npm start [-- --quiet]
  Starts local S3, the Fly Machines API emulator and the orchestrator (wrangler dev).
  Env: FANOUT_PORT (8787), FANOUT_S3_PORT (4569), FANOUT_FLY_PORT (4280), FANOUT_STATE_DIR (.local/stack)`);
    return;
  }
  const parsed = Env.safeParse(process.env);
  if (!parsed.success) throw new Error(`bad environment: ${describeZodError(parsed.error)}`);
  const env = parsed.data;

  console.log("Starting the fanout local stack…");
  // A part dying before the stack is up fails startStack itself; after, it is reported here.
  let early: ComponentExit | null = null;
  let onDeath: (exit: ComponentExit) => void = (exit) => (early = exit);
  const stack = await startStack({
    onComponentExit: (exit) => onDeath(exit),
    stateDir: env.FANOUT_STATE_DIR,
    ports: { orchestrator: env.FANOUT_PORT, s3: env.FANOUT_S3_PORT, emulator: env.FANOUT_FLY_PORT },
    onOrchestratorLine: values.quiet
      ? undefined
      : (line) => {
          // A batch's milestones and errors; every line (machines, leases, callbacks, requests) is in the log file.
          const echo = echoLine(line);
          if (echo) console.log(`[orchestrator] ${echo}`);
        },
  });
  const stackFile = join(stack.stateDir, STACK_FILE);
  writeFileSync(
    stackFile,
    `${JSON.stringify(
      {
        orchestrator_url: stack.orchestratorUrl,
        s3_endpoint: stack.s3.endpoint,
        bucket: stack.bucket,
        s3_access_key_id: stack.s3.credentials.accessKeyId,
        s3_secret_access_key: stack.s3.credentials.secretAccessKey,
        fly_api: stack.emulator.url,
        app: stack.vars.FLY_APP_NAME,
        pid: process.pid,
        orchestrator_pid: stack.orchestratorPid(),
      },
      null,
      2,
    )}\n`,
    // It holds the local S3's secret key: readable by this user only, like secrets.json.
    { mode: 0o600 },
  );
  chmodSync(stackFile, 0o600);

  console.log(`
fanout is running (state in ${stack.stateDir})
  dashboard         ${stack.orchestratorUrl}/        batches, progress, failures, machine timeline
  orchestrator      ${stack.orchestratorUrl}        GET /health · /status/:id · POST /admin/batches
  local S3 (R2)     ${stack.s3.endpoint}/${stack.bucket}   path-style, SigV4 with the key pair in stack.json (s3_access_key_id, s3_secret_access_key)
  Fly Machines API  ${stack.emulator.url}         machines run as local fly-worker processes
  admin token       in ${join(stack.stateDir, "secrets.json")} (ADMIN_TOKEN; the CLI reads it, the dashboard asks for it)
  logs              ${stack.logDir}/orchestrator.log (everything), ${stack.logDir}/machines/<id>.log

Try:  npm run fanout -- submit <dir-of-tiffs> --watch     (then open the dashboard)
Below: each batch's milestones and errors only${values.quiet ? " (--quiet: none)" : ""}. Ctrl-C stops everything.
`);

  let stopping = false;
  const shutdown = (why: string, code: number) => {
    if (stopping) return; // npm passes the terminal's Ctrl-C on as a second SIGINT
    stopping = true;
    clearInterval(parentWatch);
    (code === 0 ? console.log : console.error)(`\n${why}: stopping the orchestrator, machines, emulator and local S3…`);
    // stop() escalates to SIGKILL itself; this only guards against a hang in between.
    setTimeout(() => {
      console.error("npm start: the stack did not stop within 60s; exiting anyway (check for stray wrangler/workerd processes)");
      process.exit(1);
    }, 60_000).unref();
    void stack.stop().then(
      () => {
        rmSync(stackFile, { force: true });
        console.log("Stopped.");
        process.exit(code);
      },
      (error: unknown) => {
        console.error(`stop failed: ${error instanceof Error ? error.message : String(error)}`);
        process.exit(1);
      },
    );
  };
  onDeath = (exit) => shutdown(`npm start: ${exit.message}`, 1);
  if (early) onDeath(early);
  process.on("SIGINT", () => shutdown("SIGINT", 0));
  process.on("SIGTERM", () => shutdown("SIGTERM", 0));
  process.on("SIGHUP", () => shutdown("SIGHUP", 0));
  // npm dies of a SIGHUP (or a SIGKILL) without passing it on: a new parent means it is gone.
  const parent = process.ppid;
  const parentWatch = setInterval(() => {
    if (process.ppid !== parent) shutdown(`the parent process (pid ${parent}) is gone`, 0);
  }, 500);
}

main().catch((error: unknown) => {
  console.error(`npm start: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
