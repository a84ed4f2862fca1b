// Which orchestrator a command talks to, and with what: ORCHESTRATOR_URL with ADMIN_TOKEN, or
// with neither set the local stack that `npm start` is running (its address and token are in
// .local/stack/). The environment is checked with zod; a bad value is a usage error.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { describeZodError } from "../../shared/contracts.ts";
import { OrchestratorClient } from "../api.ts";
import { DEFAULT_STATE_DIR, STACK_FILE } from "../paths.ts";
import { NoOrchestrator, UsageError } from "./output.ts";

const LocalStack = z.object({
  orchestrator_url: z.string(),
  s3_endpoint: z.string(),
  bucket: z.string(),
  fly_api: z.string(),
  app: z.string().optional(),
  // The local S3 checks every signature (local/s3-auth.ts): its one key pair, written by `npm start`
  // (only `submit` needs it, and says so when it is missing).
  s3_access_key_id: z.string().min(1).optional(),
  s3_secret_access_key: z.string().min(1).optional(),
});
export type LocalStack = z.infer<typeof LocalStack>;

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

export function loadEnv() {
  const raw = Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== ""));
  const parsed = Env.safeParse(raw);
  if (!parsed.success) throw new UsageError(`bad environment: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

export function localStack(stateDir: string): LocalStack | null {
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

export interface Context {
  api: OrchestratorClient;
  /** Set when the target is the local stack of `npm start`. */
  local: LocalStack | null;
  env: ReturnType<typeof loadEnv>;
}

/** The orchestrator to talk to; NoOrchestrator (exit 4) when there is none. */
export function context(): Context {
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
