// What a machine is given for one attempt, and nothing more: a callback credential naming batch,
// task and attempt, and presigned URLs that read exactly its input and write exactly its reserved
// outputs (with the content type, writer and condition each PUT must carry), all expiring shortly
// after the attempt's hard limits.
import { signGrant } from "../../shared/token.ts";
import type { Config } from "../config.ts";
import { getPhase } from "../phases/index.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { outputAccess, outputContentTypeOf } from "./outputs.ts";
import { presign } from "./presign.ts";

export { attemptExpiry, presign } from "./presign.ts";

export const callbackUrl = (config: Config, batchId: string, taskId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/callback/${encodeURIComponent(batchId)}/${taskId}`;
export const outputsUrl = (config: Config, batchId: string, taskId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/outputs/${encodeURIComponent(batchId)}/${taskId}`;
export const leaseUrl = (config: Config, batchId: string) =>
  `${config.CALLBACK_BASE_URL.replace(/\/+$/, "")}/lease/${encodeURIComponent(batchId)}`;

/** The env of one attempt, or why the attempt may not run (its output is another writer's object, or storage could not say). */
export type AttemptAccess = { ok: true; env: Record<string, string> } | { ok: false; reason: string; retryable: boolean };

/**
 * The machine contract env of one attempt (DESIGN.md), on top of the phase's own. With the
 * default MACHINE_STORAGE=scoped no storage key reaches the machine: a presigned GET of its input
 * and a presigned PUT of page 1's output, whose signed headers (OUTPUT_HEADERS) the machine must
 * send — its content type, the writer and the condition that keeps it from replacing an object
 * this batch did not write (outputs.ts). `legacy-keys` is the opt-in for images that only speak
 * the old contract (they get the orchestrator's R2 key pair). Either way page 1's key is checked
 * in storage first: an object there that this batch did not write refuses the attempt.
 */
export async function attemptEnv(e: Engine, meta: BatchMeta, task: TaskRow, expiresAt: number): Promise<AttemptAccess> {
  const c = e.config;
  const now = Date.now();
  const output = await outputAccess(e, meta, task, task.output_key, outputContentTypeOf(getPhase(task.phase), 1));
  if (!output.ok) return output;
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
    return { ok: true, env };
  }
  env.INPUT_URL = await presign(c, "GET", task.input_key, expiresAt, now);
  env.OUTPUT_URL = await presign(c, "PUT", task.output_key, expiresAt, now, output.headers);
  env.OUTPUT_HEADERS = JSON.stringify(output.headers);
  env.OUTPUTS_URL = outputsUrl(c, meta.batch_id, task.task_id);
  return { ok: true, env };
}

/** The lease credential of a pool machine: its batch and id, until its run can no longer last. */
export async function leaseToken(e: Engine, batchId: string, workerId: string, expiresAt: number): Promise<string> {
  return signGrant(e.config.CALLBACK_SECRET, { kind: "lease", batchId, workerId }, expiresAt);
}
