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

export function plan(e: Engine, meta: BatchMeta): number {
  const phase = getPhase(meta.phase);
  const now = Date.now();
  const files = e.store.filesAfter(meta.plan_cursor, PLAN_FILES_PER_ALARM);
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
      const planned = phase.plan(toPhaseFile(f));
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
    const done = files.length < PLAN_FILES_PER_ALARM;
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

function toPhaseFile(f: FileRow): PhaseFile {
  const extra = f.extra_json ? (JSON.parse(f.extra_json) as Record<string, unknown>) : {};
  return {
    r2_key: f.r2_key,
    logical_path: f.logical_path,
    file_name: f.file_name,
    file_size: f.file_size,
    content_type: f.content_type,
    ...(extra.processing_config !== undefined ? { processing_config: extra.processing_config } : {}),
  };
}
