// What a machine is given for one attempt, and nothing more: a callback credential naming batch,
// task and attempt, and presigned URLs that read exactly its input and write exactly its reserved
// outputs, all expiring shortly after the attempt's hard limits.
import { signGrant } from "../../shared/token.ts";
import type { Config } from "../config.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { presign } from "./presign.ts";

export { attemptExpiry, presign } from "./presign.ts";

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
