// The orchestrator under `wrangler dev`, as a real process group: killing it kills wrangler,
// workerd and esbuild together (killing only the parent orphans workerd — TOOLCHAIN.md).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

import { REPO_ROOT } from "./paths.ts";
import { splitLines } from "./fly-emulator/server.ts";
export { REPO_ROOT };
const WRANGLER = fileURLToPath(new URL("../node_modules/wrangler/bin/wrangler.js", import.meta.url));

export interface OrchestratorProcessOptions {
  port: number;
  /** wrangler's --persist-to: DO SQLite, alarms, queues survive a restart. */
  persistDir: string;
  /** Vars and secrets (mode 0600); given with --env-file so no secret is on a command line. */
  envFile: string;
  /** Every output line is appended here. */
  logFile?: string;
  onLine?: (line: string) => void;
  readyTimeoutMs?: number;
}

export interface OrchestratorProcess {
  url: string;
  pid: number;
  /** Stops the whole process group: SIGTERM (then SIGKILL after a grace period), or SIGKILL at once. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
  /** Resolves when wrangler dev exits, whoever stopped it: "code N" or "signal SIGX". */
  exited: Promise<string>;
}

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g;

/**
 * Applies migrations/ to the local D1 (the batch index) in persistDir; wrangler dev then serves it.
 * A marker names the migrations applied, so a restart skips wrangler's ~2-10 s start when none are new.
 */
export async function applyLocalMigrations(persistDir: string): Promise<void> {
  const applied = readdirSync(join(REPO_ROOT, "migrations")).filter((f) => f.endsWith(".sql")).sort().join("\n");
  const marker = join(persistDir, "fanout-d1-migrations.txt");
  if (existsSync(marker) && readFileSync(marker, "utf8") === applied) return;
  const args = [WRANGLER, "d1", "migrations", "apply", "fanout-batches", "--local", "--persist-to", persistDir];
  await new Promise<void>((resolve, reject) => {
    execFile(
      process.execPath,
      args,
      { cwd: REPO_ROOT, env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" }, timeout: 120_000 },
      (error, stdout, stderr) => {
        if (!error) {
          mkdirSync(persistDir, { recursive: true });
          writeFileSync(marker, applied);
          return resolve();
        }
        const tail = `${stdout}\n${stderr}`.replace(ANSI, "").trim().split("\n").slice(-15).join("\n  ");
        reject(new Error(`wrangler d1 migrations apply fanout-batches --local failed: ${error.message}\n  ${tail}`, { cause: error }));
      },
    );
  });
}

export async function startOrchestratorProcess(options: OrchestratorProcessOptions): Promise<OrchestratorProcess> {
  const url = `http://127.0.0.1:${options.port}`;
  await applyLocalMigrations(options.persistDir);
  const args = [
    WRANGLER,
    "dev",
    "--ip", "127.0.0.1",
    "--port", String(options.port),
    "--persist-to", options.persistDir,
    "--env-file", options.envFile,
    "--inspector-port", "0",
    "--show-interactive-dev-session=false",
  ];
  const child = spawn(process.execPath, args, {
    cwd: REPO_ROOT,
    env: { ...withoutKeysOf(process.env, options.envFile), WRANGLER_SEND_METRICS: "false", FORCE_COLOR: "0", NO_COLOR: "1" },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start wrangler dev (${process.execPath} ${WRANGLER})`);

  const recent: string[] = [];
  const onLine = (raw: string) => {
    const line = raw.replace(ANSI, "").replace(/\r$/, "");
    if (!line.trim()) return;
    recent.push(line);
    if (recent.length > 40) recent.shift();
    if (options.logFile) appendFileSync(options.logFile, `${line}\n`);
    options.onLine?.(line);
  };
  splitLines(child.stdout!, onLine);
  splitLines(child.stderr!, onLine);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const how = new Promise<string>((resolve) => child.once("exit", (code, signal) => resolve(signal ? `signal ${signal}` : `code ${code}`)));

  const stop = stopper(child, pid, exited);
  try {
    await waitReady(url, exited, options.readyTimeoutMs ?? 60_000);
  } catch (error) {
    await stop("SIGKILL");
    const tail = recent.slice(-15).join("\n  ");
    throw new Error(`${error instanceof Error ? error.message : String(error)}\n  last lines of wrangler dev:\n  ${tail}`, { cause: error });
  }
  return { url, pid, stop, exited: how };
}

/**
 * `env` without the names the env file sets: wrangler dev reads the Worker's secrets from
 * process.env too, and a value there wins over the file's (dotenv-expand keeps what is already
 * set) — an ADMIN_TOKEN or READ_TOKEN exported for another orchestrator would replace the stack's.
 */
export function withoutKeysOf(env: NodeJS.ProcessEnv, envFile: string): NodeJS.ProcessEnv {
  const names = new Set([...readFileSync(envFile, "utf8").matchAll(/^([A-Za-z_][A-Za-z0-9_]*)=/gm)].map((m) => m[1]));
  return Object.fromEntries(Object.entries(env).filter(([name]) => !names.has(name)));
}

async function waitReady(url: string, exited: Promise<number | null>, timeoutMs: number): Promise<void> {
  let gone: number | null | undefined;
  void exited.then((code) => (gone = code));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (gone !== undefined) throw new Error(`wrangler dev exited with code ${gone} before it was ready on ${url}`);
    try {
      const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(2000) });
      const text = await res.text();
      if (res.ok) return;
      const problems = healthProblems(text);
      if (problems) throw new MisconfiguredError(`the orchestrator at ${url} is misconfigured: ${problems}`);
    } catch (error) {
      if (error instanceof MisconfiguredError) throw error;
      // not listening yet
    }
    await sleep(200);
  }
  throw new Error(`wrangler dev did not answer ${url}/health within ${Math.round(timeoutMs / 1000)}s`);
}

class MisconfiguredError extends Error {}

/** The failed checks of a GET /health body, one sentence each, or null when it is not one. */
function healthProblems(text: string): string | null {
  try {
    const body = JSON.parse(text) as { checks?: { ok?: boolean; problem?: string; fix?: string }[] };
    const failed = (body.checks ?? []).filter((c) => c.ok === false);
    return failed.length > 0 ? failed.map((c) => `${c.problem ?? "?"} (${c.fix ?? ""})`).join("; ") : null;
  } catch {
    return null;
  }
}

function stopper(child: ChildProcess, pgid: number, exited: Promise<number | null>) {
  let stopping: Promise<void> | undefined;
  return (signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> => {
    stopping ??= (async () => {
      signalGroup(pgid, signal);
      const graceful = await Promise.race([waitGroupGone(pgid, 8000), exited.then(() => waitGroupGone(pgid, 8000))]);
      if (!graceful) signalGroup(pgid, "SIGKILL");
      await exited;
      await waitGroupGone(pgid, 5000);
      child.stdout?.destroy();
      child.stderr?.destroy();
    })();
    return stopping;
  };
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // the group is already gone
  }
}

/** True once no process of the group is left (within timeoutMs). */
async function waitGroupGone(pgid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return true;
    }
    if (Date.now() > deadline) return false;
    await sleep(100);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
