// The routes a machine calls with the credentials its attempt or its pool lease was given:
// callback, output reservation, lease and heartbeat. The Worker checks the credential's MAC,
// binding and expiry; the batch's DO checks that its epoch, attempt and machine are still live.
import type { IRequest } from "itty-router";
import { z } from "zod";
import { BatchId, HeartbeatRequest, LeaseRequest, MAX_CALLBACK_BYTES, ReserveRequest, TaskId } from "../shared/contracts.ts";
import { verifyGrant, type Verified } from "../shared/token.ts";
import { loadConfig } from "./config.ts";
import { HttpError, parse, readJson, stub } from "./http.ts";
import { log } from "./log.ts";

/** What a machine's credential names (attempt, epoch, expiry), or 401: bound to batch, task and attempt, and expiring. */
async function attemptOf(req: IRequest, env: Env, taskId: string, what: string): Promise<Extract<Verified, { ok: true }>> {
  const batchId = req.params.batchId;
  const verified = await verifyGrant(loadConfig(env).CALLBACK_SECRET, { kind: "callback", batchId, taskId }, req.headers.get("authorization"));
  if (!verified.ok) {
    log("Callback", "rejected", { batch_id: batchId, task_id: taskId, what, reason: verified.reason });
    throw new HttpError(401, `${what} token missing, invalid or expired`);
  }
  return verified;
}

/** Only the envelope is checked here; the task's phase checks the rest of the body. */
const CallbackEnvelope = z.looseObject({ task_id: TaskId, batch_id: BatchId });

export async function callback(req: IRequest, env: Env): Promise<Response> {
  const { batchId } = req.params;
  const taskId = parse(TaskId, req.params.taskId, "taskId");
  const credential = await attemptOf(req, env, taskId, "callback");
  const raw = await readJson(req, MAX_CALLBACK_BYTES);
  const body = parse(CallbackEnvelope, raw, "body");
  if (body.batch_id !== batchId || body.task_id !== taskId) {
    throw new HttpError(400, "body batch_id/task_id do not match the URL", {
      expected: { batch_id: batchId, task_id: taskId },
      received: { batch_id: body.batch_id, task_id: body.task_id },
    });
  }
  const reply = await stub(env, batchId).callback(taskId, { attempt: credential.attempt, epoch: credential.epoch }, raw);
  return Response.json(reply.body, { status: reply.code });
}

export async function reserveOutputs(req: IRequest, env: Env): Promise<Response> {
  const taskId = parse(TaskId, req.params.taskId, "taskId");
  const credential = await attemptOf(req, env, taskId, "outputs");
  const body = parse(ReserveRequest, await readJson(req, 4 * 1024), "body");
  const { attempt, epoch, expiresAt } = credential;
  const reply = await stub(env, req.params.batchId).reserveOutputs(taskId, { attempt, epoch, expiresAt }, body);
  return Response.json(reply.body, { status: reply.code });
}

/** Pool machines authenticate with an expiring token bound to their batch and machine row (and, in the DO, its machine and epoch). */
async function poolMachine<T extends { worker_id: string }>(req: IRequest, env: Env, schema: z.ZodType<T>): Promise<{ body: T; epoch: number }> {
  const body = parse(schema, await readJson(req, 16 * 1024), "body");
  const secret = loadConfig(env).CALLBACK_SECRET;
  const batchId = req.params.batchId;
  const verified = await verifyGrant(secret, { kind: "lease", batchId, workerId: body.worker_id }, req.headers.get("authorization"));
  if (!verified.ok) {
    log("Lease", "rejected", { batch_id: batchId, worker_id: body.worker_id, reason: verified.reason });
    throw new HttpError(401, "lease token missing, invalid or expired");
  }
  return { body, epoch: verified.epoch };
}

export async function lease(req: IRequest, env: Env): Promise<Response> {
  const { body, epoch } = await poolMachine(req, env, LeaseRequest);
  const answer = await stub(env, req.params.batchId).lease(body.worker_id, body.machine_id, epoch);
  if (!answer) throw new HttpError(404, "unknown batch", { batch_id: req.params.batchId });
  if ("refused" in answer) throw new HttpError(401, `lease refused: ${answer.refused}`);
  return Response.json(answer);
}

export async function heartbeat(req: IRequest, env: Env): Promise<Response> {
  const { body, epoch } = await poolMachine(req, env, HeartbeatRequest);
  const answer = await stub(env, req.params.batchId).heartbeat(body.worker_id, body.machine_id, body.task_id, epoch);
  if (!answer) throw new HttpError(404, "unknown batch", { batch_id: req.params.batchId });
  if ("refused" in answer) throw new HttpError(401, `lease refused: ${answer.refused}`);
  return Response.json(answer, { status: answer.ok ? 200 : 409 });
}
