// The machine's environment: the shared MachineEnv contract plus worker-only tuning knobs,
// parsed once at start. Problems name the variable, what was expected and what was received
// (never the value of a secret).
import { readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { z } from "zod";
import { BatchId, envInt, MachineEnv, PoolEnv, SECRET_ENV_NAMES, TaskId } from "../shared/contracts.ts";
import { DEFAULT_RENDER_DPI, MAX_PDF_PAGES } from "../shared/pdf.ts";

/** Knobs of this worker only (the orchestrator never sets them; tests and operators may). */
export const WorkerTuning = z.object({
  CALLBACK_MAX_ATTEMPTS: envInt(1, 20).default(6),
  /** First retry delay; doubles per attempt with jitter, capped at 30 s. */
  CALLBACK_BACKOFF_MS: envInt(1, 60_000).default(1000),
  CALLBACK_TIMEOUT_MS: envInt(100, 600_000).default(15_000),
});
export type WorkerTuning = z.infer<typeof WorkerTuning>;

/** Output settings beyond JPEG_QUALITY/MOZJPEG (MachineEnv): a batch's processing_config may set them. */
export const JpegSettings = z.object({
  /** Chroma subsampling of colour JPEGs: 4:2:0 (the ingest pipeline's default) or full-colour 4:4:4. */
  JPEG_CHROMA: z.enum(["4:2:0", "4:4:4"], { message: "must be '4:2:0' or '4:4:4'" }).default("4:2:0"),
  /** auto: greyscale and bilevel inputs become 1-band JPEGs; rgb: every JPEG is 3-band sRGB. */
  JPEG_COLOUR: z.enum(["auto", "rgb"], { message: "must be 'auto' or 'rgb'" }).default("auto"),
});
export type JpegSettings = z.infer<typeof JpegSettings>;

/** The PDF job's settings (PHASE=PDF_SPLITTING); a manifest directory's processing_config may set the DPI. */
export const PdfSettings = z.object({
  /** Resolution pages are rendered at: 300 (archival access copies) unless asked otherwise. */
  PDF_RENDER_DPI: envInt(36, 1200).default(DEFAULT_RENDER_DPI),
  /** A PDF with more pages is refused before anything is written (shared/pdf.ts says why the ceiling). */
  PDF_MAX_PAGES: envInt(1, MAX_PDF_PAGES).default(MAX_PDF_PAGES),
});
export type PdfSettings = z.infer<typeof PdfSettings>;

export type WorkerEnv = MachineEnv & WorkerTuning & JpegSettings & PdfSettings & { memory: MemoryBudget };

export interface MemoryBudget {
  /** The machine's memory in MB. */
  mb: number;
  source: "MEMORY_MB" | "cgroup" | "os.totalmem";
}

/** Where an error callback can still go when the rest of the env is unusable. */
export interface CallbackTarget {
  url: string;
  token: string;
  batchId: string;
  taskId: string;
}

export type EnvResult =
  | { ok: true; env: WorkerEnv }
  | { ok: false; problems: string[]; callback?: CallbackTarget };

const SECRET = new Set<string>([...SECRET_ENV_NAMES, "LEASE_TOKEN"]);

function received(name: string, raw: Record<string, string | undefined>): string {
  const value = raw[name];
  if (value === undefined) return "it is not set";
  if (SECRET.has(name)) return "received a value that does not fit (not shown: secret)";
  const shown = value.length > 80 ? `${value.slice(0, 80)}…` : value;
  return `received ${JSON.stringify(shown)}`;
}

/** The env without unset variables: an empty one means "unset" (templates render optional ones as ""). */
export function setVariables(source: NodeJS.ProcessEnv): Record<string, string> {
  const raw: Record<string, string> = {};
  for (const [k, v] of Object.entries(source)) if (v !== undefined && v !== "") raw[k] = v;
  return raw;
}

function problemsOf(issues: z.ZodError["issues"], raw: Record<string, string | undefined>): string[] {
  return issues.map((issue) => {
    const name = String(issue.path[0] ?? "(env)");
    return raw[name] === undefined ? `${name} is required but ${received(name, raw)}` : `${name}: ${issue.message}; ${received(name, raw)}`;
  });
}

export function parseEnv(source: NodeJS.ProcessEnv): EnvResult {
  const raw = setVariables(source);
  const machine = MachineEnv.safeParse(raw);
  const tuning = WorkerTuning.safeParse(raw);
  const access = storageAccessProblems(raw);
  const jpeg = JpegSettings.safeParse(raw);
  const pdf = PdfSettings.safeParse(raw);
  if (machine.success && tuning.success && jpeg.success && pdf.success && access.length === 0) {
    return { ok: true, env: { ...machine.data, ...tuning.data, ...jpeg.data, ...pdf.data, memory: machineMemory(machine.data.MEMORY_MB) } };
  }
  const issues = [...(machine.error?.issues ?? []), ...(tuning.error?.issues ?? []), ...(jpeg.error?.issues ?? []), ...(pdf.error?.issues ?? [])];
  const problems = [...problemsOf(issues, raw), ...access];
  return { ok: false, problems, callback: callbackTarget(raw) };
}

/**
 * Storage access is one of: presigned URLs (INPUT_URL + OUTPUT_URL, the default) or the old
 * contract's R2 key pair. Names what is missing, never a value.
 */
function storageAccessProblems(raw: Record<string, string | undefined>): string[] {
  if (raw.INPUT_URL !== undefined || raw.OUTPUT_URL !== undefined) {
    return ["INPUT_URL", "OUTPUT_URL"].filter((n) => raw[n] === undefined).map((n) => `${n} is required but it is not set (scoped storage access)`);
  }
  const missing = ["R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY", "R2_BUCKET"].filter((n) => raw[n] === undefined);
  if (raw.R2_ACCOUNT_ID === undefined && raw.R2_ENDPOINT === undefined) missing.push("R2_ACCOUNT_ID");
  return missing.map((n) => `${n} is required but it is not set (or give INPUT_URL and OUTPUT_URL for scoped access)`);
}

/** Knobs of pool mode only: how hard a pool machine tries to reach its lease endpoint. */
export const PoolTuning = z.object({
  /** Network errors and 5xx on lease are retried for this long, then the machine exits (69). */
  LEASE_RETRY_WINDOW_MS: envInt(0, 3_600_000).default(60_000),
  /** First lease retry delay; doubles per attempt with jitter, capped at 5 s. */
  LEASE_BACKOFF_MS: envInt(1, 60_000).default(500),
  LEASE_REQUEST_TIMEOUT_MS: envInt(100, 600_000).default(15_000),
});

/** What a pool machine knows before its first lease: who it is, where to lease, R2 access. */
const PoolMachine = MachineEnv.pick({ R2_ACCOUNT_ID: true, R2_ACCESS_KEY_ID: true, R2_SECRET_ACCESS_KEY: true, R2_BUCKET: true, R2_ENDPOINT: true, MEMORY_MB: true, FLY_MACHINE_ID: true });

export type PoolMachineEnv = PoolEnv & z.infer<typeof PoolTuning> & z.infer<typeof PoolMachine>;

export type PoolEnvResult = { ok: true; env: PoolMachineEnv } | { ok: false; problems: string[] };

/** The pool machine's own env; each leased task's env is checked with parseEnv when it comes. */
export function parsePoolEnv(source: NodeJS.ProcessEnv): PoolEnvResult {
  const raw = setVariables(source);
  const parts = [PoolEnv.safeParse(raw), PoolTuning.safeParse(raw), PoolMachine.safeParse(raw), WorkerTuning.safeParse(raw)] as const;
  const [pool, tuning, machine] = parts;
  if (pool.success && tuning.success && machine.success && parts[3].success) {
    return { ok: true, env: { ...pool.data, ...tuning.data, ...machine.data } };
  }
  return { ok: false, problems: problemsOf(parts.flatMap((p) => p.error?.issues ?? []), raw) };
}

/** The error callback is possible when its URL, token and the task's identity are usable. */
function callbackTarget(raw: Record<string, string | undefined>): CallbackTarget | undefined {
  const url = MachineEnv.shape.CALLBACK_URL.safeParse(raw.CALLBACK_URL);
  const token = raw.CALLBACK_TOKEN;
  if (!url.success || !token) return undefined;
  // The orchestrator's URL is /callback/:batchId/:taskId: fall back to it for the identity.
  const segments = new URL(url.data).pathname.split("/").filter(Boolean).map(decodeURIComponent);
  const batchId = BatchId.safeParse(raw.BATCH_ID).data ?? BatchId.safeParse(segments.at(-2)).data;
  const taskId = TaskId.safeParse(raw.TASK_ID).data ?? TaskId.safeParse(segments.at(-1)).data;
  if (!batchId || !taskId) return undefined;
  return { url: url.data, token, batchId, taskId };
}

/** MEMORY_MB when set, else the cgroup limit (containers), else the VM's memory (Fly). */
export function machineMemory(memoryMb: number | undefined): MemoryBudget {
  if (memoryMb !== undefined) return { mb: memoryMb, source: "MEMORY_MB" };
  const os = Math.floor(totalmem() / 1024 / 1024);
  for (const file of ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]) {
    try {
      const text = readFileSync(file, "utf8").trim();
      if (/^[0-9]+$/.test(text)) {
        const mb = Math.floor(Number(text) / 1024 / 1024);
        if (mb > 0 && mb < os) return { mb, source: "cgroup" };
      }
    } catch {
      // no cgroup memory controller visible: fall through to the VM's memory
    }
  }
  return { mb: os, source: "os.totalmem" };
}

/** The env as it may be logged: secrets replaced by whether they are set. */
export function describeEnv(env: WorkerEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(env)) out[k] = SECRET.has(k) ? (v ? "[set]" : "[unset]") : v;
  return out;
}
