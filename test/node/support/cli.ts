// The CLI as a script runs it: a child process with pipes for stdout and stderr (no tty), and
// the local stack `npm start` runs (`node local/start.ts --quiet`) in a temp state dir.
import { spawn, type ChildProcess } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { REPO_ROOT } from "../../../local/paths.ts";
import { freePort } from "../../../local/stack.ts";

export interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** This process's environment without anything that would point the CLI elsewhere. */
export const CLEAN_ENV = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^(ORCHESTRATOR_URL|ADMIN_TOKEN|READ_TOKEN|R2_|FLY_APP_NAME|FORCE_COLOR)/.test(k)),
);

/** The CLI as a child process; `output()` is what it printed so far (tests act on it mid-run). */
export function spawnCli(args: string[], env: Record<string, string>): { result: Promise<Ran>; output: () => string } {
  const child = spawn(process.execPath, ["local/cli/main.ts", ...args], { cwd: REPO_ROOT, env: { ...CLEAN_ENV, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const result = new Promise<Ran>((resolve) => {
    child.once("close", (code, signal) => resolve({ code: code ?? (signal ? -1 : null), stdout, stderr: signal ? `${stderr}(killed by ${signal})` : stderr }));
  });
  return { result, output: () => stdout + stderr };
}

export function cli(args: string[], env: Record<string, string>): Promise<Ran> {
  return spawnCli(args, env).result;
}

/** What a failed expectation shows: the exit code and both streams. */
export const said = (r: Ran) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

export interface StartedStack {
  process: ChildProcess;
  stack: { orchestrator_url: string; s3_endpoint: string; bucket: string; fly_api: string; s3_access_key_id: string; s3_secret_access_key: string };
  output: () => string;
  stop(): Promise<void>;
}

/** `node local/start.ts --quiet` on free ports; ready when it says so, failing when it exits first or is silent for 180 s. */
export async function startLocalStack(stateDir: string): Promise<StartedStack> {
  const child = spawn(process.execPath, ["local/start.ts", "--quiet"], {
    cwd: REPO_ROOT,
    env: { ...CLEAN_ENV, FANOUT_STATE_DIR: stateDir, FANOUT_PORT: String(await freePort()), FANOUT_S3_PORT: String(await freePort()), FANOUT_FLY_PORT: String(await freePort()) },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (out += d));
  let exited = false;
  child.once("exit", () => (exited = true));
  let seen = 0;
  let quietSince = Date.now();
  while (!out.includes("fanout is running")) {
    if (exited) throw new Error(`local/start.ts exited before it was ready:\n${out}`);
    if (out.length !== seen) [seen, quietSince] = [out.length, Date.now()];
    if (Date.now() - quietSince > 180_000) throw new Error(`local/start.ts printed nothing for 180s:\n${out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const stack = JSON.parse(await readFile(join(stateDir, "stack.json"), "utf8")) as StartedStack["stack"];
  return {
    process: child,
    stack,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await gone;
    },
  };
}
