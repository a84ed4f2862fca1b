// Planning: a phase's tasks from the file list, a page of files per alarm. Each task's output
// key is reserved with it; a file the batch may not read (not canonical, outside the roots or the
// batch's place: outputs.ts inputRefusal) fails with the reason, and so does one whose output key
// would not be canonical (over 1,024 bytes, say).
import { keyProblem } from "../../shared/keys.ts";
import { log } from "../log.ts";
import { getPhase } from "../phases/index.ts";
import type { PhaseFile } from "../phases/types.ts";
import type { BatchMeta, FileRow, NewTask } from "../store/index.ts";
import type { Engine } from "./context.ts";
import { inputRefusal } from "./outputs.ts";

const PLAN_FILES_PER_ALARM = 5000;
/**
 * Ranged reads of files' first bytes per alarm, for a phase that asks to see them (`sniff`): each is a
 * subrequest (10,000 per invocation on Workers Paid, developers.cloudflare.com/workers/platform/limits/),
 * at most 6 open at once (the connection limit there).
 */
export const SNIFFS_PER_ALARM = 200;
const SNIFF_CONCURRENCY = 6;

export async function plan(e: Engine, meta: BatchMeta): Promise<number> {
  const phase = getPhase(meta.phase);
  let files = e.store.filesAfter(meta.plan_cursor, PLAN_FILES_PER_ALARM);
  // Each manifest directory's processing_config, read once per alarm (it is stored once, not per file).
  const configs = new Map<number, unknown>();
  const phaseFile = (f: FileRow): PhaseFile => {
    if (f.dir_idx !== null && !configs.has(f.dir_idx)) configs.set(f.dir_idx, e.store.directoryConfig(f.dir_idx));
    return toPhaseFile(f, f.dir_idx === null ? undefined : configs.get(f.dir_idx));
  };
  const heads = new Map<number, Uint8Array>();
  if (phase.sniff) {
    const sniff = phase.sniff;
    const wanted: FileRow[] = [];
    for (const [i, f] of files.entries()) {
      if (inputRefusal(e.config, meta, f.r2_key) || (meta.redrives > 0 && e.store.hasTask(phase.name, f.id)) || !sniff.wants(phaseFile(f))) continue;
      // The rest of the page waits for the next alarm: the cursor stops before the first file not read.
      if (wanted.length === SNIFFS_PER_ALARM) {
        files = files.slice(0, i);
        break;
      }
      wanted.push(f);
    }
    for (let i = 0; i < wanted.length; i += SNIFF_CONCURRENCY) {
      await Promise.all(wanted.slice(i, i + SNIFF_CONCURRENCY).map(async (f) => heads.set(f.id, await readHead(e, f.r2_key, sniff.bytes))));
    }
  }
  const now = Date.now();
  const more = files.length === PLAN_FILES_PER_ALARM || heads.size === SNIFFS_PER_ALARM;
  e.store.transaction(() => {
    let seq = meta.next_seq;
    let maxSize = meta.max_task_size;
    // The page's tasks go in with one statement each and one counter move; keys chosen earlier in the page are taken too.
    const page: NewTask[] = [];
    const chosen = new Set<string>();
    for (const f of files) {
      const nextId = () => `${phase.slug}-${String(seq++).padStart(6, "0")}`;
      const refused = inputRefusal(e.config, meta, f.r2_key);
      if (refused) {
        // Never read or written: the batch touches only canonical keys in its own place.
        e.store.removeFile(f.r2_key);
        const id = nextId();
        page.push({
          task_id: id,
          phase: phase.name,
          file_id: f.id,
          input_key: f.r2_key,
          output_key: `(none: ${id})`,
          size_bytes: f.file_size,
          params_json: "{}",
          now,
          error: refused,
        });
        continue;
      }
      // After a redrive the phase is planned again: only files without a task get one.
      if (meta.redrives > 0 && e.store.hasTask(phase.name, f.id)) continue;
      const planned = phase.plan(phaseFile(f), heads.get(f.id));
      if (!planned) continue;
      maxSize = Math.max(maxSize, planned.size_bytes);
      const id = nextId();
      // A file that cannot be processed writes nothing: no key is reserved, and a redrive skips it.
      let output: string | undefined = planned.error ? `(none: ${id})` : undefined;
      let error = planned.error;
      for (const candidate of output ? [] : planned.output_key_candidates) {
        const problem = keyProblem(candidate);
        if (problem) {
          // Later candidates are longer still: the file cannot be written beside its input.
          output = `(none: ${id})`;
          error = `its output key ${JSON.stringify(candidate.length > 300 ? `${candidate.slice(0, 300)}…` : candidate)} is not a canonical object key: ${problem}`;
          break;
        }
        if (!chosen.has(candidate) && !e.store.keyTaken(candidate)) {
          output = candidate;
          break;
        }
      }
      chosen.add(output!);
      page.push({
        task_id: id,
        phase: phase.name,
        file_id: f.id,
        input_key: planned.input_key,
        output_key: output!,
        size_bytes: planned.size_bytes,
        params_json: JSON.stringify(planned.params ?? {}),
        now,
        ...(error ? { error } : {}),
      });
    }
    e.store.insertTasks(page);
    const done = !more;
    e.store.updateMeta(
      {
        next_seq: seq,
        max_task_size: maxSize,
        plan_cursor: files.length > 0 ? files[files.length - 1].id : meta.plan_cursor,
        ...(done ? { stage: "run" } : {}),
      },
      now,
    );
    if (done) log("DO", "phase_planned", { batch_id: meta.batch_id, phase: phase.name, tasks: e.store.phaseCounts(phase.name).total });
  });
  return Date.now();
}

/** The object's first `bytes` bytes (fewer when it is shorter; none when it is gone). */
async function readHead(e: Engine, key: string, bytes: number): Promise<Uint8Array> {
  const object = await e.objects().getStream(key, 0, bytes);
  if (!object) return new Uint8Array(0);
  const head = new Uint8Array(bytes);
  let n = 0;
  const reader = object.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const take = Math.min(value.length, bytes - n);
      head.set(value.subarray(0, take), n);
      n += take;
      if (n === bytes) break;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  return head.subarray(0, n);
}

function toPhaseFile(f: FileRow, directoryConfig: unknown): PhaseFile {
  // Files discovered before migration 9 carry their directory's config in extra_json.
  const extra = f.extra_json ? (JSON.parse(f.extra_json) as Record<string, unknown>) : {};
  const config = directoryConfig ?? extra.processing_config;
  return {
    r2_key: f.r2_key,
    logical_path: f.logical_path,
    file_name: f.file_name,
    file_size: f.file_size,
    content_type: f.content_type,
    ...(config !== undefined ? { processing_config: config } : {}),
    ...(f.source_key ? { source_r2_key: f.source_key } : {}),
  };
}
