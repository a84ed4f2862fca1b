// What a machine is given for one attempt, and nothing more: a callback credential naming batch,
// task, attempt and the batch's epoch, a presigned URL that reads exactly its input, and where to
// ask for the URL of each reserved output right before it uploads it (engine/reserve.ts): no URL that
// writes is ever in a create body. Everything expires shortly after the attempt's hard limits.
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
 * default MACHINE_STORAGE=scoped no storage key reaches the machine: a presigned GET of its input,
 * its size as the orchestrator saw it (INPUT_SIZE: the worker reads no more), and OUTPUTS_URL,
 * where it asks for each output's short-lived PUT URL when it is about to upload it — with the
 * headers that URL signs: the content type, the writer and the condition that keeps it from
 * replacing an object this batch did not write (outputs.ts). `legacy-keys` is the opt-in for
 * images that only speak the old contract (they get the orchestrator's R2 key pair). Either way
 * page 1's key is checked in storage first: an object there that this batch did not write refuses
 * the attempt before a machine is made for it.
 */
export async function attemptEnv(e: Engine, meta: BatchMeta, task: TaskRow, expiresAt: number): Promise<AttemptAccess> {
  const c = e.config;
  const now = Date.now();
  const output = await outputAccess(e, meta, task, task.output_key, outputContentTypeOf(getPhase(task.phase), 1));
  if (!output.ok) return output;
  const grant = { kind: "callback", batchId: meta.batch_id, taskId: task.task_id, attempt: task.attempt, epoch: meta.epoch } as const;
  const env: Record<string, string> = {
    TASK_ID: task.task_id,
    BATCH_ID: meta.batch_id,
    PHASE: task.phase,
    ATTEMPT: String(task.attempt),
    INPUT_R2_KEY: task.input_key,
    OUTPUT_R2_KEY: task.output_key,
    ...(task.size_bytes > 0 ? { INPUT_SIZE: String(task.size_bytes) } : {}),
    CALLBACK_URL: callbackUrl(c, meta.batch_id, task.task_id),
    CALLBACK_TOKEN: await signGrant(c.CALLBACK_SECRET, grant, expiresAt),
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
  env.OUTPUTS_URL = outputsUrl(c, meta.batch_id, task.task_id);
  return { ok: true, env };
}

/** A pool machine's lease credential: its batch, id and the batch's epoch, until `expiresAt`. */
export async function leaseToken(e: Engine, meta: Pick<BatchMeta, "batch_id" | "epoch">, workerId: string, expiresAt: number): Promise<string> {
  return signGrant(e.config.CALLBACK_SECRET, { kind: "lease", batchId: meta.batch_id, workerId, epoch: meta.epoch }, expiresAt);
}
