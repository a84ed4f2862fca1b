// What a machine is given for one attempt, and nothing more: a callback credential naming batch,
// task and attempt, and presigned URLs that read exactly its input and write exactly its reserved
// outputs, all expiring shortly after the attempt's hard limits.
import { AwsClient } from "aws4fetch";
import { signGrant } from "../../shared/token.ts";
import type { Config } from "../config.ts";
import type { BatchMeta, TaskRow } from "../store.ts";
import { CREATE_ANSWER_MS, CREDENTIAL_GRACE_MS, type Engine, type Limits } from "./context.ts";

/** SigV4 presigned URLs live at most 7 days. */
const MAX_PRESIGN_S = 604_800;

/** When an attempt's credentials stop working: its create, boot and run limits, plus a grace. */
export function attemptExpiry(now: number, limits: Pick<Limits, "bootTimeoutMs" | "runTimeoutMs">): number {
  return now + CREATE_ANSWER_MS + limits.bootTimeoutMs + limits.runTimeoutMs + CREDENTIAL_GRACE_MS;
}

/** Base URL of the bucket on the S3 API: the configured endpoint, or R2's account endpoint. */
export function bucketBase(config: Config): string {
  const endpoint = config.R2_ENDPOINT ?? `https://${config.R2_ACCOUNT_ID}.r2.cloudflarestorage.com`;
  return `${endpoint.replace(/\/+$/, "")}/${encodeURIComponent(config.R2_BUCKET)}`;
}

export const objectUrl = (config: Config, key: string) => `${bucketBase(config)}/${key.split("/").map(encodeURIComponent).join("/")}`;

/** A presigned GET or PUT of one object, valid until `expiresAt`. */
export async function presign(config: Config, method: "GET" | "PUT" | "HEAD", key: string, expiresAt: number, now = Date.now()): Promise<string> {
  const client = new AwsClient({
    accessKeyId: config.R2_ACCESS_KEY_ID,
    secretAccessKey: config.R2_SECRET_ACCESS_KEY,
    service: "s3",
    region: "auto",
  });
  const url = new URL(objectUrl(config, key));
  const seconds = Math.max(1, Math.min(MAX_PRESIGN_S, Math.ceil((expiresAt - now) / 1000)));
  url.searchParams.set("X-Amz-Expires", String(seconds));
  const signed = await client.sign(new Request(url, { method }), { aws: { signQuery: true, datetime: amzDate(now) } });
  return signed.url;
}

function amzDate(t: number): string {
  return new Date(t).toISOString().replace(/[:-]|\.\d{3}/g, "");
}

export const callbackUrl = (config: Config, batchId: string, taskId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/callback/${encodeURIComponent(batchId)}/${taskId}`;
export const outputsUrl = (config: Config, batchId: string, taskId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/outputs/${encodeURIComponent(batchId)}/${taskId}`;
export const leaseUrl = (config: Config, batchId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/lease/${encodeURIComponent(batchId)}`;

/**
 * The machine contract env of one attempt (DESIGN.md), on top of the phase's own. With the
 * default MACHINE_STORAGE=scoped no storage key reaches the machine; `legacy-keys` is the opt-in
 * for images that only speak the old contract (they get the orchestrator's R2 key pair).
 */
export async function attemptEnv(e: Engine, meta: BatchMeta, task: TaskRow, expiresAt: number): Promise<Record<string, string>> {
  const c = e.config;
  const now = Date.now();
  const env: Record<string, string> = {
    TASK_ID: task.task_id,
    BATCH_ID: meta.batch_id,
    PHASE: task.phase,
    ATTEMPT: String(task.attempt),
    INPUT_R2_KEY: task.input_key,
    OUTPUT_R2_KEY: task.output_key,
    CALLBACK_URL: callbackUrl(c, meta.batch_id, task.task_id),
    CALLBACK_TOKEN: await signGrant(c.CALLBACK_SECRET, { kind: "callback", batchId: meta.batch_id, taskId: task.task_id, attempt: task.attempt }, expiresAt),
    CREDENTIALS_EXPIRE_AT: new Date(expiresAt).toISOString(),
  };
  if (c.MACHINE_STORAGE === "legacy-keys") {
    Object.assign(env, {
      R2_ACCOUNT_ID: c.R2_ACCOUNT_ID,
      R2_ACCESS_KEY_ID: c.R2_ACCESS_KEY_ID,
      R2_SECRET_ACCESS_KEY: c.R2_SECRET_ACCESS_KEY,
      R2_BUCKET: c.R2_BUCKET,
      ...(c.R2_ENDPOINT ? { R2_ENDPOINT: c.R2_ENDPOINT } : {}),
    });
    return env;
  }
  env.INPUT_URL = await presign(c, "GET", task.input_key, expiresAt, now);
  env.OUTPUT_URL = await presign(c, "PUT", task.output_key, expiresAt, now);
  env.OUTPUTS_URL = outputsUrl(c, meta.batch_id, task.task_id);
  return env;
}

/** The lease credential of a pool machine: its batch and id, until its run can no longer last. */
export async function leaseToken(e: Engine, batchId: string, workerId: string, expiresAt: number): Promise<string> {
  return signGrant(e.config.CALLBACK_SECRET, { kind: "lease", batchId, workerId }, expiresAt);
}
