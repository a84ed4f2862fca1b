// The phase contract. A phase is data and small pure functions: it never spawns, sleeps or
// counts by itself — the engine (batch-do.ts) does all of that from what the phase declares.
import type { z } from "zod";
import type { FileEntry } from "../../shared/contracts.ts";
import type { TaskWork } from "../engine/sizing.ts";
import type { GuestSize } from "../fly/api.ts";

/** What a phase's machines measured (callbacks' `performance.cpu_s` and `megapixels`): the work model's rates. */
export interface WorkRates {
  cpuSPerMp?: number;
  pixelsPerByte?: number;
}

/** A file of the batch as a phase sees it when it discovers tasks. */
export interface PhaseFile {
  r2_key: string;
  logical_path: string;
  file_name: string;
  file_size: number;
  content_type: string;
  /** The manifest directory's processing_config, when the batch came with a manifest. */
  processing_config?: unknown;
  /** Set on a file an earlier phase made: the key of the file it was made from. */
  source_r2_key?: string;
}

/** What one task of a phase will do; the engine turns it into a task row. */
export interface TaskPlan {
  input_key: string;
  /** Output keys in order of preference; the engine takes the first that no other file or task uses. */
  output_key_candidates: Iterable<string>;
  size_bytes: number;
  params?: Record<string, string | number | boolean>;
  /** The file cannot be processed (e.g. a bad processing_config): its task is recorded FAILED with this reason. */
  error?: string;
}

/** A task as handed back to the phase. */
export interface TaskView {
  task_id: string;
  batch_id: string;
  input_key: string;
  output_key: string;
  size_bytes: number;
  attempt: number;
  params: Record<string, string | number | boolean>;
}

export interface MachineRequest {
  /** Phase-specific env; the engine adds the machine contract (ids, storage access, callback). */
  env: Record<string, string>;
  /** Image override; FLY_IMAGE by default. */
  image?: string;
}

/** How a callback maps to a task outcome, and how a finished task changes the file list. */
export type TaskOutcome =
  | {
      ok: true;
      add: FileEntry[];
      remove?: string[];
      /** Shown in the task view and status body, e.g. a skipped page. */
      warnings?: string[];
      /** Fields merged into the task's input file's entry in the downstream list (e.g. its sha256). */
      inputFields?: Record<string, string | number | boolean>;
    }
  | { ok: false; error: string; retryable: boolean };

export interface PhaseLimits {
  /** How long a machine may take from create to `started` (image pulls can take minutes). */
  bootTimeoutMs: number;
  /** How long a started machine may run before it is destroyed and the task retried. */
  runTimeoutMs: number;
  /** Attempts per task before FAILED; MAX_RETRY_ATTEMPTS when unset. */
  maxAttempts?: number;
  /** Live machines for this phase; MAX_CONCURRENT_MACHINES when unset (the lower wins). */
  maxConcurrentMachines?: number;
}

export interface Phase<Callback = unknown> {
  /** Shown as the batch status while the phase runs, e.g. `TIFF_CONVERSION`. */
  name: string;
  /** Task id prefix: lowercase letters/digits, e.g. `tiff` → `tiff-000042`. */
  slug: string;
  /** Content type of the objects its tasks write: signed into every PUT URL, so nothing else can be stored there. */
  outputContentType: string;
  /**
   * True: runs only when a batch's message names it in `phases` (CHECKSUM). Otherwise it is in every
   * batch's default pipeline, where it does whatever its `plan` finds (nothing, for a batch without its files).
   */
  optIn?: boolean;
  limits: PhaseLimits;
  /**
   * Files whose first `bytes` bytes `plan` needs to see (a PDF found by its signature whatever its
   * name): the engine reads them with a ranged GET while planning, a bounded number per alarm.
   */
  sniff?: { bytes: number; wants(file: PhaseFile): boolean };
  /** The task for `file` (`head`: its first bytes, when `sniff` asked for them), or null when this phase has nothing to do with it. */
  plan(file: PhaseFile, head?: Uint8Array): TaskPlan | null;
  /** The machine a task of `sizeBytes` input needs; a pool machine is this once per slot for the largest task. */
  guest(sizeBytes: number): GuestSize;
  /**
   * What a task of `sizeBytes` input takes (CPU-seconds, memory, bytes moved), from the phase's
   * starting figures or the `rates` its machines measured: sizing uses it; absent, a phase runs
   * one machine per task sized by `guest`, or pools of it per slot.
   */
  work?(sizeBytes: number, rates?: WorkRates): TaskWork;
  machine(task: TaskView): MachineRequest;
  /** The callback body this phase's machines send; the engine checks it before `result` sees it. */
  callback: z.ZodType<Callback>;
  /**
   * Keys for page `page` (2, 3, …) of an output, most preferred first, when one task may write
   * several; the engine reserves the first free one when the machine asks. Absent: one output per task.
   */
  pageKeyCandidates?(outputKey: string, page: number): Iterable<string>;
  /** Content type of output `page` when the phase writes more than one kind (a JPEG and a PDF per page). */
  pageContentType?(page: number): string;
  /**
   * How a checked callback maps to the task's outcome. The files it adds must be outputs reserved
   * for the task; the engine reads each one's first bytes before the success counts (engine/verify.ts)
   * and names it by its reserved key, never by a name the machine sent. A `width` and `height` on an
   * added JPEG are the machine's report, checked against the JPEG's own frame header.
   */
  result(task: TaskView, callback: Callback): TaskOutcome;
}
