// The CLI (`fanout`, package.json's bin) as a child process with only the env it is given: no
// local stack file is consulted, so every test says which orchestrator and storage it talks to.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT } from "../../../local/orchestrator-process.ts";
import type { E2EStack } from "./stack.ts";

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

const ENTRY = join(REPO_ROOT, (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { bin: { fanout: string } }).bin.fanout);

export function cli(args: string[], env: Record<string, string>): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [ENTRY, ...args], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", FANOUT_STATE_DIR: "/nonexistent-fanout-state", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** What the CLI needs to talk to `stack` as it would to a deployed orchestrator and R2. */
export function cliEnv(stack: E2EStack): Record<string, string> {
  return {
    ORCHESTRATOR_URL: stack.orchestratorUrl,
    ADMIN_TOKEN: stack.adminToken,
    R2_ENDPOINT: stack.s3.endpoint,
    R2_ACCESS_KEY_ID: stack.s3.credentials.accessKeyId,
    R2_SECRET_ACCESS_KEY: stack.s3.credentials.secretAccessKey,
    R2_BUCKET: stack.bucket,
  };
}
