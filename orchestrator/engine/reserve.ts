// POST /outputs/:batchId/:taskId: the keys an attempt may write, and each one's upload URL when the
// machine is about to upload it. Every key is reserved in the batch's SQLite before it is written
// (never an existing object or another task's); a URL lives OUTPUT_URL_TTL_MS and never past its
// attempt's credential, and only the batch's current epoch and the task's running attempt get one.
import type { ReserveRequest } from "../../shared/contracts.ts";
import { keyProblem } from "../../shared/keys.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { Phase } from "../phases/types.ts";
import type { BatchMeta, TaskRow } from "../store/index.ts";
import { presign } from "./access.ts";
import { OUTPUT_URL_TTL_MS } from "./constants.ts";
import type { Engine } from "./context.ts";
import { outputAccess, outputContentTypeOf, overwrites } from "./outputs.ts";

/** What the attempt's credential says about it (verified by the Worker). */
export interface Credential {
  attempt: number;
  epoch: number;
  expiresAt: number;
}

type Output = { page: number; r2_key: string; url?: string; headers?: Record<string, string>; expires_at?: string };
export type ReserveReply =
  | { code: 200; body: { batch_id: string; task_id: string; attempt: number; outputs: Output[] } }
  | { code: 400 | 401 | 404 | 409; body: { error: string } };

const OPEN = new Set(["creating", "booting", "running"]);

/**
 * Why this credential may not act for its task any more (401), or null when it may. Attempts
 * 1…task.attempt all began (a create that never happened gives its number back).
 */
export function staleCredential(meta: BatchMeta, task: TaskRow, c: Pick<Credential, "attempt" | "epoch">): { code: 401; error: string } | null {
  if (c.attempt < 1 || c.attempt > task.attempt) return { code: 401, error: `attempt ${c.attempt} of ${task.task_id} never ran` };
  if (c.epoch !== meta.epoch) {
    return { code: 401, error: `attempt ${c.attempt} of ${task.task_id} ended when the batch was reset or redriven (its credential is of epoch ${c.epoch}, the batch is at ${meta.epoch})` };
  }
  return null;
}

/**
 * `pages`: reserves keys for pages 2…pages (page 1 was reserved at plan time), each the first of the
 * phase's candidates that no file, object or other task has, and answers the keys of pages 1…pages.
 * `page`: that page's key (reserved now if it is not yet), with a presigned PUT and the headers it
 * signs (outputs.ts outputAccess: the object there, if any, is looked at again). Idempotent.
 */
export async function reserveOutputs(e: Engine, taskId: string, credential: Credential, request: ReserveRequest): Promise<ReserveReply> {
  const meta = e.store.getMeta();
  const task = meta ? e.store.getTask(taskId) : null;
  if (!meta || !task) return { code: 404, body: { error: "unknown batch or task" } };
  const stale = staleCredential(meta, task, credential);
  if (stale) return { code: stale.code, body: { error: stale.error } };
  if (credential.attempt !== task.attempt || !OPEN.has(task.state)) {
    return { code: 409, body: { error: `attempt ${credential.attempt} is no longer the running attempt of ${taskId}` } };
  }
  const phase = getPhase(task.phase);
  const want = request.pages ?? request.page ?? 1;
  if (want > 1 && !phase.pageKeyCandidates) return { code: 400, body: { error: `phase ${phase.name} writes one output per task` } };
  const base = { batch_id: meta.batch_id, task_id: taskId, attempt: credential.attempt };

  if (request.pages !== undefined) {
    const have = new Map(e.store.outputsOf(taskId).map((o) => [o.page, o.key]));
    const missing = Array.from({ length: request.pages - 1 }, (_, i) => i + 2).filter((p) => !have.has(p));
    // Each fresh key costs a HEAD: the request's Outbound (orchestrator/outbound.ts) keeps at most
    // six of them in flight and counts them against the invocation's subrequests, whatever the page count.
    const reserved = await Promise.all(missing.map((page) => reservePage(e, meta, task, phase, page)));
    const refused = reserved.find((r) => "error" in r);
    if (refused && "error" in refused) return { code: 400, body: { error: refused.error } };
    for (const r of reserved) if ("key" in r) have.set(r.page, r.key);
    log("DO", "outputs_reserved", { batch_id: meta.batch_id, task_id: taskId, attempt: credential.attempt, pages: request.pages, new_keys: missing.length });
    const outputs = Array.from({ length: request.pages }, (_, i) => ({ page: i + 1, r2_key: have.get(i + 1)! }));
    return { code: 200, body: { ...base, outputs } };
  }

  const page = request.page!;
  let key = e.store.outputOf(taskId, page);
  let fresh = false;
  if (key === null) {
    const r = await reservePage(e, meta, task, phase, page);
    if ("error" in r) return { code: 400, body: { error: r.error } };
    ({ key, fresh } = r);
  }
  const access = await outputAccess(e, meta, task, key, outputContentTypeOf(phase, page), fresh ? "absent" : undefined);
  if (!access.ok) return { code: 409, body: { error: access.reason } };
  const now = Date.now();
  const expiresAt = Math.min(now + OUTPUT_URL_TTL_MS, credential.expiresAt);
  const url = await presign(e.config, "PUT", key, expiresAt, now, access.headers);
  log("DO", "output_url", { batch_id: meta.batch_id, task_id: taskId, attempt: credential.attempt, page, key, expires_at: new Date(expiresAt).toISOString() });
  return { code: 200, body: { ...base, outputs: [{ page, r2_key: key, url, headers: access.headers, expires_at: new Date(expiresAt).toISOString() }] } };
}

/** Reserves the first free candidate key for `page` (page 1 is the task's output key), or says why none is usable. */
async function reservePage(
  e: Engine,
  meta: BatchMeta,
  task: TaskRow,
  phase: Phase,
  page: number,
): Promise<{ page: number; key: string; fresh: boolean } | { error: string }> {
  const replace = overwrites(meta);
  const candidates = page === 1 ? [task.output_key] : (phase.pageKeyCandidates?.(task.output_key, page) ?? []);
  for (const candidate of candidates) {
    const problem = keyProblem(candidate);
    if (problem) return { error: `page ${page} of ${task.input_key} has no valid output key: ${candidate} is not a canonical object key: ${problem}` };
    if (e.store.keyTaken(candidate)) {
      // A concurrent request for the same task may have taken it for this very page.
      const mine = e.store.outputOf(task.task_id, page);
      if (mine !== null) return { page, key: mine, fresh: false };
      continue;
    }
    // Never an existing object (one outside the batch's file list, say), unless the batch overwrites.
    const exists = replace ? false : (await e.objects().head(candidate)) !== null;
    if (exists) continue;
    if (e.store.reserveOutput(candidate, task.task_id, page)) return { page, key: candidate, fresh: !replace };
    const mine = e.store.outputOf(task.task_id, page);
    if (mine !== null) return { page, key: mine, fresh: false };
  }
  return { error: `page ${page} of ${task.input_key} has no free output key (every candidate is taken)` };
}
